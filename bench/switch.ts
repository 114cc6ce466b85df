/**
 * `npm run bench -- switch [--seconds N] [--rounds N] [--rules 0,100,10000]`: a Palisade switch side by
 * side with a plain Linux bridge, in network namespaces the benchmark creates.
 *
 * - time to create a switch and to attach a TAP port (what the engine pays per VM NIC),
 *   with 0 and 10,000 ACL rules, measured in a process that runs inside the switch's
 *   namespace, as on a host; the peer: opening a TAP and enslaving it to a plain bridge;
 * - TCP throughput (iperf3) and ping round-trip time between two namespaces standing in
 *   for VMs, through a plain bridge and through a Palisade switch with 0, 100 and 10,000
 *   ACL rules, with the flow log on and off. VM-to-VM iperf3 in real guests: bench/switch-guests.ts.
 */
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { VirtualSwitches, closeFd, openTap } from "../src/network/index.js";
import { benchRules } from "./lib-switch.js";

const tag = `pb${process.pid % 100000}`;
const HOST = `${tag}h`;
/** Two pairs of stand-in VMs: one pair on a plain bridge, one on the Palisade switch. */
const PLAIN: Pair = { client: `${tag}pa`, server: `${tag}pb` };
const SWITCHED: Pair = { client: `${tag}sa`, server: `${tag}sb` };

interface Pair {
  readonly client: string;
  readonly server: string;
}

async function sh(argv: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0] ?? "false", argv.slice(1), { timeout: timeoutMs, encoding: "utf8", maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      if (error === null) resolve(stdout);
      else reject(new Error(`${argv.join(" ")}: ${stderr || error.message}`));
    });
  });
}

/** A command's stdout whatever its exit status (iperf3 -J reports its errors there). */
async function stdoutOf(argv: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    execFile(argv[0] ?? "false", argv.slice(1), { timeout: timeoutMs, encoding: "utf8", maxBuffer: 64 << 20 }, (_error, stdout) => {
      resolve(stdout);
    });
  });
}

interface IperfReport {
  end?: { sum_received?: { bits_per_second: number } };
  error?: string;
}

function inNs(netns: string, argv: string[]): string[] {
  return ["ip", "netns", "exec", netns, ...argv];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

interface Measure {
  gbitPerS: number;
  rttMs: number;
}

/**
 * Plain bridge and Palisade switch measured alternately, best of `rounds` each: on a
 * shared 2-core host the noise is other people's work, and interleaving exposes both sides
 * to the same load.
 */
async function measurePair(seconds: number, rounds: number): Promise<{ plain: Measure; palisade: Measure }> {
  let plain: Measure = { gbitPerS: 0, rttMs: Infinity };
  let palisade: Measure = { gbitPerS: 0, rttMs: Infinity };
  const best = (a: Measure, b: Measure): Measure => ({ gbitPerS: Math.max(a.gbitPerS, b.gbitPerS), rttMs: Math.min(a.rttMs, b.rttMs) });
  for (let round = 0; round < rounds; round++) {
    plain = best(plain, await measure(PLAIN, seconds));
    palisade = best(palisade, await measure(SWITCHED, seconds));
  }
  return { plain, palisade };
}

async function measure(pair: Pair, seconds: number): Promise<Measure> {
  const [file = "ip", ...args] = inNs(pair.server, ["iperf3", "-s", "-1", "-p", "5201"]);
  const server = spawn(file, args, { stdio: "ignore" });
  try {
    let report: IperfReport = {};
    // The server may take a while to listen on a loaded host: retry the connection.
    for (let attempt = 0; attempt < 20 && report.end?.sum_received === undefined; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const output = await stdoutOf(inNs(pair.client, ["iperf3", "-c", "10.99.0.2", "-p", "5201", "-t", String(seconds), "-J"]), (seconds + 20) * 1000);
      report = JSON.parse(output.trim() === "" ? "{}" : output) as IperfReport;
    }
    const received = report.end?.sum_received;
    if (received === undefined) throw new Error(`iperf3: ${report.error ?? "no result"}`);
    const ping = await sh(inNs(pair.client, ["busybox", "ping", "-c", "20", "-i", "0.05", "10.99.0.2"]));
    const rtt = /= [\d.]+\/([\d.]+)\//.exec(ping)?.[1];
    return { gbitPerS: received.bits_per_second / 1e9, rttMs: Number(rtt) };
  } finally {
    server.kill();
  }
}

/** Runs inside the host namespace: the costs the engine sees. */
async function child(): Promise<void> {
  const stateDir = mkdtempSync(join(tmpdir(), "palisade-bench-"));
  const switches = new VirtualSwitches({ stateDir });
  const createMs: number[] = [];
  const attachMs: number[] = [];
  for (let round = 0; round < 5; round++) {
    let start = performance.now();
    await switches.create({ name: `c${round}`, type: "private" });
    createMs.push(performance.now() - start);
    for (let nic = 0; nic < 4; nic++) {
      start = performance.now();
      const port = await switches.attachPort({ switchName: `c${round}`, vmName: `vm${nic}`, nic: "net0" });
      attachMs.push(performance.now() - start);
      closeFd(port.fd);
    }
    await switches.delete(`c${round}`);
  }
  // The peer: what attaching a NIC to a plain bridge costs (a TAP, enslaved, up).
  await sh(["ip", "link", "add", "plainc", "type", "bridge", "stp_state", "0", "forward_delay", "0"]);
  const plainMs: number[] = [];
  for (let nic = 0; nic < 20; nic++) {
    const start = performance.now();
    const fd = openTap(`plaint${nic}`, { vnetHdr: true });
    await sh(["ip", "link", "set", "dev", `plaint${nic}`, "master", "plainc", "up"]);
    plainMs.push(performance.now() - start);
    closeFd(fd);
  }
  await sh(["ip", "link", "del", "plainc"]);
  await switches.create({ name: "big", type: "private" });
  let start = performance.now();
  await switches.addAcls("big", benchRules(10_000));
  const rules10kMs = performance.now() - start;
  const attach10k: number[] = [];
  for (let nic = 0; nic < 11; nic++) {
    start = performance.now();
    const port = await switches.attachPort({ switchName: "big", vmName: `vm${nic}`, nic: "net0" });
    attach10k.push(performance.now() - start);
    closeFd(port.fd);
  }
  const attach10kMs = median(attach10k);
  await switches.delete("big");
  rmSync(stateDir, { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify({ createMs: median(createMs), attachMs: median(attachMs), attachMaxMs: Math.max(...attachMs), plainMs: median(plainMs), rules10kMs, attach10kMs })}\n`);
}

/** Benchmark entry (bench/run.ts). */
export async function main(args: string[]): Promise<void> {
  const seconds = args.includes("--seconds") ? Number(args[args.indexOf("--seconds") + 1]) || 3 : 3;
  const rounds = args.includes("--rounds") ? Number(args[args.indexOf("--rounds") + 1]) || 2 : 2;
  const ruleCounts = (args.includes("--rules") ? (args[args.indexOf("--rules") + 1] ?? "") : "0,100,10000").split(",").map(Number);
  const stateDir = mkdtempSync(join(tmpdir(), "palisade-bench-"));
  const namespaces = [HOST, PLAIN.client, PLAIN.server, SWITCHED.client, SWITCHED.server];
  for (const ns of namespaces) await sh(["ip", "netns", "add", ns]);
  try {
    const costs = JSON.parse(await sh(inNs(HOST, [process.execPath, fileURLToPath(import.meta.url), "--child"]), 300_000)) as Record<string, number>;
    const fmt = (ms: number | undefined): string => `${(ms ?? NaN).toFixed(1)} ms`;
    console.log(`create a switch: ${fmt(costs.createMs)} (median of 5)`);
    console.log(`attach a TAP port: ${fmt(costs.attachMs)} median, ${fmt(costs.attachMaxMs)} max (20 ports); with 10,000 rules: ${fmt(costs.attach10kMs)} median of 11 (target ≤ 50 ms)`);
    console.log(`  plain bridge peer (open a TAP, enslave it, up): ${fmt(costs.plainMs)} median of 20`);
    console.log(`apply 10,000 ACL rules: ${fmt(costs.rules10kMs)}`);

    // The peer: a plain Linux bridge without nftables, in the same host namespace.
    await sh(inNs(HOST, ["ip", "link", "add", "plainbr", "type", "bridge", "stp_state", "0", "forward_delay", "0"]));
    await sh(inNs(HOST, ["ip", "link", "set", "plainbr", "up"]));
    for (const [ns, address] of [[PLAIN.client, "10.99.0.1/24"], [PLAIN.server, "10.99.0.2/24"]] as const) {
      await sh(inNs(HOST, ["ip", "link", "add", `v${ns}`, "type", "veth", "peer", "name", "eth0", "netns", ns]));
      await sh(inNs(HOST, ["ip", "link", "set", `v${ns}`, "master", "plainbr", "up"]));
      await sh(inNs(ns, ["ip", "addr", "add", address, "dev", "eth0"]));
      await sh(inNs(ns, ["ip", "link", "set", "eth0", "up"]));
    }
    const switches = new VirtualSwitches({ stateDir, netns: HOST });
    console.log(`\nthroughput, iperf3 TCP ${seconds}s, best of ${rounds} runs interleaved with a plain bridge, two namespaces on veth ports (2-core host, shared):`);
    for (const flowLog of [true, false]) {
      await switches.create({ name: "bench", type: "private", flowLog });
      for (const [ns, address, mac] of [[SWITCHED.client, "10.99.0.1/24", "52:54:00:99:00:01"], [SWITCHED.server, "10.99.0.2/24", "52:54:00:99:00:02"]] as const) {
        await switches.attachVethPort({ switchName: "bench", vmName: ns, nic: "net0", peerNetns: ns, mac });
        await sh(inNs(ns, ["ip", "addr", "add", address, "dev", "eth0"]));
      }
      let loaded = 0;
      for (const count of ruleCounts) {
        if (count > loaded) await switches.addAcls("bench", benchRules(count).slice(loaded));
        loaded = Math.max(loaded, count);
        const { plain, palisade } = await measurePair(seconds, rounds);
        const label = `${count} rules, flow log ${flowLog ? "on" : "off"}:`.padEnd(28);
        console.log(
          `  ${label}palisade ${palisade.gbitPerS.toFixed(2)} Gbit/s vs plain ${plain.gbitPerS.toFixed(2)} (${(palisade.gbitPerS / plain.gbitPerS).toFixed(2)}x); ping ${palisade.rttMs.toFixed(3)} vs ${plain.rttMs.toFixed(3)} ms`,
        );
      }
      await switches.delete("bench");
    }
  } finally {
    for (const ns of namespaces) await sh(["ip", "netns", "del", ns]).catch(() => undefined);
    rmSync(stateDir, { recursive: true, force: true });
  }
}

if (process.argv[2] === "--child" && process.argv[1] === fileURLToPath(import.meta.url)) await child();
