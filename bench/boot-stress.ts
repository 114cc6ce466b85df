/**
 * `npm run bench -- boot-stress [N]`: N boots of the default guest through `palisade run`
 * (2 vCPUs, the case the TCG boot hang hit hardest), one after another: hangs and median.
 */
import { defaultImage } from "../tests/harness/test-vm.js";
import { bootOnce, median, palisadeRunArgs } from "./lib-boot.js";

export async function main(args: string[]): Promise<void> {
  const boots = Number(args[0] ?? "100");
  const image = await defaultImage();
  const argv = [...palisadeRunArgs(image.kernelPath, image.initrdPath, "stress", 2)];
  const markers: number[] = [];
  let hangs = 0;
  let failures = 0;
  for (let boot = 0; boot < boots; boot++) {
    const sample = await bootOnce(argv, { timeoutMs: 120_000 });
    if (sample.hang) hangs++;
    else if (sample.exitCode !== 0) failures++;
    if (sample.markerMs !== null) markers.push(sample.markerMs);
    if ((boot + 1) % 10 === 0) process.stderr.write(`${boot + 1}/${boots} boots, ${hangs} hangs\n`);
  }
  console.log(`boot-stress: ${boots} boots (2 vCPUs), ${hangs} hangs, ${failures} other failures, median start-to-marker ${median(markers).toFixed(0)} ms`);
}
