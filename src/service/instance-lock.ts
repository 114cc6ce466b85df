/**
 * One service per data dir: an exclusive `flock` on `<data-dir>/service.lock`, holding the
 * owner's pid for the error message of the next one.
 */
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import { ServiceStartError } from "./errors.js";
import { tryLockExclusive } from "./libc.js";

/** A held lock; `release()` closes the file, which drops the lock. */
export interface InstanceLock {
  release(): void;
}

/**
 * Takes the data dir's lock.
 *
 * @throws {ServiceStartError} `service.locked` when another service holds it
 */
export function acquireInstanceLock(lockPath: string, dataDir: string): InstanceLock {
  const fd = openSync(lockPath, "a+", 0o600);
  let locked = false;
  try {
    locked = tryLockExclusive(fd);
  } finally {
    if (!locked) closeSync(fd);
  }
  if (!locked) {
    let holder = "";
    try {
      const pid = readFileSync(lockPath, "utf8").trim();
      if (/^\d+$/.test(pid)) holder = ` (pid ${pid})`;
    } catch {
      // The pid is a courtesy; the lock itself is what counts.
    }
    throw new ServiceStartError(
      `Another palisade service${holder} is already running on data dir ${dataDir}; stop it or use another --data-dir`,
      "service.locked",
    );
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  let released = false;
  return {
    release(): void {
      if (released) return;
      released = true;
      closeSync(fd);
    },
  };
}
