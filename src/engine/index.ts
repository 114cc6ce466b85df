/** The engine: one QEMU worker per VM, from a validated spec. */
export { parseVmSpec, VmSpecSchema, DISK_FORMATS, MIN_MEMORY_MIB, VM_NAME_PATTERN } from "./vm-spec.js";
export type { VmSpec, VmSpecInput, DiskSpec, NicSpec, ConsoleSpec, DiskFormat } from "./vm-spec.js";
export { probeHost, type HostFacts } from "./host-facts.js";
export { chooseAccel, kvmUnavailableReason, type Accel, type AccelChoice } from "./accel.js";
export { qemuArgv, kernelCommandLine, timingArgs, type ArgvInputs, type WorkerPaths } from "./qemu-argv.js";
export { describeOutcome, type Outcome, type VmState } from "./lifecycle.js";
export { Worker, WorkerStartError, WorkerStateError, type WorkerEvent } from "./worker.js";
export { defaultRunRoot, listLiveWorkers, readWorkerRecord, type WorkerRecord } from "./run-dir.js";
export { planVm, startVm, type PlannedVm } from "./launch.js";
export { checkKernelFile, type KernelFormat } from "./kernel-image.js";
export { hostPolicyCeiling } from "./placement.js";
export { QmpClient, QmpError } from "./qmp/client.js";
