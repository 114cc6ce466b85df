/**
 * Runs the host tools the image builder drives (apt-get, apt-cache, dpkg-deb, ldd, xz,
 * zstd) and turns "not installed" into a HostError that says which package to install.
 */
import { spawn } from "node:child_process";
import { HostError } from "../util/errors.js";

/** What a finished command left behind. */
export interface CommandResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Debian package that provides each tool, for the "install it" message. */
const PACKAGE_OF: Readonly<Record<string, string>> = {
  "apt-get": "apt",
  "apt-cache": "apt",
  "dpkg-deb": "dpkg",
  ldd: "libc-bin",
  xz: "xz-utils",
  lz4: "lz4",
  zstd: "zstd",
};

export interface RunOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Kills the command (SIGKILL) after this long; the result then has `signal` set. */
  readonly timeoutMs?: number;
}

/**
 * Runs `file args…` without a shell and collects its output.
 *
 * @throws {HostError} (`host.missing`) when the tool is not installed, naming its package.
 */
export function runCommand(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: { ...(options.env ?? process.env), LC_ALL: "C" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => child.kill("SIGKILL"), options.timeoutMs);
    child.on("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (error.code === "ENOENT") {
        const pkg = PACKAGE_OF[file] ?? file;
        reject(
          new HostError(
            `${file} is not installed; the image builder needs it: apt-get install ${pkg}`,
            "host.missing",
            { cause: error },
          ),
        );
      } else {
        reject(new HostError(`Cannot run ${file}: ${error.message}`, "host.exec", { cause: error }));
      }
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(stdout),
        stderr: Buffer.concat(stderr).toString("utf8"),
      });
    });
  });
}

/** The last non-empty lines of a command's stderr, for one-line error messages. */
export function stderrSummary(stderr: string, lines = 2): string {
  return stderr
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("W: Download is performed unsandboxed"))
    .slice(-lines)
    .join(" / ");
}
