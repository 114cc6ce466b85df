/**
 * Parsing `--listen` / `--connect` values: `unix:PATH` or `tcp://HOST:PORT`.
 */
import { isAbsolute, resolve } from "node:path";
import { ConfigError } from "../util/errors.js";
import type { ListenAddress } from "./paths.js";

/**
 * Parses a listen address. A bare path is taken as `unix:PATH`.
 *
 * @throws {ConfigError} `service.bad-address` for anything else
 * @example
 * parseListenAddress("unix:/run/palisade/service.sock"); // { kind: "unix", path: "/run/palisade/service.sock" }
 */
export function parseListenAddress(value: string): ListenAddress {
  if (value.startsWith("tcp://")) {
    const match = /^tcp:\/\/(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(value);
    const port = Number(match?.[2]);
    if (match?.[1] === undefined || !(port > 0 && port < 65536)) {
      throw new ConfigError(`Bad address ${value}: expected tcp://HOST:PORT`, "service.bad-address");
    }
    return { kind: "tcp", host: match[1], port };
  }
  const path = value.startsWith("unix:") ? value.slice("unix:".length) : value;
  if (path === "" || path.includes("\0") || !(isAbsolute(path) || value.startsWith("unix:"))) {
    throw new ConfigError(
      `Bad address ${value}: expected unix:PATH or tcp://HOST:PORT`,
      "service.bad-address",
    );
  }
  // Linux limits sun_path to 108 bytes, NUL included.
  const absolute = resolve(path);
  if (Buffer.byteLength(absolute) > 107) {
    throw new ConfigError(`Socket path ${absolute} is longer than 107 bytes`, "service.bad-address");
  }
  return { kind: "unix", path: absolute };
}
