/**
 * `npm run bench -- switch-guests [--seconds N] [--rounds N] [--rules 0,100,10000] [--no-flow-log]`:
 * VM-to-VM TCP throughput (iperf3) and ping latency between two real Palisade guests
 * (`palisade run --net switch=…`, iperf3 added to the guest image with `--add-binary`),
 * through a Palisade switch and through a plain Linux bridge, in a network namespace the
 * benchmark creates.
 *
 * The peer is the same bridge with the same two TAPs and the same guests, with Palisade's
 * nftables table deleted: what is left is a plain Linux bridge with plain TAPs, so the
 * ratio is exactly the switch's own cost. Palisade and the plain bridge are measured
 * alternately (ABBA), best of N each, so that both see the same load on a shared host. Ping
 * times are averages of 50 (the TCG guest's clock ticks every 4 ms).
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { palisadeCacheDir, READY_MARKER, SHELL_PROMPT } from "../src/image/index.js";
import { VirtualSwitches } from "../src/network/index.js";
import { benchRules } from "./lib-switch.js";
import { CLI } from "../tests/harness/test-vm.js";

const BOOT_TIMEOUT_MS = 120_000;

async function sh(argv: readonly string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0] ?? "false", argv.slice(1), { timeout: timeoutMs, encoding: "utf8", maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      if (error === null) resolve(stdout);
      else reject(new Error(`${argv.join(" ")}: ${stderr || error.message}`));
    });
  });
}

/** A guest booted by `palisade run`, driven through its console like a user types. */
class Guest {
  readonly #child: ChildProcess;
  #output = "";
  #consumed = 0;
  #commands = 0;

  constructor(args: readonly string[]) {
    this.#child = spawn(process.execPath, [CLI, "run", ...args], { stdio: ["pipe", "pipe", "pipe"] });
    this.#child.stdout?.on("data", (chunk: Buffer) => (this.#output += chunk.toString("latin1").replace(/\r/g, "")));
    this.#child.stderr?.on("data", (chunk: Buffer) => (this.#output += chunk.toString()));
  }

  async waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = pattern.exec(this.#output.slice(this.#consumed));
      if (match !== null) {
        this.#consumed += match.index + match[0].length;
        return match;
      }
      if (this.#child.exitCode !== null) throw new Error(`guest exited: ${this.#output.slice(-1500)}`);
      if (Date.now() > deadline) throw new Error(`${String(pattern)} not seen within ${timeoutMs} ms: ${this.#output.slice(-1500)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Types a command; returns what it printed (markers split so the echo never matches). */
  async exec(command: string, timeoutMs = 60_000): Promise<string> {
    const id = ++this.#commands;
    this.#child.stdin?.write(`echo @@B${id}''@@; ${command}; echo @@E${id}''@@\n`);
    await this.waitFor(new RegExp(`@@B${id}@@\n`), timeoutMs);
    const start = this.#consumed;
    const end = await this.waitFor(new RegExp(`@@E${id}@@`), timeoutMs);
    return this.#output.slice(start, this.#consumed - end[0].length);
  }

  kill(): void {
    this.#child.kill("SIGTERM");
  }
}

interface Measure {
  mbitPerS: number;
  rttMs: number;
}

async function measure(client: Guest, seconds: number): Promise<Measure> {
  const iperf = await client.exec(`iperf3 -c 10.98.0.2 -t ${seconds} -f m 2>&1 | grep -E 'receiver|error'`, (seconds + 60) * 1000);
  const rate = /([\d.]+) Mbits\/sec\s+receiver/.exec(iperf)?.[1];
  if (rate === undefined) throw new Error(`iperf3 in the guest: ${iperf.trim()}`);
  // The TCG guest's clock ticks every 4 ms (jiffies): only an average over many pings means anything.
  const ping = await client.exec("ping -c 50 -i 0.05 -W 2 10.98.0.2 | tail -1", 60_000);
  const rtt = /= [\d.]+\/([\d.]+)\//.exec(ping)?.[1];
  return { mbitPerS: Number(rate), rttMs: rtt === undefined ? NaN : Number(rtt) };
}

/** Benchmark entry (bench/run.ts). */
export async function main(args: string[]): Promise<void> {
  const option = (name: string, fallback: string): string => (args.includes(name) ? (args[args.indexOf(name) + 1] ?? fallback) : fallback);
  const seconds = Number(option("--seconds", "5")) || 5;
  const rounds = Number(option("--rounds", "2")) || 2;
  const ruleCounts = option("--rules", "0,100,10000").split(",").map(Number);
  const flowLog = !args.includes("--no-flow-log");

  const imageDir = join(palisadeCacheDir(process.env, homedir()), "images", "bench-iperf3");
  await sh([process.execPath, CLI, "image", "build", "--add-binary", "/usr/bin/iperf3", "--out", imageDir], 600_000);
  const netns = `pg${process.pid % 100000}`;
  const stateDir = mkdtempSync(join(tmpdir(), "palisade-bench-guests-"));
  const runDir = mkdtempSync(join(tmpdir(), "palisade-bench-run-"));
  await sh(["ip", "netns", "add", netns]);
  const switches = new VirtualSwitches({ stateDir, netns });
  const guests: Guest[] = [];
  try {
    await switches.create({ name: "bench", type: "private", flowLog });
    const table = switches.get("bench").table;
    for (const [index, address] of ["10.98.0.1/24", "10.98.0.2/24"].entries()) {
      const guest = new Guest([
        "--name", `bench-${index}`, "--kernel", join(imageDir, "vmlinuz"), "--initrd", join(imageDir, "initrd.img"),
        "--memory", "256M", "--cpus", "1", "--append", "quiet", "--ready-marker", READY_MARKER, "--boot-timeout", String(BOOT_TIMEOUT_MS / 1000),
        "--run-dir", runDir, "--net", "switch=bench", "--netns", netns, "--network-dir", stateDir,
      ]);
      guests.push(guest);
      await guest.waitFor(new RegExp(READY_MARKER), BOOT_TIMEOUT_MS);
      await guest.waitFor(new RegExp(SHELL_PROMPT.replace(/[$#]/g, "\\$&")), BOOT_TIMEOUT_MS);
      await guest.exec(`ip addr add ${address} dev eth0 && ip link set eth0 up`);
    }
    const [client, server] = guests as [Guest, Guest];
    await server.exec("iperf3 -s -D");
    await client.exec("ping -c 3 -W 5 10.98.0.2 >/dev/null", 60_000); // ARP, and the guests are up

    console.log(`VM-to-VM, two TCG guests (1 vCPU, 256 MiB) on one switch (flow log ${flowLog ? "on" : "off"}), iperf3 TCP ${seconds}s and ping, best of ${rounds}, Palisade and plain interleaved (ABBA):`);
    let loaded = 0;
    for (const count of ruleCounts) {
      if (count !== loaded) {
        if (loaded > 0) await switches.removeAcl("bench", "all");
        if (count > 0) await switches.addAcls("bench", benchRules(count));
        loaded = count;
      }
      let palisade: Measure = { mbitPerS: 0, rttMs: Infinity };
      let plain: Measure = { mbitPerS: 0, rttMs: Infinity };
      const best = (a: Measure, b: Measure): Measure => ({ mbitPerS: Math.max(a.mbitPerS, b.mbitPerS), rttMs: Math.min(a.rttMs, b.rttMs) });
      for (let round = 0; round < rounds; round++) {
        // ABBA: whichever goes second in a round (warmer guests, other jobs) goes first in the next.
        for (const side of round % 2 === 0 ? ["palisade", "plain"] : ["plain", "palisade"]) {
          if (side === "palisade") {
            palisade = best(palisade, await measure(client, seconds));
            continue;
          }
          // The plain bridge: the same bridge and TAPs without Palisade's table; repair puts it back.
          await sh(["ip", "netns", "exec", netns, "nft", "delete", "table", "bridge", table]);
          plain = best(plain, await measure(client, seconds));
          await switches.repair();
        }
      }
      console.log(
        `  ${`${count} rules:`.padEnd(14)}palisade ${palisade.mbitPerS.toFixed(0)} Mbit/s vs plain ${plain.mbitPerS.toFixed(0)} Mbit/s (${(palisade.mbitPerS / plain.mbitPerS).toFixed(2)}x); ping ${palisade.rttMs.toFixed(3)} vs ${plain.rttMs.toFixed(3)} ms`,
      );
    }
  } finally {
    for (const guest of guests) guest.kill();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await switches.delete("bench").catch(() => undefined);
    await sh(["ip", "netns", "del", netns]).catch(() => undefined);
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(runDir, { recursive: true, force: true });
  }
}
