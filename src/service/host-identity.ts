/**
 * Who a uid is on this host: the user name and every group, from /etc/passwd and
 * /etc/group (the files the kernel's uid refers to), re-read when they change.
 */
import { readFileSync, statSync } from "node:fs";
import type { Principal } from "../authz/index.js";

/** One line of /etc/passwd. */
export interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

/** One line of /etc/group. */
export interface GroupEntry {
  readonly name: string;
  readonly gid: number;
  readonly members: readonly string[];
}

/** Parses /etc/passwd text; malformed lines are skipped. */
export function parsePasswd(text: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(":");
    if (fields.length < 7 || line.startsWith("#")) continue;
    const [name = "", , uid = "", gid = ""] = fields;
    if (name === "" || !/^\d+$/.test(uid) || !/^\d+$/.test(gid)) continue;
    entries.push({ name, uid: Number(uid), gid: Number(gid) });
  }
  return entries;
}

/** Parses /etc/group text; malformed lines are skipped. */
export function parseGroup(text: string): GroupEntry[] {
  const entries: GroupEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(":");
    if (fields.length < 4 || line.startsWith("#")) continue;
    const [name = "", , gid = "", members = ""] = fields;
    if (name === "" || !/^\d+$/.test(gid)) continue;
    entries.push({
      name,
      gid: Number(gid),
      members: members === "" ? [] : members.split(",").filter((m) => m !== ""),
    });
  }
  return entries;
}

/**
 * The principal for a uid: its name and groups (primary first). A uid the host does not
 * know is `#<uid>` with no groups: it can match no assignment but a uid-named one.
 */
export function principalFor(
  uid: number,
  passwd: readonly PasswdEntry[],
  groups: readonly GroupEntry[],
): Principal {
  const user = passwd.find((p) => p.uid === uid);
  if (user === undefined) return { uid, user: `#${uid}`, groups: [] };
  const names: string[] = [];
  const primary = groups.find((g) => g.gid === user.gid);
  if (primary !== undefined) names.push(primary.name);
  for (const g of groups) {
    if (g !== primary && g.members.includes(user.name)) names.push(g.name);
  }
  return { uid, user: user.name, groups: names };
}

/** Reads the host's user database, cached; stats the files at most once per `recheckMs`. */
export class HostUsers {
  readonly #passwdPath: string;
  readonly #groupPath: string;
  readonly #recheckMs: number;
  #checkedAt = -Infinity;
  #stamp = "";
  #passwd: PasswdEntry[] = [];
  #groups: GroupEntry[] = [];
  #byUid = new Map<number, Principal>();

  constructor(options: { passwdPath?: string; groupPath?: string; recheckMs?: number } = {}) {
    this.#passwdPath = options.passwdPath ?? "/etc/passwd";
    this.#groupPath = options.groupPath ?? "/etc/group";
    this.#recheckMs = options.recheckMs ?? 1000;
  }

  #refresh(): void {
    const now = performance.now();
    if (now - this.#checkedAt < this.#recheckMs) return;
    this.#checkedAt = now;
    const a = statSync(this.#passwdPath);
    const b = statSync(this.#groupPath);
    const stamp = `${a.mtimeMs}:${a.size}:${a.ino}:${b.mtimeMs}:${b.size}:${b.ino}`;
    if (stamp === this.#stamp) return;
    this.#passwd = parsePasswd(readFileSync(this.#passwdPath, "utf8"));
    this.#groups = parseGroup(readFileSync(this.#groupPath, "utf8"));
    this.#byUid = new Map();
    this.#stamp = stamp;
  }

  /** The principal for a uid given by the kernel. */
  byUid(uid: number): Principal {
    this.#refresh();
    let principal = this.#byUid.get(uid);
    if (principal === undefined) {
      principal = Object.freeze(principalFor(uid, this.#passwd, this.#groups));
      this.#byUid.set(uid, principal);
    }
    return principal;
  }

  /** The group ids of a uid (primary first), for file access checks. */
  gidsOf(uid: number): number[] {
    this.#refresh();
    return gidsFor(uid, this.#passwd, this.#groups);
  }

  /** The principal for a user name, or `undefined` if the host has no such user. */
  byName(name: string): Principal | undefined {
    this.#refresh();
    const entry = this.#passwd.find((p) => p.name === name);
    return entry === undefined ? undefined : this.byUid(entry.uid);
  }
}

/** Group ids of `uid` (primary first) from the parsed user database; empty for an unknown uid. */
export function gidsFor(uid: number, passwd: readonly PasswdEntry[], groups: readonly GroupEntry[]): number[] {
  const user = passwd.find((p) => p.uid === uid);
  if (user === undefined) return [];
  return [user.gid, ...groups.filter((g) => g.gid !== user.gid && g.members.includes(user.name)).map((g) => g.gid)];
}
