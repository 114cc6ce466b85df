/**
 * A real guest for integration tests, booted through the real CLI (`palisade run`) with
 * its console on pipes: what a user runs, driven like a user types.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_GUEST_APPEND, ensureDefaultImage } from "../../src/image/index.js";

const here = dirname(fileURLToPath(import.meta.url));
/** The compiled CLI next to this compiled harness. */
/** The shipped CLI: the bundle `npm run build` makes (scripts/bundle.mjs). */
export const CLI = resolve(here, "..", "..", "bin", "palisade.cjs");
export const READY = "PALISADE-READY";
/** The guest shell's prompt (root, busybox ash). */
export const PROMPT = "# ";
/** Generous: the 2-core machines we test on may be busy; a boot takes ~2 s when idle. */
export const BOOT_TIMEOUT_MS = 90_000;

export interface TestVmOptions {
  readonly memory?: string;
  readonly cpus?: number;
  readonly disks?: readonly string[];
  readonly nets?: readonly string[];
  readonly append?: string;
  readonly extraArgs?: readonly string[];
  /** Wait for the ready marker before returning (default true). */
  readonly waitReady?: boolean;
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

let image: Promise<{ kernelPath: string; initrdPath: string }> | null = null;

/** The default guest image, built once per test process (downloads are cached). */
export function defaultImage(): Promise<{ kernelPath: string; initrdPath: string }> {
  image ??= ensureDefaultImage();
  return image;
}

/** Runs the CLI to completion; for bad-input tests. */
export async function runCli(args: readonly string[], timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => {
    child.kill("SIGKILL");
  }, timeoutMs);
  const code = await new Promise<number | null>((done) => child.on("exit", (exitCode) => { done(exitCode); }));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

export class TestVm {
  readonly name: string;
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  readonly runRoot: string;
  #output = "";
  #stderr = "";
  #consumed = 0;
  #commands = 0;
  #waiters = new Set<() => void>();

  private constructor(name: string, child: ChildProcess, runRoot: string) {
    this.name = name;
    this.child = child;
    this.runRoot = runRoot;
    child.stdout?.on("data", (chunk: Buffer) => {
      this.#output += chunk.toString("latin1").replace(/\r/g, "");
      for (const wake of this.#waiters) wake();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      this.#stderr += chunk.toString();
    });
    this.exited = new Promise((done) => {
      child.on("exit", (code, signal) => {
        done({ code, signal });
        for (const wake of this.#waiters) wake();
      });
    });
  }

  static async start(options: TestVmOptions = {}): Promise<TestVm> {
    const { kernelPath, initrdPath } = await defaultImage();
    const name = `t${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    const runRoot = mkdtempSync(join(tmpdir(), "palisade-test-run-"));
    const args = [
      "run",
      "--name", name,
      "--kernel", kernelPath,
      "--initrd", initrdPath,
      "--memory", options.memory ?? "256M",
      "--cpus", String(options.cpus ?? 1),
      "--append", options.append ?? DEFAULT_GUEST_APPEND,
      "--ready-marker", READY,
      "--boot-timeout", String(BOOT_TIMEOUT_MS / 1000),
      "--run-dir", runRoot,
      ...(options.disks ?? []).flatMap((disk) => ["--disk", disk]),
      ...(options.nets ?? []).flatMap((net) => ["--net", net]),
      ...(options.extraArgs ?? []),
    ];
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["pipe", "pipe", "pipe"] });
    const vm = new TestVm(name, child, runRoot);
    if (options.waitReady !== false) await vm.waitReady();
    return vm;
  }

  /**
   * Waits for the ready marker and then the shell's prompt: bytes typed before the shell
   * has set up the terminal are lost, as on real hardware.
   */
  async waitReady(timeoutMs = BOOT_TIMEOUT_MS): Promise<void> {
    await this.waitFor(READY, timeoutMs);
    await this.waitFor(PROMPT, timeoutMs);
  }

  /** Everything the console printed so far (\r removed). */
  get output(): string {
    return this.#output;
  }

  /** What `palisade run` printed on stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Waits until the console shows `pattern` after what earlier waits consumed. */
  async waitFor(pattern: string | RegExp, timeoutMs: number): Promise<RegExpExecArray | string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rest = this.#output.slice(this.#consumed);
      if (typeof pattern === "string") {
        const at = rest.indexOf(pattern);
        if (at >= 0) {
          this.#consumed += at + pattern.length;
          return pattern;
        }
      } else {
        const match = pattern.exec(rest);
        if (match !== null) {
          this.#consumed += match.index + match[0].length;
          return match;
        }
      }
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`VM ${this.name} exited (${this.child.exitCode ?? this.child.signalCode}) before showing ${String(pattern)}; stderr: ${this.#stderr}\nconsole:\n${this.#output.slice(-2000)}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`VM ${this.name}: ${String(pattern)} not seen within ${timeoutMs} ms; console:\n${this.#output.slice(-2000)}`);
      await new Promise<void>((wake) => {
        const timer = setTimeout(wake, Math.min(left, 1000));
        this.#waiters.add(() => {
          clearTimeout(timer);
          wake();
        });
      });
      this.#waiters.clear();
    }
  }

  /** Types a command in the guest shell; returns its output and exit status. */
  async exec(command: string, timeoutMs = 60_000): Promise<{ stdout: string; status: number }> {
    const id = ++this.#commands;
    const begin = `@@B${id}@@`;
    const end = `@@E${id}`;
    // The markers are split in the typed text so the shell's echo of it never matches.
    this.send(`echo @@B${id}''@@; ${command}; echo ${end}''=$?@@\n`);
    await this.waitFor(`${begin}\n`, timeoutMs);
    const start = this.#consumed;
    const match = (await this.waitFor(new RegExp(`${end}=(\\d+)@@`), timeoutMs)) as RegExpExecArray;
    const stdout = this.#output.slice(start, this.#consumed - match[0].length);
    return { stdout, status: Number(match[1]) };
  }

  send(text: string): void {
    this.child.stdin?.write(text);
  }

  /** Types `poweroff` and waits for `palisade run` to end. */
  async powerOff(timeoutMs = 60_000): Promise<Exit> {
    this.send("poweroff\n");
    return this.waitExit(timeoutMs);
  }

  async waitExit(timeoutMs: number): Promise<Exit> {
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  /** Kills `palisade run` (its worker dies with it) and removes the run root. */
  async dispose(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
    rmSync(this.runRoot, { recursive: true, force: true });
  }
}
