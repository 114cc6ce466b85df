/**
 * The operations of Palisade's authorization store, modelled on Hyper-V's
 * Authorization Manager store (InitialStore.xml): each names one thing a caller may do.
 */

/** Every operation, with the sentence `palisade authz` prints for it. */
export const OPERATIONS = {
  "service.read": "Read service configuration",
  "service.reconfigure": "Reconfigure service",
  "vm.create": "Create virtual machine",
  "vm.delete": "Delete virtual machine",
  "vm.start": "Start virtual machine",
  "vm.stop": "Stop virtual machine",
  "vm.pause-resume": "Pause and resume virtual machine",
  "vm.reconfigure": "Reconfigure virtual machine",
  "vm.view-config": "View virtual machine configuration",
  "vm.change-scope": "Change virtual machine authorization scope",
  "vm.console-read": "Allow output from virtual machine (read console)",
  "vm.console-write": "Allow input to virtual machine (send console input)",
  "disk.create": "Create virtual disk",
  "disk.modify": "Modify virtual disk",
  "disk.delete": "Delete virtual disk",
  "disk.attach": "Attach virtual disk",
  "switch.create": "Create virtual switch",
  "switch.delete": "Delete virtual switch",
  "switch.modify": "Modify virtual switch settings",
  "port.create": "Create virtual switch port",
  "port.delete": "Delete virtual switch port",
  "port.modify": "Modify virtual switch port settings",
  "port.connect": "Connect virtual switch port",
  "port.disconnect": "Disconnect virtual switch port",
  "authz.read": "Read authorization policy",
  "authz.change": "Change authorization policy",
  "audit.read": "Read audit log",
} as const;

/** One operation's name, e.g. `"vm.start"`. */
export type Operation = keyof typeof OPERATIONS;

/** Every operation name, in a stable order. */
export const OPERATION_NAMES: readonly Operation[] = Object.freeze(Object.keys(OPERATIONS) as Operation[]);

const operationSet: ReadonlySet<string> = new Set(OPERATION_NAMES);

/**
 * Whether a string names an operation.
 *
 * @example
 * isOperation("vm.start"); // true
 */
export function isOperation(value: string): value is Operation {
  return operationSet.has(value);
}

/**
 * Operations that concern the whole service, never one scope: an assignment within a
 * scope never grants them (Hyper-V likewise keeps service settings out of scopes).
 */
export const SERVICE_WIDE_OPERATIONS: ReadonlySet<Operation> = new Set<Operation>([
  "service.read",
  "service.reconfigure",
  "switch.create",
  "switch.delete",
  "switch.modify",
  "authz.read",
  "authz.change",
  "audit.read",
]);
