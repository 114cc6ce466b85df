/** Authorization (operations, tasks, roles, scopes, assignments, decide) and the audit log. */
export {
  OPERATIONS,
  OPERATION_NAMES,
  SERVICE_WIDE_OPERATIONS,
  isOperation,
  type Operation,
} from "./operations.js";
export {
  BUILTIN_ROLES,
  BUILTIN_TASKS,
  checkPolicy,
  emptyPolicy,
  roleOperations,
  type Member,
  type PolicyDocument,
  type RoleAssignment,
  type RoleDefinition,
  type ScopeDefinition,
  type TaskDefinition,
} from "./policy.js";
export { decide, type AuthzObject, type Decision, type Principal } from "./decide.js";
export { MAX_NAME_LENGTH, nameProblem } from "./names.js";
export { AuditLogError, AuthzPolicyError } from "./errors.js";
export {
  AUDIT_SCHEMA,
  AuditLog,
  canonicalEntry,
  entryHash,
  verifyChain,
  GENESIS_HASH,
  type AuditEntry,
  type AuditRecord,
  type AuditQuery,
  type ChainVerdict,
} from "./audit-log.js";
