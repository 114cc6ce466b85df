/**
 * `palisade service run` (the management service in the foreground) and `palisade vm …`
 * (VM definitions and lifecycle through the service).
 */
import type { Command } from "commander";
import { ConfigError } from "../util/errors.js";
import { parseByteSize } from "../util/byte-size.js";
import { DEFAULT_SOCKET_PATH, defaultDataDir, parseListenAddress, startService } from "../service/index.js";
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
    trustLevel?: string;
  };
}

interface ConnectFlags {
  connect?: string;
  json?: boolean;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `--disk PATH[,format=F][,readonly]` as the API's disk object. */
export function parseDiskFlag(value: string): { path: string; format?: string; readonly?: boolean } {
  const [first = "", ...rest] = value.split(",");
  const path = first.startsWith("path=") ? first.slice(5) : first;
  if (path === "") throw new ConfigError(`--disk ${value}: no path`, "config.disk");
  const disk: { path: string; format?: string; readonly?: boolean } = { path };
  for (const part of rest) {
    if (part === "readonly" || part === "readonly=on") disk.readonly = true;
    else if (part.startsWith("format=")) disk.format = part.slice(7);
    else throw new ConfigError(`--disk ${value}: unknown option ${part}`, "config.disk");
  }
  return disk;
}

function memoryMiB(text: string): number {
  const bytes = parseByteSize(text, "--memory");
  if (bytes % (1024n * 1024n) !== 0n)
    throw new ConfigError(`--memory ${text} is not a whole number of MiB`, "config.memory");
  return Number(bytes / (1024n * 1024n));
}

function positiveInt(text: string, flag: string): number {
  if (!/^\d{1,6}$/.test(text))
    throw new ConfigError(`${flag} ${text} is not a positive integer`, "config.invalid");
  return Number(text);
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
    ["autostart", s.autostart ? "yes" : "no"],
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
      "unix:PATH, or tcp://HOST:PORT (not yet supported)",
      `unix:${DEFAULT_SOCKET_PATH}`,
    )
    .action(async (flags: { dataDir?: string; listen: string }) => {
      const listen = parseListenAddress(flags.listen);
      const dataDir = flags.dataDir ?? defaultDataDir();
      const running = await startService({ dataDir, listen });
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
    .requiredOption("--kernel <file>", "kernel to boot (absolute path on the service's host)")
    .option("--initrd <file>", "initial ramdisk")
    .option("--append <cmdline>", "kernel command line")
    .option("--memory <size>", "guest RAM, e.g. 512M", "512M")
    .option("--cpus <n>", "virtual CPUs", "1")
    .option("--disk <spec>", "PATH[,format=raw|qcow2|vpc|vhdx][,readonly] (repeatable)", collect, [])
    .option("--scope <scope>", "authorization scope the VM belongs to")
    .option("--trust-level <level>", "trust level, for placement")
    .option("--autostart", "start the VM when the service starts")
    .option("--connect <address>", CONNECT_HELP)
    .option("--json", "print the result as JSON")
    .action(
      async (
        name: string,
        flags: ConnectFlags & {
          kernel: string;
          initrd?: string;
          append?: string;
          memory: string;
          cpus: string;
          disk: string[];
          scope?: string;
          trustLevel?: string;
          autostart?: boolean;
        },
      ) => {
        const body = {
          name,
          kernel: flags.kernel,
          memoryMiB: memoryMiB(flags.memory),
          vcpus: positiveInt(flags.cpus, "--cpus"),
          disks: flags.disk.map(parseDiskFlag),
          ...(flags.initrd === undefined ? {} : { initrd: flags.initrd }),
          ...(flags.append === undefined ? {} : { append: flags.append }),
          ...(flags.scope === undefined ? {} : { scope: flags.scope }),
          ...(flags.trustLevel === undefined ? {} : { trustLevel: flags.trustLevel }),
          ...(flags.autostart === true ? { autostart: true } : {}),
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
