/**
 * The edge that runs iproute2, nftables, tc and friends, optionally inside a network
 * namespace (`ip netns exec NS …`), so that tests and benchmarks drive real kernel
 * objects without touching the host's own interfaces.
 */
import { execFile } from "node:child_process";
import { HostError } from "../util/errors.js";

/** Where switch operations happen: the current network namespace, or a named one. */
export interface NetnsOptions {
  /** A namespace from `ip netns list`; unset: the caller's own namespace. */
  readonly netns?: string | undefined;
}

/** Outcome of a command that was allowed to fail. */
export interface CommandOutcome {
  readonly ok: boolean;
  readonly stdout: string;
  readonly stderr: string;
}

const COMMAND_TIMEOUT_MS = 30_000;

/** Runs host networking commands, in a namespace when one is given. */
export class HostCommands {
  readonly netns: string | undefined;

  constructor(options: NetnsOptions = {}) {
    this.netns = options.netns;
  }

  /** The argv actually run for `argv`, with the namespace prefix. */
  argv(argv: readonly string[]): string[] {
    return this.netns === undefined ? [...argv] : ["ip", "netns", "exec", this.netns, ...argv];
  }

  /** Runs a command; never throws for a non-zero exit. */
  async tryRun(argv: readonly string[], input?: string): Promise<CommandOutcome> {
    const [file, ...args] = this.argv(argv);
    if (file === undefined) return { ok: false, stdout: "", stderr: "empty command" };
    return new Promise((resolve) => {
      const child = execFile(file, args, { timeout: COMMAND_TIMEOUT_MS, maxBuffer: 256 * 1024 * 1024, encoding: "utf8" }, (error, stdout, stderr) => {
        const missing = error !== null && (error as NodeJS.ErrnoException).code === "ENOENT";
        resolve({ ok: error === null, stdout, stderr: missing ? `${file}: command not found` : stderr });
      });
      if (input !== undefined) child.stdin?.end(input);
    });
  }

  /**
   * Runs a command and returns its stdout.
   * @throws {HostError} `network.command-failed` with the command and its first error line.
   */
  async run(argv: readonly string[], input?: string): Promise<string> {
    const outcome = await this.tryRun(argv, input);
    if (!outcome.ok) {
      const reason = outcome.stderr.split("\n").find((line) => line.trim() !== "") ?? "failed";
      throw new HostError(`Command "${argv.slice(0, 4).join(" ")}" failed: ${reason.trim()}`, "network.command-failed");
    }
    return outcome.stdout;
  }

  /**
   * Runs `ip -j …` and parses its JSON output (empty output is an empty list).
   * @throws {HostError} `network.command-failed`.
   */
  async ipJson(args: readonly string[]): Promise<unknown> {
    const stdout = await this.run(["ip", "-j", ...args]);
    return stdout.trim() === "" ? [] : (JSON.parse(stdout) as unknown);
  }
}

/** One interface as `ip -j link show` describes it (the fields Palisade reads). */
export interface LinkInfo {
  readonly ifname: string;
  readonly master?: string;
  readonly address?: string;
  readonly operstate?: string;
  readonly linkKind?: string;
  readonly flags: readonly string[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/** Parses `ip -j -d link show` output into {@link LinkInfo}s; pure. */
export function parseLinks(json: unknown): LinkInfo[] {
  if (!Array.isArray(json)) return [];
  return json.filter(isRecord).flatMap((entry) => {
    if (typeof entry.ifname !== "string") return [];
    const linkinfo = isRecord(entry.linkinfo) ? entry.linkinfo : {};
    return [
      {
        ifname: entry.ifname,
        ...(typeof entry.master === "string" ? { master: entry.master } : {}),
        ...(typeof entry.address === "string" ? { address: entry.address } : {}),
        ...(typeof entry.operstate === "string" ? { operstate: entry.operstate } : {}),
        ...(typeof linkinfo.info_kind === "string" ? { linkKind: linkinfo.info_kind } : {}),
        flags: Array.isArray(entry.flags) ? entry.flags.filter((flag): flag is string => typeof flag === "string") : [],
      },
    ];
  });
}

/** The interfaces that hold a default route (IPv4 or IPv6), from `ip -j route` output; pure. */
export function defaultRouteDevices(...routeLists: unknown[]): string[] {
  const devices = new Set<string>();
  for (const list of routeLists) {
    if (!Array.isArray(list)) continue;
    for (const route of list.filter(isRecord)) {
      if (route.dst === "default" && typeof route.dev === "string") devices.add(route.dev);
    }
  }
  return [...devices];
}
