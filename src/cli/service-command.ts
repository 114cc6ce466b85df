/**
 * `palisade service run` (the management service in the foreground) and `palisade vm …`
 * (VM definitions and lifecycle through the service).
 */
import type { Command } from "commander";
import { parseCpusFlag, parseDiskFlag, parseMemoryFlag, parseSecondsFlag, type DiskFlag } from "./run-flags.js";
import { readFileSync } from "node:fs";
import { parseVmSpec } from "../engine/vm-spec.js";
import { ConfigError } from "../util/errors.js";
import {
  DEFAULT_SOCKET_PATH,
  dataDirPaths,
  defaultDataDir,
  parseListenAddress,
  startService,
} from "../service/index.js";
import { CONNECT_HELP, formatTable, printJson, serviceClient } from "./service-client.js";

interface VmView {
  id: string;
  name: string;
  scope: string | null;
  state: string;
  stateReason: string | null;
  generation: number;
  createdAt: string;
  updatedAt: string;
  spec: {
    memoryMiB: number;
    vcpus: number;
    kernel: string;
    initrd?: string;
    append?: string;
    disks: { path: string }[];
    autostart: boolean;
    autostartDelaySeconds?: number;
    restartPolicy?: { mode: string; maxRetries?: number; backoffSeconds?: number };
    trustLevel?: string;
  };
  restarts?: { attempts: number; pending: boolean };
}

interface ConnectFlags {
  connect?: string;
  json?: boolean;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * `--disk [path=]PATH[,format=F][,readonly]` as the API's disk object (the parser of
 * `palisade run`; a bare first path is accepted too).
 */
export function parseServiceDiskFlag(value: string): DiskFlag {
  const first = value.split(",")[0] ?? "";
  return parseDiskFlag(first.includes("=") ? value : `path=${value}`);
}

/**
 * A VM spec file (the engine's format) as a create body: validated by the engine's
 * `parseVmSpec`, its UUID kept as the VM's id; console and name are the service's.
 *
 * @throws {ConfigError} for an unreadable file or a spec the engine refuses
 */
export function specBody(file: string): Record<string, unknown> {
  let input: unknown;
  try {
    input = JSON.parse(readFileSync(file, "utf8"));
  } catch (error: unknown) {
    throw new ConfigError(`--spec ${file}: ${error instanceof Error ? error.message : String(error)}`, "config.bad-spec");
  }
  const body: Record<string, unknown> = { ...parseVmSpec(input) };
  delete body.console;
  delete body.name;
  return body;
}

/**
 * `--restart never|on-failure[:MAX]` (docker's syntax) and `--restart-backoff SECONDS` as
 * the API's restart policy.
 *
 * @throws {ConfigError} `config.bad-flag`
 */
export function parseRestartFlag(
  value: string,
  backoff?: string,
): { mode: "never" | "on-failure"; maxRetries?: number; backoffSeconds?: number } {
  const match = /^(never|on-failure)(?::(\d{1,3}))?$/.exec(value);
  if (match === null || (match[1] === "never" && match[2] !== undefined))
    throw new ConfigError(`--restart ${value}: expected never or on-failure[:MAX]`, "config.bad-flag");
  const mode = match[1] === "never" ? "never" : "on-failure";
  const backoffSeconds = backoff === undefined ? undefined : Number(backoff);
  if (backoffSeconds !== undefined && !(Number.isFinite(backoffSeconds) && backoffSeconds >= 0 && backoffSeconds <= 300))
    throw new ConfigError(`--restart-backoff ${backoff ?? ""}: expected seconds from 0 to 300`, "config.bad-flag");
  return {
    mode,
    ...(match[2] === undefined ? {} : { maxRetries: Number(match[2]) }),
    ...(backoffSeconds === undefined ? {} : { backoffSeconds }),
  };
}

function describeRestart(vm: VmView): string {
  const policy = vm.spec.restartPolicy;
  if (policy === undefined || policy.mode === "never") return "never";
  const series = vm.restarts === undefined || vm.restarts.attempts === 0 ? "" : `; ${vm.restarts.attempts} made`;
  return `on-failure, at most ${policy.maxRetries ?? 3}, backoff ${policy.backoffSeconds ?? 1} s doubling${series}`;
}

function printVm(vm: VmView): void {
  const s = vm.spec;
  const lines = [
    ["name", vm.name],
    ["id", vm.id],
    ["state", vm.state + (vm.stateReason === null ? "" : ` (${vm.stateReason})`)],
    ["scope", vm.scope ?? "-"],
    ["memory", `${s.memoryMiB} MiB`],
    ["vcpus", String(s.vcpus)],
    ["kernel", s.kernel],
    ["initrd", s.initrd ?? "-"],
    ["append", s.append ?? "-"],
    ["disks", s.disks.map((d) => d.path).join(", ") || "-"],
    ["trust level", s.trustLevel ?? "-"],
    ["autostart", s.autostart ? `yes${s.autostartDelaySeconds ? `, after ${s.autostartDelaySeconds} s` : ""}` : "no"],
    ["restart", describeRestart(vm)],
    ["generation", String(vm.generation)],
    ["updated", vm.updatedAt],
  ];
  process.stdout.write(lines.map(([k = "", v = ""]) => `${k.padEnd(12)} ${v}`).join("\n") + "\n");
}

/** Registers `service` and `vm`. */
export function registerServiceCommands(program: Command): void {
  const service = program.command("service").description("The management service (Hyper-V's VMMS)");
  service
    .command("run")
    .description(
      "Run the management service in the foreground (Ctrl-C or SIGTERM stops it; VM workers keep running)",
    )
    .option("--data-dir <dir>", `store, locks and per-VM directories (default ${defaultDataDir()})`)
    .option(
      "--listen <address>",
      "unix:PATH (tcp://HOST:PORT is refused: TLS and tokens are not implemented yet)",
      `unix:${DEFAULT_SOCKET_PATH}`,
    )
    .option("--stop-timeout <seconds>", "graceful stop (ACPI power button) before a forced stop", "30")
    .action(async (flags: { dataDir?: string; listen: string; stopTimeout: string }) => {
      const listen = parseListenAddress(flags.listen);
      const dataDir = flags.dataDir ?? defaultDataDir();
      // The engine behind the lifecycle: detached workers under <data-dir>/vms/<id>/.
      const { EngineRuntime } = await import("../service/engine-runtime.js");
      const runtime = new EngineRuntime({ runRoot: dataDirPaths(dataDir).vmsDir });
      const stopTimeoutMs = parseSecondsFlag(flags.stopTimeout, "--stop-timeout");
      const running = await startService({ dataDir, listen, runtime, stopTimeoutMs });
      process.stderr.write(
        `palisade service listening on unix:${running.socketPath} (data dir ${dataDir}, pid ${process.pid})\n`,
      );
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          for (const signal of ["SIGINT", "SIGTERM"] as const) process.off(signal, stop);
          resolve();
        };
        for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, stop);
      });
      await running.close();
      process.stderr.write("palisade service stopped\n");
    });

  const vm = program
    .command("vm")
    .description("VM definitions and lifecycle, through the management service");
  vm.command("create")
    .description("Store a new VM definition")
    .argument("<name>", "VM name (at most 64 characters, no / or control characters)")
    .option("--kernel <file>", "kernel to boot (absolute path on the service's host)")
    .option("--spec <file>", "register a VM spec (JSON, the engine's format, as `palisade run` takes it) as is; flags override")
    .option("--initrd <file>", "initial ramdisk")
    .option("--append <cmdline>", "kernel command line")
    .option("--memory <size>", "guest RAM, e.g. 512M (default 512M)")
    .option("--cpus <n>", "virtual CPUs (default 1)")
    .option("--disk <spec>", "PATH[,format=raw|qcow2|vpc|vhdx][,readonly] (repeatable)", collect, [])
    .option("--scope <scope>", "authorization scope the VM belongs to")
    .option("--trust-level <level>", "trust level, for placement")
    .option("--autostart", "start the VM when the service starts")
    .option("--autostart-delay <seconds>", "with --autostart: wait this long after the service starts")
    .option("--restart <policy>", "when the worker crashes: never (default) or on-failure[:MAX] (restarts in a row, default 3)")
    .option("--restart-backoff <seconds>", "delay before the first restart, doubled for each next one (default 1)")
    .option("--ready-marker <text>", "the guest's readiness line on its console (the boot watchdog waits for it)")
    .option("--boot-timeout <seconds>", "boot watchdog: no ready marker by then kills the worker")
    .option("--accel <accel>", "auto, kvm or tcg")
    .option("--connect <address>", CONNECT_HELP)
    .option("--json", "print the result as JSON")
    .action(
      async (
        name: string,
        flags: ConnectFlags & {
          kernel?: string;
          spec?: string;
          initrd?: string;
          append?: string;
          memory?: string;
          cpus?: string;
          disk: string[];
          scope?: string;
          trustLevel?: string;
          autostart?: boolean;
          autostartDelay?: string;
          restart?: string;
          restartBackoff?: string;
          readyMarker?: string;
          bootTimeout?: string;
          accel?: string;
        },
      ) => {
        if (flags.restartBackoff !== undefined && flags.restart === undefined)
          throw new ConfigError("vm create: --restart-backoff goes with --restart on-failure", "config.bad-flag");
        const fromSpec = flags.spec === undefined ? {} : specBody(flags.spec);
        const kernel = flags.kernel ?? (fromSpec.kernel as string | undefined);
        if (kernel === undefined) throw new ConfigError("vm create: --kernel or --spec is required", "config.bad-flag");
        const body = {
          ...fromSpec,
          name,
          kernel,
          ...(flags.memory === undefined && flags.spec !== undefined ? {} : { memoryMiB: parseMemoryFlag(flags.memory ?? "512M") }),
          ...(flags.cpus === undefined && flags.spec !== undefined ? {} : { vcpus: parseCpusFlag(flags.cpus ?? "1") }),
          ...(flags.disk.length === 0 && flags.spec !== undefined ? {} : { disks: flags.disk.map(parseServiceDiskFlag) }),
          ...(flags.initrd === undefined ? {} : { initrd: flags.initrd }),
          ...(flags.append === undefined ? {} : { append: flags.append }),
          ...(flags.scope === undefined ? {} : { scope: flags.scope }),
          ...(flags.trustLevel === undefined ? {} : { trustLevel: flags.trustLevel }),
          ...(flags.autostart === true ? { autostart: true } : {}),
          ...(flags.autostartDelay === undefined
            ? {}
            : { autostartDelaySeconds: Math.round(parseSecondsFlag(flags.autostartDelay, "--autostart-delay") / 1000) }),
          ...(flags.restart === undefined ? {} : { restartPolicy: parseRestartFlag(flags.restart, flags.restartBackoff) }),
          ...(flags.readyMarker === undefined ? {} : { readyMarker: flags.readyMarker }),
          ...(flags.bootTimeout === undefined
            ? {}
            : { bootTimeoutMs: parseSecondsFlag(flags.bootTimeout, "--boot-timeout") }),
          ...(flags.accel === undefined ? {} : { accel: flags.accel }),
        };
        const created = await serviceClient(flags.connect).call<VmView>("POST", "/v1/vms", body);
        if (flags.json === true) printJson(created);
        else process.stdout.write(`Created VM ${created.name} (${created.id})\n`);
      },
    );

  vm.command("list")
    .description("The VMs you may view")
    .option("--connect <address>", CONNECT_HELP)
    .option("--json", "print JSON")
    .action(async (flags: ConnectFlags) => {
      const { vms } = await serviceClient(flags.connect).call<{ vms: VmView[] }>("GET", "/v1/vms");
      if (flags.json === true) {
        printJson(vms);
        return;
      }
      const rows = [
        ["NAME", "STATE", "SCOPE", "MEMORY", "CPUS"],
        ...vms.map((v) => [v.name, v.state, v.scope ?? "-", `${v.spec.memoryMiB}M`, String(v.spec.vcpus)]),
      ];
      process.stdout.write(formatTable(rows));
    });

  vm.command("show")
    .description("One VM's definition and state")
    .argument("<name>")
    .option("--connect <address>", CONNECT_HELP)
    .option("--json", "print JSON")
    .action(async (name: string, flags: ConnectFlags) => {
      const found = await serviceClient(flags.connect).call<VmView>(
        "GET",
        `/v1/vms/${encodeURIComponent(name)}`,
      );
      if (flags.json === true) printJson(found);
      else printVm(found);
    });

  vm.command("delete")
    .description("Delete a stopped VM's definition")
    .argument("<name>")
    .option("--connect <address>", CONNECT_HELP)
    .option("--json", "print JSON")
    .action(async (name: string, flags: ConnectFlags) => {
      const result = await serviceClient(flags.connect).call<{ deleted: string; id: string }>(
        "DELETE",
        `/v1/vms/${encodeURIComponent(name)}`,
      );
      if (flags.json === true) printJson(result);
      else process.stdout.write(`Deleted VM ${result.deleted}\n`);
    });

  vm.command("console")
    .description(
      "Attach to the VM's serial console through the service: recent output first, then live (Ctrl-] detaches)",
    )
    .argument("<name>")
    .option("--read-only", "only read the output (needs vm.console-read; input needs vm.console-write)")
    .option("--connect <address>", CONNECT_HELP)
    .action(async (name: string, flags: ConnectFlags & { readOnly?: boolean }) => {
      const input = flags.readOnly !== true;
      const socket = await serviceClient(flags.connect).openConsole(name, input);
      const stdin = process.stdin;
      const raw = input && stdin.isTTY;
      if (raw) stdin.setRawMode(true);
      if (process.stdout.isTTY)
        process.stderr.write(`Attached to VM ${name}${input ? "" : " (read-only)"}; Ctrl-] detaches\r\n`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          if (raw) stdin.setRawMode(false);
          stdin.pause();
          socket.destroy();
          resolve();
        };
        socket.on("data", (chunk: Buffer) => process.stdout.write(chunk));
        socket.on("end", done);
        socket.on("error", done);
        if (input) {
          stdin.on("data", (chunk: Buffer) => {
            if (raw && chunk.includes(0x1d)) {
              done();
              return;
            }
            socket.write(chunk);
          });
          // Piped input: its end is not a detach; output keeps coming until the VM stops.
          stdin.resume();
        }
      });
    });

  for (const [action, description] of [
    ["start", "Start the VM's worker"],
    ["stop", "Stop the VM (ACPI power button, forced after a timeout)"],
    ["kill", "Kill the VM's worker at once"],
    ["pause", "Pause the VM"],
    ["resume", "Resume a paused VM"],
  ] as const) {
    vm.command(action)
      .description(description)
      .argument("<name>")
      .option("--connect <address>", CONNECT_HELP)
      .option("--json", "print JSON")
      .action(async (name: string, flags: ConnectFlags) => {
        const result = await serviceClient(flags.connect).call<VmView>(
          "POST",
          `/v1/vms/${encodeURIComponent(name)}/${action}`,
        );
        if (flags.json === true) printJson(result);
        else process.stdout.write(`VM ${result.name} is ${result.state}\n`);
      });
  }
}
