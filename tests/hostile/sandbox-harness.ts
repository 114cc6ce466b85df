/**
 * Real worker jails for the hostile sandbox tests, with a shell (static busybox) or the
 * static `jail-probe` in QEMU's place: same uid, namespaces, root, seccomp, cgroups and
 * rlimits as a QEMU worker gets from `jailArgv()` (both go through `jailCommandArgv()`).
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before } from "node:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  allocateUid,
  jailCommandArgv,
  markInheritedFdsCloseOnExec,
  prepareJail,
  prepareRuntimeTree,
  probeSandboxHost,
  readWorkerStatus,
  releaseUid,
  type JailSpec,
  type PreparedJail,
  type SandboxHostFacts,
  type WorkerStatus,
} from "../../src/sandbox/index.js";
import { parseVmSpec, planVm, probeHost, type HostFacts } from "../../src/engine/index.js";
import { ensureDefaultImage } from "../../src/image/index.js";

export const BUSYBOX = "/usr/bin/busybox";
export const QEMU = "/usr/bin/qemu-system-x86_64";

/** Why the hostile sandbox tests cannot run here, or null when they can. */
export function skipReason(): string | null {
  if (process.getuid?.() !== 0) return "needs root: the worker jail drops from root to a per-VM uid";
  for (const program of ["/usr/bin/bwrap", "/usr/bin/setpriv", BUSYBOX, QEMU, "/usr/bin/gcc"]) {
    if (!existsSync(program)) return `needs ${program} (npm install installs it)`;
  }
  return null;
}

/** One test run's world: a state dir (uid pool), a fake service data dir and jails. */
export class JailWorld {
  readonly root: string;
  readonly host: SandboxHostFacts;
  readonly probe: string;
  /** Stands for /var/lib/palisade: the service's data, which no jail may read. */
  readonly serviceDataDir: string;
  /** The default image's kernel, bound into jails made `withKernel` (QEMU loads it even under -S). */
  readonly kernelPath: string;
  readonly #jails: TestJail[] = [];
  #engineHost: HostFacts | null = null;

  private constructor(root: string, host: SandboxHostFacts, probe: string, kernelPath: string) {
    this.root = root;
    this.host = host;
    this.probe = probe;
    this.kernelPath = kernelPath;
    this.serviceDataDir = join(root, "data");
    mkdirSync(this.serviceDataDir, { mode: 0o700 });
    writeFileSync(join(this.serviceDataDir, "palisade.sqlite"), "service secret\n", { mode: 0o600 });
  }

  /** A world whose jails use a runtime tree (the production path) holding busybox too. */
  static async create(): Promise<JailWorld> {
    markInheritedFdsCloseOnExec();
    const root = mkdtempSync(join(tmpdir(), "palisade-hostile-"));
    chmodSync(root, 0o755);
    const probe = join(root, "jail-probe");
    const source = join(
      dirname(fileURLToPath(import.meta.url)),
      "..",
      "..",
      "..",
      "tests",
      "hostile",
      "jail-probe.c",
    );
    execFileSync("gcc", ["-static", "-O1", "-o", probe, source], { timeout: 120_000 });
    const host = await prepareRuntimeTree(probeSandboxHost(QEMU), QEMU, join(root, "runtime"), [BUSYBOX]);
    return new JailWorld(root, host, probe, (await ensureDefaultImage()).kernelPath);
  }

  /**
   * The engine's QEMU command line (`planVm`, as `palisade run` has it) for a small TCG
   * microvm of the default kernel whose run directory is `jail`'s, plus `extra` (e.g. `-S`,
   * stopped before its first instruction). QMP is at `<runDir>/qmp.sock`.
   */
  engineQemuArgs(jail: TestJail, extra: readonly string[] = ["-S"]): string[] {
    if (!jail.spec.binds.some((bind) => bind.hostPath === this.kernelPath)) throw new Error(`jail ${jail.spec.vmId} was not made withKernel`);
    this.#engineHost ??= probeHost();
    const spec = parseVmSpec({ name: jail.spec.vmId, uuid: randomUUID(), kernel: this.kernelPath, memoryMiB: 64, vcpus: 1, accel: "tcg", machine: "microvm" });
    return [...planVm(spec, this.#engineHost, join(this.root, "vms"), [], jail.spec.runDir).argv, ...extra];
  }

  /** A prepared jail for VM `vmId` with a read-only and a writable disk holding `secret`. */
  async jail(
    vmId: string,
    options: {
      limits?: Partial<JailSpec["limits"]>;
      shareHostNetwork?: boolean;
      extraBinds?: JailSpec["binds"];
      /** Bind the default kernel read-only (for `engineQemuArgs`). */
      withKernel?: boolean;
      /** Other host facts than the world's (e.g. another cgroup layout). */
      host?: SandboxHostFacts;
    } = {},
  ): Promise<TestJail> {
    const uid = await allocateUid(vmId, join(this.root, "state"));
    const vmDir = join(this.root, "vms", vmId);
    mkdirSync(vmDir, { recursive: true, mode: 0o700 });
    const secret = randomBytes(32).toString("hex");
    const readonlyDisk = join(vmDir, "base.raw");
    const writableDisk = join(vmDir, "data.raw");
    writeFileSync(readonlyDisk, `ro ${secret}\n`, { mode: 0o600 });
    writeFileSync(writableDisk, `rw ${secret}\n`, { mode: 0o600 });
    const spec: JailSpec = {
      vmId,
      uid,
      gid: uid,
      runDir: join(vmDir, "run"),
      binds: [
        { hostPath: readonlyDisk, readonly: true },
        { hostPath: writableDisk, readonly: false },
        { hostPath: this.probe, readonly: true },
        ...(options.withKernel === true ? [{ hostPath: this.kernelPath, readonly: true }] : []),
        ...(options.extraBinds ?? []),
      ],
      devices: [],
      shareHostNetwork: options.shareHostNetwork ?? false,
      limits: {
        memoryBytes: 96n * 1024n * 1024n,
        pids: 32,
        openFiles: 128,
        cpuPercent: 100,
        ...options.limits,
      },
      qemuBinary: QEMU,
    };
    const host = options.host ?? this.host;
    const prepared = await prepareJail(spec, host);
    const jail = new TestJail(this, spec, host, prepared, secret, readonlyDisk, writableDisk);
    this.#jails.push(jail);
    return jail;
  }

  async dispose(): Promise<void> {
    for (const jail of this.#jails) await jail.dispose();
    rmSync(this.root, { recursive: true, force: true });
  }
}

/**
 * Registers this file's `before`/`after` hooks for one JailWorld (none when the tests are
 * skipped) and returns its getter.
 */
export function useJailWorld(): () => JailWorld {
  let world: JailWorld | null = null;
  before(async () => {
    if (skipReason() === null) world = await JailWorld.create();
  });
  after(async () => {
    await world?.dispose();
  });
  return () => {
    if (world === null) throw new Error("the JailWorld is made in before(): use it inside a test");
    return world;
  };
}

/** The result of a command run in a jail. */
export interface JailRun {
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export class TestJail {
  readonly world: JailWorld;
  readonly spec: JailSpec;
  readonly host: SandboxHostFacts;
  readonly secret: string;
  readonly readonlyDisk: string;
  readonly writableDisk: string;
  readonly #prepared: PreparedJail;
  readonly #background: { pid: number; kill(): void }[] = [];

  constructor(
    world: JailWorld,
    spec: JailSpec,
    host: SandboxHostFacts,
    prepared: PreparedJail,
    secret: string,
    readonlyDisk: string,
    writableDisk: string,
  ) {
    this.world = world;
    this.spec = spec;
    this.host = host;
    this.#prepared = prepared;
    this.secret = secret;
    this.readonlyDisk = readonlyDisk;
    this.writableDisk = writableDisk;
  }

  /** The argv of `command` in this jail (busybox is bound in as the command's program). */
  argv(command: readonly string[]): string[] {
    return jailCommandArgv(this.spec, command, this.host);
  }

  /** Runs a busybox shell script in the jail and waits (at most `timeoutMs`). */
  sh(script: string, timeoutMs = 20_000): JailRun {
    return this.run([BUSYBOX, "sh", "-c", script], timeoutMs);
  }

  /** Runs the static probe in the jail. */
  probe(...args: string[]): string {
    return this.run([this.world.probe, ...args]).stdout.trim();
  }

  run(command: readonly string[], timeoutMs = 20_000): JailRun {
    const argv = this.argv(command);
    const result = spawnSync(argv[0] ?? "", argv.slice(1), {
      env: {},
      encoding: "utf8",
      timeout: timeoutMs,
      stdio: ["ignore", "pipe", "pipe"],
    });
    return { status: result.status, signal: result.signal, stdout: result.stdout, stderr: result.stderr };
  }

  /**
   * Starts a shell script in the jail in the background, as a detached worker, and waits
   * until bwrap reports its host pid (`--json-status-fd`).
   */
  async start(script: string): Promise<{ pid: number }> {
    const argv = this.argv([BUSYBOX, "sh", "-c", script]);
    // One status file per worker run: earlier runs in this jail appended theirs.
    writeFileSync(join(this.spec.runDir, ".jail", "worker-status.json"), "");
    const child = spawn(argv[0] ?? "", argv.slice(1), { env: {}, stdio: "ignore", detached: true });
    child.unref();
    const status = await this.waitStatus((s) => s.childPid !== undefined, 10_000);
    const pid = status.childPid ?? 0;
    // bwrap reports the pid before its pid 1 has become setpriv, and setpriv drops its
    // privileges step by step: wait until the worker's own program runs (comm changes on exec).
    const deadline = Date.now() + 10_000;
    while (readFileSync(`/proc/${pid}/comm`, "utf8").trim() !== "busybox") {
      if (Date.now() > deadline) throw new Error(`jail ${this.spec.vmId}: pid ${pid} never became busybox`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    this.#background.push({
      pid,
      kill: () => {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // Gone already.
        }
      },
    });
    return { pid };
  }

  /** Polls the jail's status file until `done` holds (at most `timeoutMs`). */
  async waitStatus(done: (status: WorkerStatus) => boolean, timeoutMs: number): Promise<WorkerStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const status = await readWorkerStatus(this.spec.runDir);
      if (done(status)) return status;
      if (Date.now() > deadline)
        throw new Error(
          `jail ${this.spec.vmId}: status not reached in ${timeoutMs} ms: ${JSON.stringify(status)}`,
        );
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** The host's view of the jail's status file. */
  statusText(): string {
    return readFileSync(join(this.spec.runDir, ".jail", "worker-status.json"), "utf8");
  }

  async dispose(): Promise<void> {
    for (const process of this.#background) process.kill();
    await this.#prepared.cleanup();
    await releaseUid(this.spec.vmId, join(this.world.root, "state"));
  }
}
