/**
 * `palisade run` flags → a VmSpec input. Pure: each parser names the flag and the key
 * that is wrong, so a user sees `--disk: unknown key "fromat" (keys: path, format, readonly)`.
 */
import { ConfigError } from "../util/errors.js";
import { parseByteSize } from "../util/byte-size.js";
import { DISK_FORMATS, type DiskFormat } from "../engine/index.js";

/** Splits `a=1,b,c=x` into ordered key/value pairs (a bare word has value null). */
export function parseKeyValues(text: string, flag: string): [string, string | null][] {
  if (text.trim() === "") throw new ConfigError(`${flag}: empty value`, "config.bad-flag");
  return text.split(",").map((part) => {
    const eq = part.indexOf("=");
    const key = (eq < 0 ? part : part.slice(0, eq)).trim();
    if (key === "") throw new ConfigError(`${flag}: empty key in "${text}"`, "config.bad-flag");
    return [key, eq < 0 ? null : part.slice(eq + 1)];
  });
}

function formatFromExtension(path: string): DiskFormat {
  if (/\.vhdx$/i.test(path)) return "vhdx";
  if (/\.vhd$/i.test(path)) return "vpc";
  if (/\.qcow2$/i.test(path)) return "qcow2";
  return "raw";
}

export interface DiskFlag {
  path: string;
  format: DiskFormat;
  readonly: boolean;
}

/** `--disk path=IMG[,format=raw|qcow2|vpc|vhdx][,readonly]`; the format defaults from the extension. */
export function parseDiskFlag(text: string): DiskFlag {
  let path: string | undefined;
  let format: DiskFormat | undefined;
  let readonly = false;
  for (const [key, value] of parseKeyValues(text, "--disk")) {
    switch (key) {
      case "path":
        if (value === null || value === "") throw new ConfigError(`--disk: key "path" needs a value`, "config.bad-flag");
        path = value;
        break;
      case "format":
        if (!DISK_FORMATS.includes(value as DiskFormat)) {
          throw new ConfigError(`--disk: format "${value ?? ""}" is unknown (formats: ${DISK_FORMATS.join(", ")})`, "config.bad-flag");
        }
        format = value as DiskFormat;
        break;
      case "readonly":
        if (value !== null && value !== "on" && value !== "off") {
          throw new ConfigError(`--disk: readonly takes no value, or on/off, not "${value}"`, "config.bad-flag");
        }
        readonly = value !== "off";
        break;
      default:
        throw new ConfigError(`--disk: unknown key "${key}" (keys: path, format, readonly)`, "config.bad-flag");
    }
  }
  if (path === undefined) throw new ConfigError(`--disk: key "path" is missing in "${text}"`, "config.bad-flag");
  return { path, format: format ?? formatFromExtension(path), readonly };
}

export type NetFlag =
  | { kind: "user"; hostfwd: string[]; mac?: string }
  | { kind: "switch"; switch: string; mac?: string; vlan?: number };

/** `--net user[,hostfwd=tcp::2222-:22]…[,mac=M]` or `--net switch=NAME[,mac=M][,vlan=N]`. */
export function parseNetFlag(text: string): NetFlag {
  const pairs = parseKeyValues(text, "--net");
  const [first] = pairs;
  if (first === undefined) throw new ConfigError("--net: empty value", "config.bad-flag");
  const [kind, kindValue] = first;
  if (kind === "user" && kindValue === null) {
    const hostfwd: string[] = [];
    let mac: string | undefined;
    for (const [key, value] of pairs.slice(1)) {
      if (key === "hostfwd" && value !== null) hostfwd.push(value);
      else if (key === "mac" && value !== null) mac = value;
      else throw new ConfigError(`--net user: unknown key "${key}" (keys: hostfwd, mac)`, "config.bad-flag");
    }
    return { kind: "user", hostfwd, ...(mac === undefined ? {} : { mac }) };
  }
  if (kind === "switch") {
    if (kindValue === null || kindValue === "") throw new ConfigError(`--net: switch needs a name (switch=NAME)`, "config.bad-flag");
    const nic: NetFlag = { kind: "switch", switch: kindValue };
    for (const [key, value] of pairs.slice(1)) {
      if (key === "mac" && value !== null) nic.mac = value;
      else if (key === "vlan" && value !== null && /^\d{1,4}$/.test(value)) nic.vlan = Number(value);
      else throw new ConfigError(`--net switch: bad key "${key}"${value === null ? "" : `=${value}`} (keys: mac, vlan=1-4094)`, "config.bad-flag");
    }
    return nic;
  }
  throw new ConfigError(`--net: unknown network "${kind}" (use user[,hostfwd=…] or switch=NAME)`, "config.bad-flag");
}

export type ConsoleFlag = { kind: "stdio" } | { kind: "socket"; path: string } | { kind: "none" };

/** `--console stdio|socket:PATH|none`. */
export function parseConsoleFlag(text: string): ConsoleFlag {
  if (text === "stdio" || text === "none") return { kind: text };
  if (text.startsWith("socket:") && text.length > "socket:".length) return { kind: "socket", path: text.slice("socket:".length) };
  throw new ConfigError(`--console: "${text}" is not stdio, socket:PATH or none`, "config.bad-flag");
}

export type EventsFlag = { kind: "stderr" } | { kind: "json"; path: string };

/** `--events json:PATH|stderr`. */
export function parseEventsFlag(text: string): EventsFlag {
  if (text === "stderr") return { kind: "stderr" };
  if (text.startsWith("json:") && text.length > "json:".length) return { kind: "json", path: text.slice("json:".length) };
  throw new ConfigError(`--events: "${text}" is not json:PATH or stderr`, "config.bad-flag");
}

/** `--memory 512M` → MiB; a whole number of MiB. */
export function parseMemoryFlag(text: string): number {
  const bytes = parseByteSize(text, "--memory");
  if (bytes % (1n << 20n) !== 0n) throw new ConfigError(`--memory: ${text} is not a whole number of MiB`, "config.bad-size");
  const mib = bytes >> 20n;
  if (mib > 1n << 30n) throw new ConfigError(`--memory: ${text} is absurdly large`, "config.bad-size");
  return Number(mib);
}

/** `--cpus N` → an integer (range checked by the spec). */
export function parseCpusFlag(text: string): number {
  if (!/^\d{1,6}$/.test(text.trim())) throw new ConfigError(`--cpus: "${text}" is not a whole number`, "config.bad-flag");
  return Number(text.trim());
}

/** `--boot-timeout 60` (seconds) → ms. */
export function parseSecondsFlag(text: string, flag: string): number {
  if (!/^\d{1,7}(\.\d{1,3})?$/.test(text.trim())) throw new ConfigError(`${flag}: "${text}" is not a number of seconds`, "config.bad-flag");
  return Math.round(Number(text.trim()) * 1000);
}
