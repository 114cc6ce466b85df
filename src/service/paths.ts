/**
 * Where the service keeps its state and listens, by default.
 */
import { homedir } from "node:os";
import { join } from "node:path";

/** The standard socket: every local user's `palisade` connects here unless told otherwise. */
export const DEFAULT_SOCKET_PATH = "/run/palisade/service.sock";

/** The default data dir: `/var/lib/palisade` for root, `~/.local/share/palisade` otherwise. */
export function defaultDataDir(uid: number = process.getuid?.() ?? 0, home: string = homedir()): string {
  return uid === 0 ? "/var/lib/palisade" : join(home, ".local", "share", "palisade");
}

/** The files of a data dir. */
export interface DataDirPaths {
  readonly dataDir: string;
  readonly database: string;
  readonly lock: string;
  /** `<data-dir>/vms/<id>/`: one VM's sockets, logs and sandbox root. */
  readonly vmsDir: string;
}

/** The paths inside `dataDir`. */
export function dataDirPaths(dataDir: string): DataDirPaths {
  return {
    dataDir,
    database: join(dataDir, "palisade.db"),
    lock: join(dataDir, "service.lock"),
    vmsDir: join(dataDir, "vms"),
  };
}

/** What `--listen` asked for. */
export type ListenAddress =
  | { readonly kind: "unix"; readonly path: string }
  | { readonly kind: "tcp"; readonly host: string; readonly port: number };
