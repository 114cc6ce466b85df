/**
 * Two real guests, each holding a random 64-byte secret in its RAM, each QEMU in its own
 * jail. From inside worker A's own namespaces, as A's uid (what a guest that broke out of
 * QEMU A holds), the secret of B is in no memory A can read — A's whole QEMU process,
 * guest RAM included, is scanned through /proc/1/mem — and in no file; the scan does find
 * A's own secret (the positive control that proves it would see one). And the other way.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { ensureDefaultImage, READY_MARKER, type BuiltImage } from "../../src/image/index.js";
import { compilePolicy, resolvePolicy } from "../../src/policy/index.js";
import { QEMU_SECCOMP_ARGS, jailArgv } from "../../src/sandbox/index.js";
import { JailWorld, skipReason, type TestJail } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
let world: JailWorld;
let image: BuiltImage;

interface Guest {
  readonly jail: TestJail;
  readonly child: ChildProcessWithoutNullStreams;
  readonly secret: string;
  qemuPid: number;
  output: string;
}

before(async () => {
  if (skip !== false) return;
  world = await JailWorld.create();
  image = await ensureDefaultImage();
});

after(async () => {
  if (skip === false) await world.dispose();
});

async function waitForOutput(guest: Guest, marker: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!guest.output.includes(marker)) {
    if (Date.now() > deadline)
      throw new Error(
        `guest ${guest.jail.spec.vmId}: no "${marker}" in ${timeoutMs} ms; console:\n${guest.output.slice(-1500)}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function bootGuest(vmId: string): Promise<Guest> {
  const jail = await world.jail(vmId, {
    limits: { memoryBytes: 448n * 1024n * 1024n, pids: 64 },
    extraBinds: [
      { hostPath: image.kernelPath, readonly: true },
      { hostPath: image.initrdPath, readonly: true },
    ],
  });
  const cpu = compilePolicy(resolvePolicy("locked-down"), { accel: "tcg", hostCpuVendor: "other" }).cpuArg;
  const qemuArgs = [
    "-M",
    "q35",
    "-accel",
    "tcg",
    "-cpu",
    cpu,
    "-m",
    "192",
    "-smp",
    "1",
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-serial",
    "stdio",
    "-kernel",
    image.kernelPath,
    "-initrd",
    image.initrdPath,
    "-append",
    "console=ttyS0 quiet panic=-1 palisade.net=none",
    "-no-reboot",
    ...QEMU_SECCOMP_ARGS,
  ];
  const argv = jailArgv(jail.spec, qemuArgs, world.host);
  const child = spawn(argv[0] ?? "", argv.slice(1), { env: {}, stdio: ["pipe", "pipe", "pipe"] });
  // 64 random bytes, as 128 hex digits (the console carries text).
  const guest: Guest = { jail, child, secret: randomBytes(64).toString("hex"), qemuPid: 0, output: "" };
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    guest.output += chunk;
  });
  guest.qemuPid = (await jail.waitStatus((status) => status.childPid !== undefined, 10_000)).childPid ?? 0;
  return guest;
}

/** Runs `command` inside `guest`'s worker namespaces (mount, pid), as its uid, without capabilities. */
function asWorker(guest: Guest, command: string[]): string {
  const { uid, gid } = guest.jail.spec;
  const run = spawnSync(
    "/usr/bin/nsenter",
    [
      "-t",
      String(guest.qemuPid),
      "-m",
      "-p",
      "--",
      "/usr/bin/setpriv",
      `--reuid=${uid}`,
      `--regid=${gid}`,
      "--clear-groups",
      "--inh-caps=-all",
      "--bounding-set=-all",
      "--no-new-privs",
      "--",
      ...command,
    ],
    { env: {}, encoding: "utf8", timeout: 60_000 },
  );
  return run.stdout + run.stderr;
}

test(
  "sandbox: two guests' RAM secrets: neither worker's jail can find the other's, only its own",
  { skip },
  async (t) => {
    const [a, b] = await Promise.all([bootGuest("secret-a"), bootGuest("secret-b")]);
    await Promise.all([waitForOutput(a, READY_MARKER, 120_000), waitForOutput(b, READY_MARKER, 120_000)]);
    for (const guest of [a, b])
      guest.child.stdin.write(`echo ${guest.secret} > /dev/shm/secret; echo ST""ORED\n`);
    await Promise.all([waitForOutput(a, "STORED", 30_000), waitForOutput(b, "STORED", 30_000)]);

    // /proc/1 in a worker's pid namespace is its QEMU: every readable mapping, guest RAM included.
    const aFindsOwn = asWorker(a, [world.probe, "scanmem", "1", a.secret]);
    const aFindsB = asWorker(a, [world.probe, "scanmem", "1", b.secret]);
    const bFindsOwn = asWorker(b, [world.probe, "scanmem", "1", b.secret]);
    const bFindsA = asWorker(b, [world.probe, "scanmem", "1", a.secret]);
    const files = asWorker(a, [
      "/usr/bin/busybox",
      "sh",
      "-c",
      `H1=${b.secret.slice(0, 64)}; H2=${b.secret.slice(64)}; grep -rsl "$H1$H2" /usr /lib /lib64 /tmp /dev/shm; echo scanned`,
    ]);
    for (const guest of [a, b]) guest.child.stdin.write("poweroff\n");
    await Promise.all([a, b].map((guest) => new Promise((resolve) => guest.child.once("exit", resolve))));

    t.diagnostic(
      `A: ${aFindsOwn.trim()} (own), ${aFindsB.trim()} (B's); B: ${bFindsOwn.trim()} (own), ${bFindsA.trim()} (A's)`,
    );
    assert.match(aFindsOwn, /scanmem: found/);
    assert.match(aFindsB, /scanmem: not found after [1-9]\d+ MiB/);
    assert.match(bFindsOwn, /scanmem: found/);
    assert.match(bFindsA, /scanmem: not found after [1-9]\d+ MiB/);
    assert.equal(files, "scanned\n");
  },
);
