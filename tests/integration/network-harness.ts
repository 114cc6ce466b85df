/**
 * Shared setup of the network integration tests: commands with timeouts, network
 * namespaces the test creates (and deletes), a "host" namespace holding the switches, and
 * stand-in VMs (namespaces on veth ports). Nothing here touches the machine's own
 * interfaces. Not a test file itself (its name matches no test pattern).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VirtualSwitches } from "../../src/network/index.js";

/** A finished command. */
export interface Outcome {
  readonly ok: boolean;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command (in a namespace if given); never throws; every call has a timeout. */
export async function run(netns: string | undefined, argv: readonly string[], timeoutMs = 10_000): Promise<Outcome> {
  const full = netns === undefined ? [...argv] : ["ip", "netns", "exec", netns, ...argv];
  return new Promise((resolve) => {
    execFile(full[0] ?? "false", full.slice(1), { timeout: timeoutMs, encoding: "utf8" }, (error, stdout, stderr) => {
      resolve({ ok: error === null, stdout, stderr });
    });
  });
}

/** Runs a command that must succeed (an assertion failure otherwise) and returns its stdout. */
export async function must(netns: string | undefined, argv: readonly string[], timeoutMs?: number): Promise<string> {
  const outcome = await run(netns, argv, timeoutMs);
  assert.ok(outcome.ok, `${argv.join(" ")} failed: ${outcome.stderr}`);
  return outcome.stdout;
}

/** Whether one ICMP echo from `netns` to `address` is answered within a second. */
export async function ping(netns: string, address: string): Promise<boolean> {
  return (await run(netns, ["busybox", "ping", "-c", "1", "-W", "1", address])).ok;
}

/** Whether a TCP connection from `netns` to `address:port` opens within 2 s. */
export async function connects(netns: string, address: string, port: number): Promise<boolean> {
  return (await run(netns, ["busybox", "nc", "-w", "2", address, String(port)], 5000)).ok;
}

/**
 * One test file's network lab: a host namespace with a {@link VirtualSwitches} in it, a
 * state directory, and every namespace created through it, all removed by {@link close}.
 */
export class NetworkLab {
  /** Prefix of every namespace of this lab (unique per process). */
  readonly tag: string;
  /** The namespace holding the switches. */
  readonly host: string;
  readonly stateDir: string;
  readonly switches: VirtualSwitches;
  readonly #created: string[];

  private constructor(tag: string, stateDir: string, created: string[]) {
    this.tag = tag;
    this.host = `${tag}h`;
    this.stateDir = stateDir;
    this.#created = created;
    this.switches = new VirtualSwitches({ stateDir, netns: this.host });
  }

  /** Creates the host namespace and the state directory; `prefix`: two letters naming the test file. */
  static async open(prefix: string): Promise<NetworkLab> {
    const lab = new NetworkLab(`${prefix}${process.pid % 100000}`, mkdtempSync(join(tmpdir(), `palisade-${prefix}-`)), []);
    await lab.namespace("h");
    return lab;
  }

  /** A new namespace `<tag><suffix>` with its loopback up, deleted by {@link close}. */
  async namespace(suffix: string): Promise<string> {
    const name = `${this.tag}${suffix}`;
    await must(undefined, ["ip", "netns", "add", name]);
    this.#created.push(name);
    await must(name, ["ip", "link", "set", "lo", "up"]);
    return name;
  }

  /** A stand-in VM: a namespace (named after the VM) with a veth port on the switch and an address. */
  async vmNamespace(switchName: string, vmName: string, address: string, mac: string): Promise<string> {
    const ns = await this.namespace(vmName);
    await this.switches.attachVethPort({ switchName, vmName, nic: "net0", peerNetns: ns, mac });
    await must(ns, ["ip", "addr", "add", address, "dev", "eth0"]);
    return ns;
  }

  /** Deletes every switch, then every namespace, then the state directory. */
  async close(): Promise<void> {
    for (const sw of this.switches.list()) await this.switches.delete(sw.name).catch(() => undefined);
    for (const ns of this.#created.reverse()) await run(undefined, ["ip", "netns", "del", ns]);
    rmSync(this.stateDir, { recursive: true, force: true });
  }
}
