/**
 * `palisade audit [--since T] [--vm NAME] [--json] [--verify]`: the service's audit log.
 */
import type { Command } from "commander";
import type { AuditRecord, ChainVerdict } from "../authz/index.js";
import { ConfigError } from "../util/errors.js";
import { CONNECT_HELP, formatTable, printJson, serviceClient } from "./service-client.js";

const PAGE = 1000;

/**
 * `--since` as an ISO time: an ISO date/time, or a duration ago (`90s`, `15m`, `2h`, `7d`).
 *
 * @throws {ConfigError} `config.since`
 */
export function parseSince(text: string, now: Date = new Date()): string {
  const relative = /^(\d{1,9})([smhd])$/.exec(text);
  if (relative !== null) {
    const unitMs = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[relative[2] as "s" | "m" | "h" | "d"];
    return new Date(now.getTime() - Number(relative[1]) * unitMs).toISOString();
  }
  const time = Date.parse(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(time)) {
    throw new ConfigError(
      `--since ${text}: expected an ISO time (2026-01-31T12:00:00Z) or a duration ago (15m, 2h, 7d)`,
      "config.since",
    );
  }
  return new Date(time).toISOString();
}

/** Registers `audit`. */
export function registerAuditCommands(program: Command): void {
  program
    .command("audit")
    .description("Show the audit log (every request and VM state change), or --verify its hash chain")
    .option("--since <time>", "only entries since an ISO time or a duration ago (15m, 2h, 7d)")
    .option("--vm <name>", "only entries about this VM")
    .option("--verify", "check the hash chain; exit 1 when it is broken")
    .option("--connect <address>", CONNECT_HELP)
    .option("--json", "print JSON")
    .action(
      async (flags: { since?: string; vm?: string; verify?: boolean; connect?: string; json?: boolean }) => {
        const client = serviceClient(flags.connect);
        if (flags.verify === true) {
          const verdict = await client.call<ChainVerdict>("GET", "/v1/audit/verify");
          if (flags.json === true) printJson(verdict);
          else if (verdict.ok)
            process.stdout.write(`Audit log intact: ${verdict.count} entries, head ${verdict.headHash}\n`);
          else process.stdout.write(`Audit log BROKEN at entry ${verdict.seq}: ${verdict.problem}\n`);
          if (!verdict.ok) process.exitCode = 1;
          return;
        }
        const since = flags.since === undefined ? undefined : parseSince(flags.since);
        const entries: AuditRecord[] = [];
        let afterSeq = 0;
        for (;;) {
          const query = new URLSearchParams({ limit: String(PAGE), afterSeq: String(afterSeq) });
          if (since !== undefined) query.set("since", since);
          if (flags.vm !== undefined) query.set("vm", flags.vm);
          const page = await client.call<{ entries: AuditRecord[] }>("GET", `/v1/audit?${query.toString()}`);
          entries.push(...page.entries);
          const last = page.entries.at(-1);
          if (page.entries.length < PAGE || last === undefined) break;
          afterSeq = last.seq;
        }
        if (flags.json === true) {
          printJson(entries);
          return;
        }
        process.stdout.write(
          formatTable([
            ["SEQ", "TIME", "PRINCIPAL", "OPERATION", "SCOPE", "VM", "DECISION", "RESULT"],
            ...entries.map((e) => [
              String(e.seq),
              e.time,
              e.principal,
              e.operation,
              e.scope ?? "-",
              e.vm ?? "-",
              e.decision,
              e.result,
            ]),
          ]),
        );
      },
    );
}
