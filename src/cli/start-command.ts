/**
 * `palisade start` (what `npm start` runs): builds the default guest image if it is not
 * cached, then boots it with the console on this terminal. `poweroff` in the guest ends it.
 */
import { randomUUID } from "node:crypto";
import type { Command } from "commander";
import { DEFAULT_GUEST_APPEND, ensureDefaultImage } from "../image/index.js";
import { defaultRunRoot, parseVmSpec } from "../engine/index.js";
import { EXIT_CODES_HELP } from "./exit-codes.js";
import { parseCpusFlag, parseMemoryFlag } from "./run-flags.js";
import { runInForeground } from "./run-command.js";

/** The default guest's readiness line (docs/design/guest-image.md). */
const READY_MARKER = "PALISADE-READY";

export function registerStartCommands(program: Command): void {
  program
    .command("start")
    .description("Boot the default guest (built and cached on first use) with its console on this terminal")
    .option("--memory <size>", "guest RAM", "256M")
    .option("--cpus <n>", "virtual CPUs", "1")
    .option("--net", "give the guest user-mode networking (outbound connections through the host)")
    .addHelpText("after", `\n${EXIT_CODES_HELP}`)
    .action(async (flags: { memory: string; cpus: string; net?: boolean }) => {
      const image = await ensureDefaultImage({
        onStatus: (line) => {
          process.stderr.write(`palisade: ${line}\n`);
        },
      });
      const spec = parseVmSpec({
        name: `start-${process.pid}`,
        uuid: randomUUID(),
        kernel: image.kernelPath,
        initrd: image.initrdPath,
        append: DEFAULT_GUEST_APPEND,
        memoryMiB: parseMemoryFlag(flags.memory),
        vcpus: parseCpusFlag(flags.cpus),
        nics: flags.net === true ? [{ kind: "user" }] : [],
        readyMarker: READY_MARKER,
      });
      process.exitCode = await runInForeground(spec, { events: null, runRoot: defaultRunRoot() });
    });
}
