/**
 * `npm run bench -- boot [RUNS]`: start-to-marker and start-to-exit of the same guest
 * (kernel, initramfs, memory, vCPUs, accelerator) booted three ways, interleaved:
 *   palisade   `palisade run` (the CLI process, console relayed by Palisade)
 *   bare       the QEMU command line Palisade generated (`--print-cmdline`), console on stdio
 *   q35        QEMU `-M q35` with its defaults, console on stdio
 * and the private memory of Palisade's own process while the VM runs. The order of the
 * three rotates from run to run.
 *
 * `npm run bench -- boot-stress N` is in boot-stress.ts.
 */
import { spawn } from "node:child_process";
import { defaultImage } from "../tests/harness/test-vm.js";
import { bootOnce, median, palisadeRunArgs, printPairedOverhead, privateMemoryKiB, printRows, type BootSample } from "./lib-boot.js";

export async function main(args: string[]): Promise<void> {
  const runs = Number(args[0] ?? "10");
  const image = await defaultImage();
  const cmdline = await printCmdline(image.kernelPath, image.initrdPath);
  const bare = bareFromPalisade(cmdline);
  const q35 = [
    "/usr/bin/qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "256M", "-smp", "1",
    "-kernel", image.kernelPath, "-initrd", image.initrdPath, "-nographic",
    "-append", "console=ttyS0 panic=-1 quiet",
  ];
  const palisade = [...palisadeRunArgs(image.kernelPath, image.initrdPath, "bench")];
  console.log(`boot benchmark: ${runs} runs each, interleaved; guest 256 MiB, 1 vCPU, TCG unless the host has KVM`);
  // One boot of each, not counted: fills the page cache and Palisade's code cache, as any
  // earlier start on a host would have.
  for (const argv of [palisade, bare, q35]) await bootOnce(argv);
  const samples: Record<string, BootSample[]> = { palisade: [], bare: [], q35: [] };
  const memoryKiB: number[] = [];
  // The order rotates from run to run: on this machine a boot's time depends on what ran
  // just before it (a palisade boot right after another measured up to ~0.2 s slower, a
  // bare one right after palisade faster), so a fixed order would favour one variant.
  const variants: [string, () => Promise<BootSample>][] = [
    ["palisade", () => bootOnce(palisade, { onRunning: (pid) => memoryKiB.push(privateMemoryKiB(pid)) })],
    ["bare", () => bootOnce(bare)],
    ["q35", () => bootOnce(q35)],
  ];
  for (let run = 0; run < runs; run++) {
    for (let step = 0; step < variants.length; step++) {
      const entry = variants[(run + step) % variants.length];
      if (entry !== undefined) samples[entry[0]]?.push(await entry[1]());
    }
    process.stderr.write(`run ${run + 1}/${runs} done\n`);
  }
  printRows(samples, "bare");
  printPairedOverhead(samples.palisade ?? [], samples.bare ?? [], "palisade", "bare");
  console.log(`palisade process private memory while the VM runs: median ${median(memoryKiB)} KiB (guest RAM and QEMU not included)`);
}

async function printCmdline(kernel: string, initrd: string): Promise<string[]> {
  const child = spawn(process.execPath, [...palisadeRunArgs(kernel, initrd, "bench-print"), "--print-cmdline"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
  await new Promise((done) => child.on("exit", done));
  // The printed line is shell-quoted; the harness reads it back with sh.
  const words = spawn("/bin/sh", ["-c", `for a in ${out.trim()}; do printf '%s\\0' "$a"; done`], { stdio: ["ignore", "pipe", "inherit"] });
  let raw = "";
  words.stdout.on("data", (chunk: Buffer) => (raw += chunk.toString()));
  await new Promise((done) => words.on("exit", done));
  return raw.split("\0").filter((word) => word !== "");
}

/** Palisade's own command line with the console on stdio and the run directory's sockets elsewhere. */
function bareFromPalisade(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    const value = argv[i + 1] ?? "";
    if (arg === "-chardev" && value.startsWith("socket,id=console")) {
      out.push("-chardev", "stdio,id=console");
      i++;
    } else if (arg === "-qmp") {
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}
