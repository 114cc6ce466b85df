/** The management service: REST API on a Unix socket, SQLite store, authorization, audit, lifecycle. */
export {
  startService,
  buildApp,
  BODY_LIMIT_BYTES,
  type AppOptions,
  type RunningService,
  type ServiceOptions,
} from "./server.js";
export { ServiceCore } from "./core.js";
export {
  DEFAULT_SOCKET_PATH,
  defaultDataDir,
  dataDirPaths,
  type ListenAddress,
  type DataDirPaths,
} from "./paths.js";
export { parseListenAddress } from "./listen-address.js";
export {
  checkTransition,
  unavailableRuntime,
  type RuntimeStatus,
  type RuntimeVm,
  type VmAction,
  type VmRuntime,
  type VmState,
} from "./lifecycle.js";
export {
  ApiError,
  ConflictError,
  NotFoundError,
  NotSupportedError,
  PermissionDeniedError,
  ServiceStartError,
  ValidationError,
} from "./errors.js";
export {
  vmCreateSchema,
  vmUpdateSchema,
  nameSchema,
  type VmSpec,
  type VmCreateBody,
  type VmUpdateBody,
} from "./api/schemas.js";
export { HostUsers } from "./host-identity.js";
export { EngineRuntime, statusOfOutcome, type EngineRuntimeOptions } from "./engine-runtime.js";
export { CONSOLE_UPGRADE } from "./console.js";
export { ConsoleRing, CONSOLE_RING_BYTES } from "./console-ring.js";
export { modeAllows, assertCallerMayOpen, type Caller } from "./path-access.js";
export { engineSpecOf } from "./engine-spec.js";
export { type ConsoleTap } from "./lifecycle.js";
