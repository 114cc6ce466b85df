/**
 * `palisade`: the command line. Each command group lives in its own `*-command.ts`
 * exporting `register…Commands(program)`; this file wires them and turns errors into
 * one-line messages and documented exit codes. The program users run is `launcher.ts`,
 * which loads this file's bundle and calls {@link runCli}.
 */
import { Command, CommanderError } from "commander";
import { config as zodConfig } from "zod";
import { PalisadeError, ConfigError, HostError, errorMessage } from "../util/errors.js";
import { EXIT, EXIT_CODES_HELP } from "./exit-codes.js";
import { VERSION } from "../util/version.js";

type Register = (program: Command) => void;

/**
 * Command groups by the top-level words they own. Only the group a command line names is
 * loaded (the service and disk groups pull in fastify, SQLite and the VHDX code, which
 * `palisade run` does not need); `--help` loads them all.
 */
const GROUPS: readonly { readonly words: readonly string[]; readonly load: () => Promise<Register> }[] = [
  { words: ["run"], load: async () => (await import("./run-command.js")).registerRunCommands },
  { words: ["start"], load: async () => (await import("./start-command.js")).registerStartCommands },
  { words: ["image"], load: async () => (await import("./image-command.js")).registerImageCommands },
  { words: ["disk"], load: async () => (await import("./disk-command.js")).registerDiskCommands },
  { words: ["switch"], load: async () => (await import("./switch-command.js")).registerSwitchCommands },
  { words: ["service", "vm"], load: async () => (await import("./service-command.js")).registerServiceCommands },
  { words: ["authz"], load: async () => (await import("./authz-command.js")).registerAuthzCommands },
  { words: ["audit"], load: async () => (await import("./audit-command.js")).registerAuditCommands },
];

/** An error that carries the exit code the CLI should end with. */
export class ExitError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

function exitCodeFor(error: unknown): number {
  if (error instanceof ExitError) return error.exitCode;
  if (error instanceof ConfigError) return EXIT.config;
  if (error instanceof HostError) return EXIT.host;
  // Policy and config errors are the user's input, whatever layer found them; so is a
  // disk file whose structures are wrong, or a disk operation the file does not allow.
  if (error instanceof PalisadeError && /^(config|policy|vhd|vhdx)\./.test(error.code)) return EXIT.config;
  if (error instanceof PalisadeError && error.code.startsWith("disk.") && error.code !== "disk.io") return EXIT.config;
  if (error instanceof PalisadeError) return EXIT.failure;
  return EXIT.failure;
}

export async function buildProgram(argv: readonly string[]): Promise<Command> {
  const program = new Command("palisade")
    .description("Hyper-V's security architecture on Linux: sandboxed QEMU workers, partition policy, VHD/VHDX, virtual switches")
    .version(VERSION)
    .showHelpAfterError("(add --help for usage)")
    .addHelpText("after", `\n${EXIT_CODES_HELP}`)
    .exitOverride();
  const word = commandWord(argv);
  const named = GROUPS.filter((group) => word !== undefined && group.words.includes(word));
  for (const group of named.length > 0 ? named : GROUPS) (await group.load())(program);
  return program;
}

/** The first word after `palisade` that is not a flag: the command group. */
function commandWord(argv: readonly string[]): string | undefined {
  return argv.slice(2).find((arg) => !arg.startsWith("-"));
}

/** Runs one command line (`process.argv` shape); resolves to the exit code, never rejects. */
export async function runCli(argv: string[]): Promise<number> {
  // zod compiles an object schema into a function (`new Function`) the first time it parses:
  // worth it in the long-lived service, which parses every request, but ~5 ms more than
  // interpreting in a command that parses a few values once (`palisade run` before QEMU starts).
  if (commandWord(argv) !== "service") zodConfig({ jitless: true });
  try {
    const program = await buildProgram(argv);
    await program.parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : EXIT.ok;
  } catch (error: unknown) {
    if (error instanceof CommanderError) {
      // Commander already printed the message (or the help); map its codes to ours.
      return error.exitCode === 0 ? EXIT.ok : EXIT.config;
    }
    const code = error instanceof PalisadeError ? ` [${error.code}]` : "";
    process.stderr.write(`palisade: ${errorMessage(error)}${code}\n`);
    if (!(error instanceof PalisadeError) && !(error instanceof ExitError) && process.env.PALISADE_DEBUG) {
      console.error(error);
    }
    return exitCodeFor(error);
  }
}
