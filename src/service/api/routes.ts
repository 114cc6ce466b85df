/**
 * The API's routes: each authorizes its request with `ctx.require()` before it touches
 * anything, and the server audits every request with what the handler recorded.
 */
import * as z from "zod";
import { OPERATIONS, OPERATION_NAMES, decide, type Operation, type Principal } from "../../authz/index.js";
import { VERSION } from "../../util/version.js";
import type { ServiceCore } from "../core.js";
import { ConflictError, NotFoundError, ValidationError } from "../errors.js";
import { checkTransition } from "../lifecycle.js";
import { assertCallerMayUseFiles, assertValidDefinition, pathsChanged } from "../engine-spec.js";
import type { VmRecord } from "../store/vm-store.js";
import { route, type RequestContext, type Route } from "./route.js";
import {
  assignmentCreateSchema,
  auditQuerySchema,
  checkSchema,
  emptyQuery,
  idParams,
  nameParams,
  roleCreateSchema,
  scopeCreateSchema,
  taskCreateSchema,
  vmCreateSchema,
  vmUpdateSchema,
  type VmCreateBody,
  type VmSpec,
  type VmUpdateBody,
} from "./schemas.js";

const noParams = z.strictObject({});

/** A VM as the API shows it, with its current series of automatic restarts. */
function vmView(vm: VmRecord, restarts: { attempts: number; pending: boolean }): Record<string, unknown> {
  return {
    id: vm.id,
    name: vm.name,
    scope: vm.scope,
    state: vm.state,
    stateReason: vm.stateReason,
    restarts,
    generation: vm.generation,
    createdAt: vm.createdAt,
    updatedAt: vm.updatedAt,
    spec: vm.spec,
  };
}

/** A complete spec from a create body, defaults filled in. */
export function specFromCreate(body: VmCreateBody): VmSpec {
  return {
    name: body.name,
    memoryMiB: body.memoryMiB ?? 512,
    vcpus: body.vcpus ?? 1,
    kernel: body.kernel,
    ...(body.initrd === undefined ? {} : { initrd: body.initrd }),
    ...(body.append === undefined ? {} : { append: body.append }),
    disks: body.disks ?? [],
    nics: body.nics ?? [],
    scope: body.scope ?? null,
    ...(body.trustLevel === undefined ? {} : { trustLevel: body.trustLevel }),
    ...(body.policy === undefined ? {} : { policy: body.policy }),
    autostart: body.autostart ?? false,
    ...(body.autostartDelaySeconds === undefined
      ? {}
      : { autostartDelaySeconds: body.autostartDelaySeconds }),
    ...(body.restartPolicy === undefined ? {} : { restartPolicy: body.restartPolicy }),
    ...(body.accel === undefined ? {} : { accel: body.accel }),
    ...(body.machine === undefined ? {} : { machine: body.machine }),
    ...(body.onReboot === undefined ? {} : { onReboot: body.onReboot }),
    ...(body.onPanic === undefined ? {} : { onPanic: body.onPanic }),
    ...(body.readyMarker === undefined ? {} : { readyMarker: body.readyMarker }),
    ...(body.bootTimeoutMs === undefined ? {} : { bootTimeoutMs: body.bootTimeoutMs }),
  };
}

/** The spec after a PATCH: `null` removes an optional field. */
export function specAfterUpdate(spec: VmSpec, body: VmUpdateBody): VmSpec {
  const merged = new Map<string, unknown>(Object.entries(spec));
  for (const [key, value] of Object.entries(body)) {
    if (value === undefined || key === "ifGeneration") continue;
    if (value === null && key !== "scope") merged.delete(key);
    else merged.set(key, value);
  }
  // INVARIANT: body was validated by vmUpdateSchema, whose fields are VmSpec's.
  return Object.fromEntries(merged) as unknown as VmSpec;
}

function vmObject(
  ctx: RequestContext,
  vm: { name: string; scope: string | null },
): { scope: string | null; vm: string } {
  ctx.audit.vm = vm.name;
  ctx.audit.scope = vm.scope;
  return { scope: vm.scope, vm: vm.name };
}

function checkFor(
  core: ServiceCore,
  who: Principal,
  operation: Operation,
  scope: string | null,
  vm?: string,
) {
  const decision = decide(core.policies.current(), who, operation, {
    scope,
    ...(vm === undefined ? {} : { vm }),
  });
  return {
    user: who.user,
    uid: who.uid,
    groups: who.groups,
    operation,
    scope,
    vm: vm ?? null,
    allowed: decision.allowed,
    reason: decision.reason,
  };
}

/** What every route declares besides its handler. */
interface RouteHead {
  readonly url: string;
  readonly operationId: string;
  readonly summary: string;
}

/** `GET` of authorization data: needs `authz.read`, answers `answer()`. */
function authzRead(head: RouteHead, answer: () => unknown): Route {
  return route({
    ...head,
    method: "GET",
    tag: "authz",
    operation: "authz.read",
    params: noParams,
    query: emptyQuery,
    mode: "sync",
    handle: (ctx) => {
      ctx.require("authz.read", {});
      return answer();
    },
  });
}

/** A change of the authorization policy: needs `authz.change` before anything else. */
function authzChange<P, B>(
  head: RouteHead & {
    readonly method: "POST" | "DELETE";
    readonly params: z.ZodType<P>;
    readonly body?: z.ZodType<B>;
  },
  change: (ctx: RequestContext, input: { params: P; body: B }) => unknown,
): Route {
  return route<P, unknown, B>({
    ...head,
    tag: "authz",
    operation: "authz.change",
    query: emptyQuery,
    ...(head.method === "POST" ? { status: 201 } : {}),
    mode: "sync",
    handle: (ctx, input) => {
      ctx.require("authz.change", {});
      return change(ctx, input);
    },
  });
}

/**
 * A route on one VM (`/v1/vms/:name…`): finds the VM (404 otherwise) and requires
 * `operation` on it before the handler runs.
 */
function vmRoute<B>(
  core: ServiceCore,
  head: RouteHead & {
    readonly method: "GET" | "POST" | "PATCH" | "DELETE";
    readonly operation: Operation;
    readonly mode: "sync" | "async";
    readonly body?: z.ZodType<B>;
  },
  handle: (ctx: RequestContext, vm: VmRecord, body: B) => unknown,
): Route {
  return route<{ name: string }, unknown, B>({
    ...head,
    tag: "vms",
    params: nameParams,
    query: emptyQuery,
    handle: (ctx, { params, body }) => {
      ctx.audit.vm = params.name;
      const vm = core.vms.get(params.name);
      ctx.require(head.operation, vmObject(ctx, vm));
      return handle(ctx, vm, body);
    },
  });
}

/**
 * Refuses a definition change while the VM's state or an action in flight forbids it.
 *
 * @throws {ConflictError} `vm.bad-state` with the current state
 */
function assertMayChange(
  core: ServiceCore,
  vm: VmRecord,
  action: "delete" | "reconfigure",
  verb: string,
): void {
  const check = checkTransition(vm.state, action);
  if (!check.ok || core.isBusy(vm.name)) {
    throw new ConflictError(
      `Cannot ${verb} VM ${vm.name}: ${check.ok ? "an action is in progress" : check.reason}`,
      "vm.bad-state",
      { state: vm.state },
    );
  }
}

/** Every route of the API. */
export function buildRoutes(core: ServiceCore): Route[] {
  const view = (vm: VmRecord): Record<string, unknown> => vmView(vm, core.restartsOf(vm.name));
  const lifecycle = (
    action: "start" | "stop" | "kill" | "pause" | "resume",
    operation: Operation,
    summary: string,
  ): Route =>
    vmRoute(
      core,
      {
        method: "POST",
        url: `/v1/vms/:name/${action}`,
        operationId: `${action}Vm`,
        summary,
        operation,
        mode: "async",
      },
      async (ctx, vm) => view(await core.lifecycle(vm.name, action, "user", ctx.timings)),
    );
  const caller = (ctx: RequestContext) => ({
    uid: ctx.principal.uid,
    gids: core.hostUsers.gidsOf(ctx.principal.uid),
  });

  return [
    route({
      method: "GET",
      url: "/v1/service",
      operationId: "getService",
      summary: "Service version, data dir and uptime",
      tag: "service",
      operation: "service.read",
      params: noParams,
      query: emptyQuery,
      mode: "sync",
      handle: (ctx) => {
        ctx.require("service.read", {});
        return {
          version: VERSION,
          dataDir: core.paths.dataDir,
          pid: process.pid,
          startedAt: core.startedAt.toISOString(),
          you: ctx.principal,
          authorization: core.authorize,
        };
      },
    }),

    // --- VM definitions -----------------------------------------------------------
    route({
      method: "GET",
      url: "/v1/vms",
      operationId: "listVms",
      summary: "The VMs the caller may view",
      tag: "vms",
      operation: "vm.view-config",
      params: noParams,
      query: emptyQuery,
      mode: "sync",
      handle: (ctx) => {
        const all = core.vms.list();
        const visible = all.filter((vm) => ctx.may("vm.view-config", { scope: vm.scope, vm: vm.name }));
        ctx.audit.detail = `${visible.length} of ${all.length} VMs visible`;
        return { vms: visible.map(view) };
      },
    }),
    route({
      method: "POST",
      url: "/v1/vms",
      operationId: "createVm",
      summary: "Store a new VM definition",
      tag: "vms",
      operation: "vm.create",
      params: noParams,
      query: emptyQuery,
      body: vmCreateSchema,
      status: 201,
      mode: "sync",
      handle: (ctx, { body }) => {
        const asked = specFromCreate(body);
        ctx.require("vm.create", vmObject(ctx, asked));
        if (asked.scope !== null) core.policies.scope(asked.scope);
        assertValidDefinition(asked);
        const who = caller(ctx);
        assertCallerMayUseFiles(asked, who);
        const spec: VmSpec = { ...asked, pathsCheckedFor: who.uid };
        return view(core.vms.create(spec, ctx.time, body.uuid));
      },
    }),
    vmRoute(
      core,
      {
        method: "GET",
        url: "/v1/vms/:name",
        operationId: "getVm",
        summary: "One VM's definition and state",
        operation: "vm.view-config",
        mode: "sync",
      },
      (_ctx, vm) => view(vm),
    ),
    vmRoute(
      core,
      {
        method: "PATCH",
        url: "/v1/vms/:name",
        operationId: "updateVm",
        summary:
          "Change a VM's definition (applies at its next start); moving it to another scope needs vm.change-scope on both",
        operation: "vm.reconfigure",
        mode: "sync",
        body: vmUpdateSchema,
      },
      (ctx, vm, body: VmUpdateBody) => {
        let next = specAfterUpdate(vm.spec, body);
        assertValidDefinition(next);
        if (pathsChanged(vm.spec, next)) {
          // New files are checked against whoever names them, and that caller answers for them.
          const who = caller(ctx);
          assertCallerMayUseFiles(next, who);
          next = { ...next, pathsCheckedFor: who.uid };
        }
        if (next.scope !== vm.scope) {
          ctx.require("vm.change-scope", { scope: vm.scope, vm: vm.name });
          ctx.require("vm.change-scope", { scope: next.scope, vm: vm.name });
          if (next.scope !== null) core.policies.scope(next.scope);
          ctx.audit.detail = `scope ${vm.scope ?? "(none)"} -> ${next.scope ?? "(none)"}`;
        }
        assertMayChange(core, vm, "reconfigure", "change");
        return view(core.vms.update(vm.name, next, ctx.time, body.ifGeneration));
      },
    ),
    vmRoute(
      core,
      {
        method: "DELETE",
        url: "/v1/vms/:name",
        operationId: "deleteVm",
        summary: "Delete a stopped VM's definition",
        operation: "vm.delete",
        mode: "sync",
      },
      (_ctx, vm) => {
        assertMayChange(core, vm, "delete", "delete");
        core.vms.delete(vm.name);
        return { deleted: vm.name, id: vm.id };
      },
    ),
    vmRoute(
      core,
      {
        method: "GET",
        url: "/v1/vms/:name/console/recent",
        operationId: "getVmConsoleRecent",
        summary:
          "The VM's most recent console output (up to 64 KiB); for live output and input, upgrade GET /v1/vms/:name/console to palisade-console",
        operation: "vm.console-read",
        mode: "sync",
      },
      (_ctx, vm) => {
        const tap = core.runtime.openConsole?.(core.runDir(vm)) ?? null;
        return { state: vm.state, output: tap === null ? "" : tap.recent().toString("utf8") };
      },
    ),
    lifecycle("start", "vm.start", "Start the VM's worker"),
    lifecycle("stop", "vm.stop", "Stop the VM: ACPI power button, forced after a timeout"),
    lifecycle("kill", "vm.stop", "Kill the VM's worker at once"),
    lifecycle("pause", "vm.pause-resume", "Pause the VM's vCPUs"),
    lifecycle("resume", "vm.pause-resume", "Resume a paused VM"),

    // --- Authorization ------------------------------------------------------------
    authzRead(
      { url: "/v1/authz/operations", operationId: "listOperations", summary: "Every operation" },
      () => ({
        operations: OPERATION_NAMES.map((name) => ({ name, description: OPERATIONS[name] })),
      }),
    ),
    authzRead(
      { url: "/v1/authz/tasks", operationId: "listTasks", summary: "Tasks (groups of operations)" },
      () => ({
        tasks: core.policies.current().tasks,
      }),
    ),
    authzChange(
      {
        method: "POST",
        url: "/v1/authz/tasks",
        operationId: "createTask",
        summary: "Create a custom task",
        params: noParams,
        body: taskCreateSchema,
      },
      (ctx, { body }) => {
        ctx.audit.detail = `create task ${body.name}`;
        return core.policies.createTask(body.name, body.description ?? "", body.operations as Operation[]);
      },
    ),
    authzChange(
      {
        method: "DELETE",
        url: "/v1/authz/tasks/:name",
        operationId: "deleteTask",
        summary: "Delete a custom task no role uses",
        params: nameParams,
      },
      (ctx, { params }) => {
        ctx.audit.detail = `delete task ${params.name}`;
        core.policies.deleteTask(params.name);
        return { deleted: params.name };
      },
    ),
    authzRead(
      {
        url: "/v1/authz/roles",
        operationId: "listRoles",
        summary: "Roles with their tasks and expanded operations",
      },
      () => ({ roles: core.policies.current().roles }),
    ),
    route({
      method: "GET",
      url: "/v1/authz/roles/:name",
      operationId: "getRole",
      summary: "One role",
      tag: "authz",
      operation: "authz.read",
      params: nameParams,
      query: emptyQuery,
      mode: "sync",
      handle: (ctx, { params }) => {
        ctx.require("authz.read", {});
        const policy = core.policies.current();
        const found = core.policies.role(params.name);
        const operations = new Set<Operation>(found.operations);
        for (const t of found.tasks) for (const op of core.policies.task(t).operations) operations.add(op);
        return {
          ...found,
          effectiveOperations: OPERATION_NAMES.filter((op) => operations.has(op)),
          assignments: policy.assignments.filter((a) => a.role === found.name),
        };
      },
    }),
    authzChange(
      {
        method: "POST",
        url: "/v1/authz/roles",
        operationId: "createRole",
        summary: "Create a custom role from tasks and operations",
        params: noParams,
        body: roleCreateSchema,
      },
      (ctx, { body }) => {
        ctx.audit.detail = `create role ${body.name}`;
        if ((body.tasks ?? []).length + (body.operations ?? []).length === 0) {
          throw new ValidationError(
            "Field body.tasks: a role needs at least one task or operation",
            "body.tasks",
          );
        }
        return core.policies.createRole(
          body.name,
          body.description ?? "",
          body.tasks ?? [],
          (body.operations ?? []) as Operation[],
        );
      },
    ),
    authzChange(
      {
        method: "DELETE",
        url: "/v1/authz/roles/:name",
        operationId: "deleteRole",
        summary: "Delete a custom role with no assignments",
        params: nameParams,
      },
      (ctx, { params }) => {
        ctx.audit.detail = `delete role ${params.name}`;
        core.policies.deleteRole(params.name);
        return { deleted: params.name };
      },
    ),
    authzRead(
      { url: "/v1/authz/scopes", operationId: "listScopes", summary: "Scopes (named groups of VMs)" },
      () => ({
        scopes: core.policies.current().scopes.map((s) => ({ ...s, vms: core.vms.countInScope(s.name) })),
      }),
    ),
    authzChange(
      {
        method: "POST",
        url: "/v1/authz/scopes",
        operationId: "createScope",
        summary: "Create a scope",
        params: noParams,
        body: scopeCreateSchema,
      },
      (ctx, { body }) => {
        ctx.audit.scope = body.name;
        ctx.audit.detail = `create scope ${body.name}`;
        return core.policies.createScope(body.name, body.description ?? "");
      },
    ),
    authzChange(
      {
        method: "DELETE",
        url: "/v1/authz/scopes/:name",
        operationId: "deleteScope",
        summary: "Delete a scope no VM and no assignment uses",
        params: nameParams,
      },
      (ctx, { params }) => {
        ctx.audit.scope = params.name;
        ctx.audit.detail = `delete scope ${params.name}`;
        core.policies.deleteScope(params.name, core.vms.countInScope(params.name));
        return { deleted: params.name };
      },
    ),
    authzRead(
      { url: "/v1/authz/assignments", operationId: "listAssignments", summary: "Role assignments" },
      () => ({
        assignments: core.policies.current().assignments,
      }),
    ),
    authzChange(
      {
        method: "POST",
        url: "/v1/authz/assignments",
        operationId: "createAssignment",
        summary: "Assign a role to a user or group, service-wide or within a scope",
        params: noParams,
        body: assignmentCreateSchema,
      },
      (ctx, { body }) => {
        if ((body.user === undefined) === (body.group === undefined)) {
          throw new ValidationError("Field body.user: give exactly one of user and group", "body.user");
        }
        const member =
          body.user === undefined
            ? { kind: "group" as const, name: body.group ?? "" }
            : { kind: "user" as const, name: body.user };
        ctx.audit.scope = body.scope ?? null;
        ctx.audit.detail = `assign role ${body.role} to ${member.kind} ${member.name}`;
        return core.policies.assign(body.role, body.scope ?? null, member);
      },
    ),
    authzChange(
      {
        method: "DELETE",
        url: "/v1/authz/assignments/:id",
        operationId: "deleteAssignment",
        summary: "Remove a role assignment",
        params: idParams,
      },
      (ctx, { params }) => {
        const removed = core.policies.unassign(params.id);
        ctx.audit.scope = removed.scope;
        ctx.audit.detail = `unassign role ${removed.role} from ${removed.member.kind} ${removed.member.name}`;
        return { deleted: removed };
      },
    ),
    route({
      method: "POST",
      url: "/v1/authz/check",
      operationId: "checkAccess",
      summary: "May the caller (or, with authz.read, another user) perform an operation on a VM or scope?",
      tag: "authz",
      operation: "authz.check",
      readOnly: true,
      params: noParams,
      query: emptyQuery,
      body: checkSchema,
      mode: "sync",
      handle: (ctx, { body }) => {
        let who = ctx.principal;
        if (body.user !== undefined && body.user !== ctx.principal.user) {
          ctx.require("authz.read", {});
          const found = core.hostUsers.byName(body.user);
          if (found === undefined)
            throw new NotFoundError(`The host has no user ${body.user}`, "authz.unknown-user");
          who = found;
        }
        let scope = body.scope ?? null;
        if (body.vm !== undefined) {
          const vm = core.vms.get(body.vm);
          ctx.require("vm.view-config", vmObject(ctx, vm));
          scope = vm.scope;
        } else if (scope !== null) {
          core.policies.scope(scope);
        }
        ctx.audit.operation = "authz.check";
        const result = checkFor(core, who, body.operation as Operation, scope, body.vm);
        ctx.audit.detail = `${result.user} ${body.operation}: ${result.allowed ? "allowed" : "denied"}`;
        return result;
      },
    }),

    // --- Audit --------------------------------------------------------------------
    route({
      method: "GET",
      url: "/v1/audit",
      operationId: "listAudit",
      summary: "Audit entries, oldest first, filtered by time and VM",
      tag: "audit",
      operation: "audit.read",
      params: noParams,
      query: auditQuerySchema,
      mode: "sync",
      handle: (ctx, { query }) => {
        ctx.require("audit.read", {});
        const since = query.since === undefined ? undefined : new Date(query.since).toISOString();
        return {
          entries: core.audit.query({
            ...(since === undefined ? {} : { since }),
            ...(query.vm === undefined ? {} : { vm: query.vm }),
            ...(query.afterSeq === undefined ? {} : { afterSeq: query.afterSeq }),
            ...(query.limit === undefined ? {} : { limit: query.limit }),
          }),
        };
      },
    }),
    route({
      method: "GET",
      url: "/v1/audit/verify",
      operationId: "verifyAudit",
      summary: "Check the audit log's hash chain",
      tag: "audit",
      operation: "audit.read",
      params: noParams,
      query: emptyQuery,
      mode: "sync",
      handle: (ctx) => {
        ctx.require("audit.read", {});
        return core.audit.verify();
      },
    }),
  ];
}
