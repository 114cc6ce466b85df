/**
 * Starting a VM from a spec: preflight, accelerator choice, the command line, the worker.
 * The one place that joins the pure decisions to the edges.
 */
import { HostError } from "../util/errors.js";
// The network layer (nft, koffi TAP calls) is loaded only for a VM with switch NICs: it is
// most of what `palisade run` would otherwise compile before QEMU starts.
import type { VirtualSwitches, AttachedPort } from "../network/index.js";
import { VERSION } from "../util/version.js";
import { PolicyError, assertDeviceAllowed, assertVmFits, compilePolicy, type CompiledPolicy } from "../policy/index.js";
import { chooseAccel, type AccelChoice } from "./accel.js";
import type { HostFacts } from "./host-facts.js";
import { preflight } from "./preflight.js";
import { qemuArgv, type ArgvInputs } from "./qemu-argv.js";
import { workerPaths } from "./run-dir.js";
import type { VmSpec } from "./vm-spec.js";
import { Worker } from "./worker.js";
import { planWorkerJail, sandboxStateDir } from "./worker-jail.js";
import { QEMU_SECCOMP_ARGS } from "../sandbox/index.js";
import { reservePlacement } from "./placement.js";


export interface PlannedVm {
  readonly accel: AccelChoice;
  readonly policy: CompiledPolicy;
  readonly argvInputs: ArgvInputs;
  readonly qemuBinary: string;
  readonly argv: readonly string[];
}

/**
 * Checks the spec's devices and size against its partition policy: nothing the policy
 * does not grant is ever put on the command line.
 * @throws {PolicyError} naming the device or limit.
 */
export function enforcePolicy(spec: VmSpec, compiled: CompiledPolicy): void {
  assertVmFits(compiled, spec);
  if (spec.console.kind !== "none") assertDeviceAllowed(compiled, "console", `the serial console (--console ${spec.console.kind})`);
  spec.disks.forEach((disk, index) => {
    assertDeviceAllowed(compiled, "disk", `disk ${index} (${disk.path})`);
  });
  spec.nics.forEach((nic, index) => {
    assertDeviceAllowed(compiled, "nic", `NIC ${index} (${nic.kind})`);
    if (nic.kind === "user" && !compiled.userNetAllowed) {
      throw new PolicyError(
        `Partition policy does not allow user-mode networking (network.userNet), needed by NIC ${index}; use --net switch=NAME`,
        "network.userNet",
      );
    }
  });
}

/**
 * Decides everything about a VM's worker without starting it (for `--print-cmdline`).
 * @throws {HostError} when QEMU is missing or the accelerator cannot be had.
 */
export function planVm(spec: VmSpec, host: HostFacts, runRoot: string, tapFds: readonly number[] = [], runDir?: string): PlannedVm {
  if (host.qemuBinary === null) throw new HostError("QEMU is not installed; install it with: apt-get install qemu-system-x86", "host.no-qemu");
  const accel = chooseAccel(spec.accel, host);
  const policy = compilePolicy(spec.policy, { accel: accel.accel, hostCpuVendor: host.cpuVendor });
  enforcePolicy(spec, policy);
  const argvInputs: ArgvInputs = {
    spec,
    accel: accel.accel,
    cpuArg: policy.cpuArg,
    tscKhz: host.tscKhz,
    paths: workerPaths(runRoot, spec, runDir),
    tapFds,
    entropy: policy.allowedDevices.has("entropy"),
    pvpanic: policy.allowedDevices.has("pvpanic"),
    // QEMU's own seccomp filter, everything it lets us deny denied, jail or not.
    seccompArgs: QEMU_SECCOMP_ARGS,
    palisadeVersion: VERSION,
  };
  return { accel, policy, argvInputs, qemuBinary: host.qemuBinary, argv: qemuArgv(argvInputs) };
}

export interface StartOptions {
  readonly runRoot: string;
  readonly detached: boolean;
  /** Virtual switches for `--net switch=…` NICs; default: the host's (`/var/lib/palisade/network`). */
  readonly switches?: VirtualSwitches;
  /** The worker's run directory; default `<runRoot>/<spec.name>`. */
  readonly runDir?: string;
  /** Called with the accelerator line before QEMU starts. */
  readonly onAccel?: (choice: AccelChoice) => void;
  /** Called with one line on the worker's sandbox (what it is, or what the host lacks). */
  readonly onSandbox?: (line: string) => void;
  /** Run the worker without its jail even where the policy and host allow one (benchmarks). */
  readonly noSandbox?: boolean;
}

/**
 * Checks the spec against the host, then starts its worker.
 * @throws {ConfigError|HostError} for bad input or a host that cannot run it;
 *   {WorkerStartError} when QEMU fails to start.
 */
export async function startVm(requested: VmSpec, host: HostFacts, options: StartOptions): Promise<Worker> {
  const disks = await preflight(requested, host, options.runRoot);
  // Decide everything (policy, accelerator) before a switch port is opened.
  const draft = planVm(requested, host, options.runRoot, requested.nics.map((_, index) => FIRST_PASSED_FD + index), options.runDir);
  const unplace = reservePlacement(requested, draft.argvInputs.paths.runDir);
  let ports: AttachedPort[] = [];
  let switches: VirtualSwitches | null = null;
  try {
    const attached = await attachSwitchPorts(requested, options.switches);
    ({ ports, switches } = attached);
    const spec = attached.spec;
    const plan = planVm(spec, host, options.runRoot, ports.map((_, index) => FIRST_PASSED_FD + index), options.runDir);
    options.onAccel?.(plan.accel);
    const { jail, gaps, hostChange } =
      options.noSandbox === true
        ? { jail: null, gaps: ["disabled for this run"], hostChange: undefined }
        : await planWorkerJail(spec, plan.argvInputs.paths, plan.policy, plan.accel.accel, plan.qemuBinary, options.detached, sandboxStateDir(options.runRoot));
    if (hostChange !== undefined) options.onSandbox?.(hostChange);
    options.onSandbox?.(jail === null ? `worker not sandboxed: ${gaps.join("; ")}` : `worker sandbox: ${jail.description}`);
    const worker = await Worker.launch({
      jail,
      spec,
      accel: plan.accel.accel,
      qemuBinary: plan.qemuBinary,
      qemuArgv: plan.argv,
      paths: plan.argvInputs.paths,
      detached: options.detached,
      passFds: ports.map((port) => port.fd),
      diskRealPaths: disks,
    });
    // The TAPs die with the worker (their only open file is in QEMU); the records go with the VM.
    const opened = { switches, ports };
    void worker.outcome.then(async () => {
      unplace();
      await detachSwitchPorts(opened.switches, opened.ports);
    });
    return worker;
  } catch (error: unknown) {
    unplace();
    await detachSwitchPorts(switches, ports);
    throw error;
  } finally {
    await closePortFds(ports);
  }
}

/** File descriptors handed to a worker start at 5: 0–2 are stdio, 3–4 the jail's (Worker.launch). */
const FIRST_PASSED_FD = 5;

/**
 * Opens a TAP port on its switch for each `switch` NIC; the spec that comes back names
 * each port's MAC, so the guest NIC and the switch's MAC guard agree.
 */
async function attachSwitchPorts(
  spec: VmSpec,
  given: VirtualSwitches | undefined,
): Promise<{ spec: VmSpec; ports: AttachedPort[]; switches: VirtualSwitches | null }> {
  if (!spec.nics.some((nic) => nic.kind === "switch")) return { spec, ports: [], switches: null };
  const network = await import("../network/index.js");
  const switches = given ?? new network.VirtualSwitches();
  const ports: AttachedPort[] = [];
  try {
    const nics = [];
    for (const [index, nic] of spec.nics.entries()) {
      if (nic.kind !== "switch") {
        nics.push(nic);
        continue;
      }
      const port = await switches.attachPort({ switchName: nic.switch, vmName: spec.name, nic: `net${index}`, mac: nic.mac, vlan: nic.vlan });
      ports.push(port);
      nics.push({ ...nic, mac: port.mac });
    }
    return { spec: { ...spec, nics }, ports, switches };
  } catch (error: unknown) {
    await detachSwitchPorts(switches, ports);
    await closePortFds(ports);
    throw error;
  }
}

/** Palisade's copies of the TAP descriptors; QEMU holds its own once started. */
async function closePortFds(ports: readonly AttachedPort[]): Promise<void> {
  if (ports.length === 0) return;
  const { closeFd } = await import("../network/index.js");
  for (const port of ports) closeFd(port.fd);
}

async function detachSwitchPorts(switches: VirtualSwitches | null, ports: readonly AttachedPort[]): Promise<void> {
  for (const port of ports) {
    await switches?.detachPort({ switchName: port.switchName, vmName: port.vmName, nic: port.nic }).catch(() => undefined);
  }
}
