/**
 * `palisade authz role|task|scope|assign|check|operations …`: the authorization policy,
 * through the management service.
 */
import type { Command } from "commander";
import type { RoleAssignment, RoleDefinition, ScopeDefinition, TaskDefinition } from "../authz/index.js";
import { CONNECT_HELP, formatTable, printJson, serviceClient } from "./service-client.js";

interface Flags {
  connect?: string;
  json?: boolean;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function common(command: Command): Command {
  return command.option("--connect <address>", CONNECT_HELP).option("--json", "print JSON");
}

function memberText(a: RoleAssignment): string {
  return `${a.member.kind}:${a.member.name}`;
}

/** Registers `authz`. */
export function registerAuthzCommands(program: Command): void {
  const authz = program
    .command("authz")
    .description("Authorization: operations, tasks, roles, scopes and role assignments");

  common(authz.command("operations").description("Every operation")).action(async (flags: Flags) => {
    const { operations } = await serviceClient(flags.connect).call<{
      operations: { name: string; description: string }[];
    }>("GET", "/v1/authz/operations");
    if (flags.json === true) printJson(operations);
    else
      process.stdout.write(
        formatTable([["OPERATION", "DESCRIPTION"], ...operations.map((o) => [o.name, o.description])]),
      );
  });

  // --- roles
  const role = authz.command("role").description("Roles: named sets of tasks and operations");
  common(role.command("list").description("Every role")).action(async (flags: Flags) => {
    const { roles } = await serviceClient(flags.connect).call<{ roles: RoleDefinition[] }>(
      "GET",
      "/v1/authz/roles",
    );
    if (flags.json === true) printJson(roles);
    else
      process.stdout.write(
        formatTable([
          ["ROLE", "BUILT-IN", "TASKS", "OPERATIONS"],
          ...roles.map((r) => [
            r.name,
            r.builtin ? "yes" : "no",
            r.tasks.join(",") || "-",
            r.operations.length === 0
              ? "-"
              : r.operations.length > 6
                ? `${r.operations.length} operations`
                : r.operations.join(","),
          ]),
        ]),
      );
  });
  common(
    role.command("show").description("One role, its effective operations and assignments").argument("<name>"),
  ).action(async (name: string, flags: Flags) => {
    const found = await serviceClient(flags.connect).call<
      RoleDefinition & { effectiveOperations: string[]; assignments: RoleAssignment[] }
    >("GET", `/v1/authz/roles/${encodeURIComponent(name)}`);
    if (flags.json === true) {
      printJson(found);
      return;
    }
    process.stdout.write(
      `role        ${found.name}${found.builtin ? " (built in)" : ""}\n` +
        `description ${found.description}\n` +
        `tasks       ${found.tasks.join(", ") || "-"}\n` +
        `operations  ${found.effectiveOperations.join(", ")}\n` +
        `assigned    ${found.assignments.map((a) => `${memberText(a)} in ${a.scope ?? "(service)"}`).join("; ") || "-"}\n`,
    );
  });
  common(
    role
      .command("create")
      .description("Create a custom role")
      .argument("<name>")
      .option("--task <task>", "task the role includes (repeatable)", collect, [])
      .option("--operation <op>", "single operation the role includes (repeatable)", collect, [])
      .option("--description <text>", "what the role is for"),
  ).action(
    async (name: string, flags: Flags & { task: string[]; operation: string[]; description?: string }) => {
      const created = await serviceClient(flags.connect).call<RoleDefinition>("POST", "/v1/authz/roles", {
        name,
        tasks: flags.task,
        operations: flags.operation,
        ...(flags.description === undefined ? {} : { description: flags.description }),
      });
      if (flags.json === true) printJson(created);
      else process.stdout.write(`Created role ${created.name}\n`);
    },
  );
  common(
    role.command("delete").description("Delete a custom role with no assignments").argument("<name>"),
  ).action(async (name: string, flags: Flags) => {
    const result = await serviceClient(flags.connect).call<{ deleted: string }>(
      "DELETE",
      `/v1/authz/roles/${encodeURIComponent(name)}`,
    );
    if (flags.json === true) printJson(result);
    else process.stdout.write(`Deleted role ${result.deleted}\n`);
  });

  // --- tasks
  const task = authz.command("task").description("Tasks: named groups of operations");
  common(task.command("list").description("Every task")).action(async (flags: Flags) => {
    const { tasks } = await serviceClient(flags.connect).call<{ tasks: TaskDefinition[] }>(
      "GET",
      "/v1/authz/tasks",
    );
    if (flags.json === true) printJson(tasks);
    else
      process.stdout.write(
        formatTable([
          ["TASK", "BUILT-IN", "OPERATIONS"],
          ...tasks.map((t) => [t.name, t.builtin ? "yes" : "no", t.operations.join(",")]),
        ]),
      );
  });
  common(
    task
      .command("create")
      .description("Create a custom task")
      .argument("<name>")
      .requiredOption("--operation <op>", "operation the task includes (repeatable)", collect, [])
      .option("--description <text>", "what the task is for"),
  ).action(async (name: string, flags: Flags & { operation: string[]; description?: string }) => {
    const created = await serviceClient(flags.connect).call<TaskDefinition>("POST", "/v1/authz/tasks", {
      name,
      operations: flags.operation,
      ...(flags.description === undefined ? {} : { description: flags.description }),
    });
    if (flags.json === true) printJson(created);
    else process.stdout.write(`Created task ${created.name}\n`);
  });
  common(task.command("delete").description("Delete a custom task no role uses").argument("<name>")).action(
    async (name: string, flags: Flags) => {
      const result = await serviceClient(flags.connect).call<{ deleted: string }>(
        "DELETE",
        `/v1/authz/tasks/${encodeURIComponent(name)}`,
      );
      if (flags.json === true) printJson(result);
      else process.stdout.write(`Deleted task ${result.deleted}\n`);
    },
  );

  // --- scopes
  const scope = authz.command("scope").description("Scopes: named groups of VMs");
  common(scope.command("list").description("Every scope")).action(async (flags: Flags) => {
    const { scopes } = await serviceClient(flags.connect).call<{
      scopes: (ScopeDefinition & { vms: number })[];
    }>("GET", "/v1/authz/scopes");
    if (flags.json === true) printJson(scopes);
    else
      process.stdout.write(
        formatTable([
          ["SCOPE", "VMS", "DESCRIPTION"],
          ...scopes.map((s) => [s.name, String(s.vms), s.description]),
        ]),
      );
  });
  common(
    scope
      .command("create")
      .description("Create a scope")
      .argument("<name>")
      .option("--description <text>", "what the scope holds"),
  ).action(async (name: string, flags: Flags & { description?: string }) => {
    const created = await serviceClient(flags.connect).call<ScopeDefinition>("POST", "/v1/authz/scopes", {
      name,
      ...(flags.description === undefined ? {} : { description: flags.description }),
    });
    if (flags.json === true) printJson(created);
    else process.stdout.write(`Created scope ${created.name}\n`);
  });
  common(
    scope.command("delete").description("Delete a scope no VM and no assignment uses").argument("<name>"),
  ).action(async (name: string, flags: Flags) => {
    const result = await serviceClient(flags.connect).call<{ deleted: string }>(
      "DELETE",
      `/v1/authz/scopes/${encodeURIComponent(name)}`,
    );
    if (flags.json === true) printJson(result);
    else process.stdout.write(`Deleted scope ${result.deleted}\n`);
  });

  // --- assignments
  const assign = authz
    .command("assign")
    .description("Role assignments: a role for a user or group, service-wide or within a scope");
  common(assign.command("list").description("Every assignment")).action(async (flags: Flags) => {
    const { assignments } = await serviceClient(flags.connect).call<{ assignments: RoleAssignment[] }>(
      "GET",
      "/v1/authz/assignments",
    );
    if (flags.json === true) printJson(assignments);
    else
      process.stdout.write(
        formatTable([
          ["ID", "ROLE", "MEMBER", "SCOPE"],
          ...assignments.map((a) => [String(a.id), a.role, memberText(a), a.scope ?? "(service)"]),
        ]),
      );
  });
  common(
    assign
      .command("add")
      .description("Assign a role")
      .argument("<role>")
      .option("--user <name>", "host user")
      .option("--group <name>", "host group")
      .option("--scope <scope>", "only within this scope (default: the whole service)"),
  ).action(async (roleName: string, flags: Flags & { user?: string; group?: string; scope?: string }) => {
    const created = await serviceClient(flags.connect).call<RoleAssignment>("POST", "/v1/authz/assignments", {
      role: roleName,
      ...(flags.user === undefined ? {} : { user: flags.user }),
      ...(flags.group === undefined ? {} : { group: flags.group }),
      ...(flags.scope === undefined ? {} : { scope: flags.scope }),
    });
    if (flags.json === true) printJson(created);
    else
      process.stdout.write(
        `Assignment ${created.id}: ${memberText(created)} holds ${created.role} in ${created.scope ?? "the whole service"}\n`,
      );
  });
  common(assign.command("remove").description("Remove an assignment").argument("<id>")).action(
    async (id: string, flags: Flags) => {
      const result = await serviceClient(flags.connect).call<{ deleted: RoleAssignment }>(
        "DELETE",
        `/v1/authz/assignments/${encodeURIComponent(id)}`,
      );
      if (flags.json === true) printJson(result);
      else process.stdout.write(`Removed assignment ${result.deleted.id}\n`);
    },
  );

  // --- check
  common(
    authz
      .command("check")
      .description("May you (or --user) perform an operation? Exit 0 when allowed, 1 when denied")
      .argument("<operation>", "e.g. vm.start (see palisade authz operations)")
      .option("--vm <name>", "on this VM (its scope applies)")
      .option("--scope <scope>", "on an object in this scope")
      .option("--user <name>", "ask for another user (needs authz.read)"),
  ).action(async (operation: string, flags: Flags & { vm?: string; scope?: string; user?: string }) => {
    const result = await serviceClient(flags.connect).call<{
      allowed: boolean;
      reason: string;
      user: string;
    }>("POST", "/v1/authz/check", {
      operation,
      ...(flags.vm === undefined ? {} : { vm: flags.vm }),
      ...(flags.scope === undefined ? {} : { scope: flags.scope }),
      ...(flags.user === undefined ? {} : { user: flags.user }),
    });
    if (flags.json === true) printJson(result);
    else process.stdout.write(`${result.allowed ? "allowed" : "denied"}: ${result.reason}\n`);
    if (!result.allowed) process.exitCode = 1;
  });
}
