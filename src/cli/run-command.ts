/**
 * `palisade run`: boots one VM in the foreground with its serial console on the terminal
 * (or on a socket), and ends with an exit code that says how the guest ended.
 */
import { randomUUID } from "node:crypto";
import { appendFileSync, readFileSync, writeSync } from "node:fs";
import type { Command } from "commander";
import { ConfigError, errorMessage } from "../util/errors.js";
import { PRESET_NAMES, resolvePolicy, type PartitionPolicy } from "../policy/index.js";
import {
  defaultRunRoot,
  describeOutcome,
  parseVmSpec,
  planVm,
  probeHost,
  startVm,
  type Outcome,
  type VmSpec,
  type VmSpecInput,
  type Worker,
  type WorkerEvent,
} from "../engine/index.js";
import type { VirtualSwitches } from "../network/index.js";
import { describeSandbox, formatSandboxDescription } from "../sandbox/index.js";
import { EXIT, EXIT_CODES_HELP } from "./exit-codes.js";
import {
  parseConsoleFlag,
  parseCpusFlag,
  parseDiskFlag,
  parseEventsFlag,
  parseMemoryFlag,
  parseNetFlag,
  parseSecondsFlag,
  type EventsFlag,
} from "./run-flags.js";

/** Ctrl-]: leaves the console and stops the VM, as telnet and virsh console do. */
export const ESCAPE_BYTE = 0x1d;

export interface RunFlags {
  kernel?: string;
  initrd?: string;
  append?: string;
  memory: string;
  cpus: string;
  disk: string[];
  net: string[];
  accel: string;
  machine: string;
  onReboot: string;
  onPanic: string;
  console: string;
  events?: string;
  name?: string;
  readyMarker?: string;
  bootTimeout: string;
  printCmdline?: boolean;
  printPolicy?: boolean;
  policy: string;
  runDir?: string;
  networkDir?: string;
  netns?: string;
  sandbox: boolean;
  printSandbox?: boolean;
}

/** `--policy NAME|FILE.json`: a preset name, or a JSON file (a preset plus overrides). */
export function policyFromFlag(text: string): PartitionPolicy {
  if ((PRESET_NAMES as readonly string[]).includes(text)) return resolvePolicy(text);
  if (!text.includes("/") && !text.endsWith(".json")) {
    throw new ConfigError(`--policy: "${text}" is neither a preset (${PRESET_NAMES.join(", ")}) nor a JSON file path`, "config.bad-flag");
  }
  let document: unknown;
  try {
    document = JSON.parse(readFileSync(text, "utf8"));
  } catch (error: unknown) {
    throw new ConfigError(`--policy: cannot read ${text} as JSON: ${errorMessage(error)}`, "config.bad-flag", { cause: error });
  }
  return resolvePolicy(document);
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function oneOf<T extends string>(value: string, allowed: readonly T[], flag: string): T {
  if (!allowed.includes(value as T)) throw new ConfigError(`${flag}: "${value}" is not one of ${allowed.join(", ")}`, "config.bad-flag");
  return value as T;
}

/** Flags → a validated spec; every field error names its flag. */
export function specFromFlags(flags: RunFlags): VmSpec {
  if (flags.kernel === undefined) throw new ConfigError("--kernel is required (a bzImage; `palisade start` boots the default guest)", "config.bad-flag");
  const input: VmSpecInput = {
    name: flags.name ?? `run-${process.pid}`,
    uuid: randomUUID(),
    kernel: flags.kernel,
    ...(flags.initrd === undefined ? {} : { initrd: flags.initrd }),
    append: flags.append ?? "",
    memoryMiB: parseMemoryFlag(flags.memory),
    vcpus: parseCpusFlag(flags.cpus),
    disks: flags.disk.map(parseDiskFlag),
    nics: flags.net.map(parseNetFlag),
    accel: oneOf(flags.accel, ["auto", "kvm", "tcg"] as const, "--accel"),
    machine: oneOf(flags.machine, ["microvm", "q35"] as const, "--machine"),
    console: parseConsoleFlag(flags.console),
    onReboot: oneOf(flags.onReboot, ["restart", "exit"] as const, "--on-reboot"),
    onPanic: oneOf(flags.onPanic, ["exit", "restart"] as const, "--on-panic"),
    ...(flags.readyMarker === undefined ? {} : { readyMarker: flags.readyMarker }),
    bootTimeoutMs: parseSecondsFlag(flags.bootTimeout, "--boot-timeout"),
    policy: policyFromFlag(flags.policy),
  };
  try {
    return parseVmSpec(input);
  } catch (error: unknown) {
    if (error instanceof ConfigError) throw new ConfigError(error.message.replace(/^VM spec: /, "Invalid flags: "), error.code);
    throw error;
  }
}

/** The CLI exit code for how a VM ended (documented in EXIT_CODES_HELP). */
export function exitCodeForOutcome(outcome: Outcome): number {
  switch (outcome.kind) {
    case "poweroff":
      return EXIT.ok;
    case "guest-panic":
      return EXIT.guestPanic;
    case "guest-reset":
    case "reset-loop":
      return EXIT.guestReset;
    case "hang":
      return EXIT.guestHang;
    case "internal-error":
    case "worker-exit":
      return EXIT.workerCrash;
    case "stopped":
      return outcome.how === "detached" ? EXIT.detached : outcome.how === "graceful" ? EXIT.ok : EXIT.workerCrash;
  }
}

function eventWriter(flag: EventsFlag | null): (event: WorkerEvent) => void {
  if (flag === null) return () => undefined;
  return (event) => {
    const line = JSON.stringify({ time: new Date(event.timeMs).toISOString(), vm: event.vm, event: event.event, detail: event.detail }) + "\n";
    if (flag.kind === "stderr") process.stderr.write(line);
    else appendFileSync(flag.path, line);
  };
}

/** Relays the console to the terminal until the VM ends; Ctrl-] stops it. */
function relayConsole(worker: Worker): () => void {
  const stdin = process.stdin;
  const raw = stdin.isTTY;
  worker.on("console", (chunk) => {
    process.stdout.write(chunk);
  });
  if (raw) stdin.setRawMode(true);
  const onInput = (chunk: Buffer): void => {
    if (raw && chunk.includes(ESCAPE_BYTE)) {
      void worker.stop(5000, "detached");
      return;
    }
    worker.writeConsole(chunk);
  };
  stdin.on("data", onInput);
  stdin.resume();
  return () => {
    stdin.off("data", onInput);
    if (raw) stdin.setRawMode(false);
    stdin.pause();
  };
}

/**
 * Writes a status line to fd 2 directly. `process.stderr` is a stream whose creation loads
 * Node's net and stream modules (~6 ms); the lines before QEMU starts are on the boot's
 * critical path, so they skip it. Falls back to the stream when the descriptor would block
 * (a pipe that Node has already made non-blocking).
 */
function sayOnStderr(text: string): void {
  try {
    writeSync(2, text);
  } catch {
    process.stderr.write(text);
  }
}

/**
 * Runs a VM to its end in the foreground; returns the exit code.
 * @throws {ConfigError|HostError|WorkerStartError} before the guest starts.
 */
export async function runInForeground(
  spec: VmSpec,
  options: {
    events: EventsFlag | null;
    runRoot: string;
    quiet?: boolean;
    switches?: VirtualSwitches;
    noSandbox?: boolean;
    printSandbox?: boolean;
  },
): Promise<number> {
  const host = probeHost();
  const say = (line: string): void => {
    if (options.quiet !== true) sayOnStderr(`palisade: ${line}\n`);
  };
  const worker = await startVm(spec, host, {
    runRoot: options.runRoot,
    detached: false,
    ...(options.switches === undefined ? {} : { switches: options.switches }),
    noSandbox: options.noSandbox === true,
    onAccel: (choice) => {
      say(choice.reason);
    },
    onSandbox: say,
  });
  if (options.printSandbox === true) {
    const pid = worker.record.qemuPid ?? worker.record.pid;
    process.stderr.write(formatSandboxDescription(describeSandbox(pid)) + "\n");
  }
  const writeEvent = eventWriter(options.events);
  worker.on("event", writeEvent);
  writeEvent({ timeMs: worker.record.startedAtMs, vm: worker.name, event: "started", detail: `pid ${worker.record.pid}` });
  let stopRelay = (): void => undefined;
  if (spec.console.kind === "socket") {
    say(`console on ${spec.console.path} (connect with: socat -,raw,echo=0 UNIX-CONNECT:${spec.console.path})`);
    worker.armBootWatchdogOnQmpOnly();
  } else {
    await worker.holdConsole();
    if (spec.console.kind === "stdio") {
      if (process.stdin.isTTY) say("console attached; press Ctrl-] to stop the VM and leave");
      stopRelay = relayConsole(worker);
    }
  }
  const onSignal = (): void => {
    void worker.kill();
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, onSignal);
  const outcome = await worker.outcome;
  stopRelay();
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.off(signal, onSignal);
  if (outcome.kind !== "poweroff") say(describeOutcome(outcome));
  return exitCodeForOutcome(outcome);
}

export function registerRunCommands(program: Command): void {
  program
    .command("run")
    .description("Boot an x86-64 Linux kernel in a new VM, console on this terminal; Ctrl-] stops it")
    .option("--kernel <file>", "kernel to boot (bzImage)")
    .option("--initrd <file>", "initial ramdisk")
    .option("--append <cmdline>", "kernel command line (added after Palisade's console= and timing arguments)")
    .option("--memory <size>", "guest RAM, e.g. 512M or 2G (at least 32M)", "512M")
    .option("--cpus <n>", "virtual CPUs", "1")
    .option("--disk <spec>", "path=IMG[,format=raw|qcow2|vpc|vhdx][,readonly] (repeatable; format from the extension by default)", collect, [])
    .option("--net <spec>", "user[,hostfwd=tcp::2222-:22] or switch=NAME[,mac=…][,vlan=N] (repeatable)", collect, [])
    .option("--accel <mode>", "auto (KVM when the host has hardware virtualization, else TCG), kvm or tcg", "auto")
    .option("--machine <type>", "microvm (default, no PCI) or q35", "microvm")
    .option("--on-reboot <action>", "restart or exit (exit code 5) when the guest reboots", "restart")
    .option("--on-panic <action>", "exit (exit code 4) or restart when the guest kernel panics", "exit")
    .option("--console <where>", "stdio, socket:PATH or none", "stdio")
    .option("--events <where>", "write lifecycle events as JSON lines: json:PATH or stderr")
    .option("--name <name>", "VM name (default run-<pid>)")
    .option("--ready-marker <text>", "console line that means the guest is up; the boot watchdog waits for it")
    .option("--boot-timeout <seconds>", "kill the VM when the guest shows no ready marker (or no console output) by then", "60")
    .option("--policy <name|file>", `partition policy: a preset (${PRESET_NAMES.join(", ")}) or a JSON file (a "preset" plus overrides)`, "default")
    .option("--print-cmdline", "print the QEMU command line Palisade would run, and exit")
    .option("--print-policy", "print the effective partition policy (JSON) and what it compiles to, and exit")
    .option("--print-sandbox", "once the worker runs, print its effective sandbox (uid, capabilities, namespaces, seccomp, limits)")
    .option("--no-sandbox", "run the worker without its jail (comparisons only; the policy's sandbox.enabled is the real switch)")
    .option("--run-dir <dir>", "root of per-VM run directories (default /run/palisade/vms as root)")
    .option("--network-dir <dir>", "virtual switches' state directory, as for `palisade switch` (env PALISADE_NETWORK_DIR)")
    .option("--netns <name>", "the network namespace the switches live in, as for `palisade switch` (tests, labs)")
    .addHelpText("after", `\n${EXIT_CODES_HELP}`)
    .action(async (flags: RunFlags) => {
      const spec = specFromFlags(flags);
      const events = flags.events === undefined ? null : parseEventsFlag(flags.events);
      const runRoot = flags.runDir ?? defaultRunRoot();
      if (flags.printPolicy === true) {
        const plan = planVm(spec, probeHost(), runRoot);
        const compiled = { cpuArg: plan.policy.cpuArg, devices: [...plan.policy.allowedDevices], accel: plan.accel.accel };
        process.stdout.write(JSON.stringify({ policy: spec.policy, compiled }, null, 2) + "\n");
        return;
      }
      if (flags.printCmdline === true) {
        const plan = planVm(spec, probeHost(), runRoot);
        process.stdout.write([plan.qemuBinary, ...plan.argv].map(shellQuote).join(" ") + "\n");
        return;
      }
      const switches = spec.nics.some((nic) => nic.kind === "switch")
        ? (await import("./network-options.js")).switchesFor({ stateDir: flags.networkDir, netns: flags.netns })
        : undefined;
      process.exitCode = await runInForeground(spec, {
        events,
        runRoot,
        noSandbox: !flags.sandbox,
        printSandbox: flags.printSandbox === true,
        ...(switches === undefined ? {} : { switches }),
      });
    });
}

/** Quotes an argument for a POSIX shell when it needs it. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_./:=,@%+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}
