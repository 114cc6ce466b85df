/**
 * `npm run bench -- reboot-stress [N]`: one guest under `--on-reboot restart` (2 vCPUs)
 * rebooted N times from its shell: how many reboots came back to the ready marker, how
 * many hung (no marker within 60 s), and the median reboot-to-marker time. The reboot
 * path is where TCG guests hung on these machines (microvm's ACPI reset was not always
 * honoured; guests now reboot by triple fault, reboot=t).
 */
import { TestVm } from "../tests/harness/test-vm.js";
import { median } from "./lib-boot.js";

export async function main(args: string[]): Promise<void> {
  const reboots = Number(args[0] ?? "20");
  const vm = await TestVm.start({ cpus: 2, extraArgs: ["--on-reboot", "restart", "--events", "stderr"] });
  const times: number[] = [];
  let hangs = 0;
  try {
    for (let reboot = 0; reboot < reboots; reboot++) {
      const start = performance.now();
      vm.send("reboot\n");
      try {
        await vm.waitReady(60_000);
        times.push(performance.now() - start);
      } catch {
        hangs++;
        process.stderr.write(`reboot ${reboot + 1} hung; the console's last lines:\n${vm.output.slice(-1500)}\n--- palisade stderr:\n${vm.stderr.slice(-1500)}\n`);
        break; // a hung guest does not come back for the next round
      }
      if ((reboot + 1) % 5 === 0) process.stderr.write(`${reboot + 1}/${reboots} reboots, ${hangs} hangs\n`);
    }
  } finally {
    await vm.dispose();
  }
  console.log(
    `reboot-stress: ${times.length + hangs} reboots (2 vCPUs), ${hangs} hangs, median reboot-to-marker ${median(times).toFixed(0)} ms`,
  );
}
