/**
 * WAL checkpoints off the request path. SQLite's automatic checkpoint runs inside the
 * commit that crosses the threshold and fsyncs the database; on a busy disk that stalled
 * requests for seconds (measured: a 2.2 s p99 in `npm run bench -- api`). The service
 * turns it off (`wal_autocheckpoint = 0`) and a worker thread with its own connection
 * checkpoints every interval instead (PASSIVE: it never blocks the writer).
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driver);
const db = new Database(workerData.path);
db.pragma("busy_timeout = 5000");
const timer = setInterval(() => {
  try { db.pragma("wal_checkpoint(PASSIVE)"); } catch (error) { parentPort.postMessage(String(error)); }
}, workerData.intervalMs);
parentPort.on("message", () => { clearInterval(timer); try { db.pragma("wal_checkpoint(PASSIVE)"); } catch {} db.close(); parentPort.close(); });
`;

/** A running checkpointer; `stop()` runs a last checkpoint and ends the thread. */
export interface Checkpointer {
  stop(): Promise<void>;
}

/** Starts checkpointing the database at `path` every `intervalMs`. */
export function startCheckpointer(path: string, intervalMs = 1000): Checkpointer {
  const driver = createRequire(import.meta.url).resolve("better-sqlite3");
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path, intervalMs, driver } });
  worker.on("message", (message: unknown) => {
    process.stderr.write(`palisade service: WAL checkpoint failed: ${String(message)}\n`);
  });
  worker.unref();
  let stopped: Promise<void> | undefined;
  return {
    stop(): Promise<void> {
      stopped ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          void worker.terminate().then(() => {
            resolve();
          });
        }, 5000);
        worker.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
        worker.postMessage("stop");
      });
      return stopped;
    },
  };
}
