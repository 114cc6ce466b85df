#!/usr/bin/env node
/**
 * `palisade`: the command line. Each command group lives in its own `*-command.ts`
 * exporting `register…Commands(program)`; this file wires them and turns errors into
 * one-line messages and documented exit codes.
 */
import { Command, CommanderError } from "commander";
import { PalisadeError, ConfigError, HostError, errorMessage } from "../util/errors.js";
import { EXIT, EXIT_CODES_HELP } from "./exit-codes.js";
import { VERSION } from "../util/version.js";
import { registerSwitchCommands } from "./switch-command.js";
import { registerRunCommands } from "./run-command.js";
import { registerStartCommands } from "./start-command.js";
import { registerServiceCommands } from "./service-command.js";
import { registerAuthzCommands } from "./authz-command.js";
import { registerAuditCommands } from "./audit-command.js";
import { registerDiskCommands } from "./disk-command.js";
import { registerImageCommands } from "./image-command.js";

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
  // Policy and config errors are the user's input, whatever layer found them.
  if (error instanceof PalisadeError && /^(config|policy)\./.test(error.code)) return EXIT.config;
  if (error instanceof PalisadeError) return EXIT.failure;
  return EXIT.failure;
}

export function buildProgram(): Command {
  const program = new Command("palisade")
    .description("Hyper-V's security architecture on Linux: sandboxed QEMU workers, partition policy, VHD/VHDX, virtual switches")
    .version(VERSION)
    .showHelpAfterError("(add --help for usage)")
    .addHelpText("after", `\n${EXIT_CODES_HELP}`)
    .exitOverride();
  // Command groups register themselves here.
  registerSwitchCommands(program);
  registerRunCommands(program);
  registerStartCommands(program);
  registerServiceCommands(program);
  registerAuthzCommands(program);
  registerAuditCommands(program);
  registerDiskCommands(program);
  registerImageCommands(program);
  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
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

process.exitCode = await main(process.argv);
