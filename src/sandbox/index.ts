/**
 * The worker sandbox: the jail every QEMU worker runs in (per-VM uid, namespaces, a root
 * holding only its files, seccomp, cgroups and rlimits). See README.md and
 * docs/design/sandbox.md. Imports only `util/`.
 */
export {
  jailArgv,
  jailCommandArgv,
  jailPaths,
  cgroupDirs,
  validateJailSpec,
  parseWorkerStatus,
  QEMU_SECCOMP_ARGS,
  JAIL_DEVICES,
  SandboxError,
  type JailSpec,
  type JailBind,
  type JailDevice,
  type JailPaths,
  type WorkerStatus,
} from "./jail.js";
export {
  probeSandboxHost,
  sandboxGaps,
  parseLdd,
  parseCgroupLayout,
  type SandboxHostFacts,
  type CgroupLayout,
  type CgroupV1Controller,
} from "./host-facts.js";
export { prepareJail, cleanupJail, readWorkerStatus, type PreparedJail } from "./prepare.js";
export { cgroupLimitWrites, type CgroupWrite } from "./cgroups.js";
export {
  cgroup2RootOptions,
  favorDynmodsState,
  judgeFavorDynmodsRemount,
  planFavorDynmods,
  remountFavorDynmods,
  type FavorDynmodsChange,
  type FavorDynmodsPlan,
  type FavorDynmodsState,
} from "./cgroup-tuning.js";
export { jailedProgramPid, findJailedProgram, readProcessNode, type ProcessNode } from "./worker-pid.js";
export {
  allocateUid,
  releaseUid,
  procProcessTable,
  DEFAULT_UID_RANGE,
  type UidClaim,
  type UidPoolOptions,
  type ProcessTable,
} from "./uid-pool.js";
export { describeSandbox, formatSandboxDescription, type SandboxDescription } from "./describe.js";
export { workerSeccompProgram, DENIED_SYSCALLS_X86_64 } from "./seccomp-filter.js";
export { markInheritedFdsCloseOnExec } from "./inherited-fds.js";
export { prepareRuntimeTree, runtimeTreeTops, type RuntimeTree } from "./runtime-tree.js";
