/**
 * A hostile guest against its virtual hardware, with a neighbour VM beside it, both
 * workers in their jails: guest A runs random bytes as code, reads and writes back every
 * MSR in 0x0–0x1FFF, 0x40000000–0x400001FF and 0xC0000000–0xC0011FFF and every one of
 * the 65,536 I/O ports. Asserted: A sees no device class the policy does not grant
 * (display, USB, network); A's worker either goes on (QMP answers) or exits with a status
 * in its status file; neighbour B's console heartbeat keeps ticking.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { gzipSync } from "node:zlib";
import { downloadsDir, ensureDefaultImage, palisadeCacheDir, READY_MARKER } from "../../src/image/index.js";
import { compilePolicy, resolvePolicy } from "../../src/policy/index.js";
import { QEMU_SECCOMP_ARGS, jailArgv, readWorkerStatus } from "../../src/sandbox/index.js";
import { JailWorld, skipReason, type TestJail } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
let world: JailWorld;
let kernelPath: string;
let initrdPath: string;
const GUEST_PROGRAM = "/usr/local/bin/hostile-guest";

interface Guest {
  readonly jail: TestJail;
  readonly child: ChildProcessWithoutNullStreams;
  output: string;
}

before(async () => {
  if (skip !== false) return;
  world = await JailWorld.create();
  const staging = join(world.root, "overlay");
  mkdirSync(join(staging, "usr", "local", "bin"), { recursive: true });
  const source = join(
    dirname(fileURLToPath(import.meta.url)),
    "..",
    "..",
    "..",
    "tests",
    "hostile",
    "hostile-guest.c",
  );
  execFileSync("gcc", ["-static", "-O1", "-o", join(staging, GUEST_PROGRAM), source], { timeout: 120_000 });
  // The default image plus an overlay archive (the kernel unpacks concatenated archives in
  // order): the attack program and the msr driver from the same kernel package.
  const base = await ensureDefaultImage();
  const downloads = downloadsDir(palisadeCacheDir(process.env, homedir()));
  const msrModule = readdirSync(downloads)
    .map((entry) =>
      join(
        downloads,
        entry,
        "lib",
        "modules",
        base.kernelVersion,
        "kernel",
        "arch",
        "x86",
        "kernel",
        "msr.ko",
      ),
    )
    .find((path) => existsSync(path));
  if (msrModule === undefined)
    throw new Error(`msr.ko for ${base.kernelVersion} not found under ${downloads}`);
  copyFileSync(msrModule, join(staging, "msr.ko"));
  const archive = execFileSync("cpio", ["-o", "-H", "newc", "--quiet"], {
    cwd: staging,
    input: "usr\nusr/local\nusr/local/bin\nusr/local/bin/hostile-guest\nmsr.ko\n",
  });
  initrdPath = join(world.root, "initrd-hostile.img");
  writeFileSync(initrdPath, Buffer.concat([readFileSync(base.initrdPath), gzipSync(archive)]));
  kernelPath = base.kernelPath;
});

after(async () => {
  if (skip === false) await world.dispose();
});

async function waitFor(
  guest: Guest,
  done: (output: string) => boolean,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done(guest.output)) {
    if (Date.now() > deadline)
      throw new Error(
        `guest ${guest.jail.spec.vmId}: ${what} not seen in ${timeoutMs} ms; console:\n${guest.output.slice(-1500)}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function boot(vmId: string): Promise<Guest> {
  const jail = await world.jail(vmId, {
    limits: { memoryBytes: 448n * 1024n * 1024n, pids: 64 },
    extraBinds: [
      { hostPath: kernelPath, readonly: true },
      { hostPath: initrdPath, readonly: true },
    ],
  });
  const cpu = compilePolicy(resolvePolicy("locked-down"), { accel: "tcg", hostCpuVendor: "other" }).cpuArg;
  // The locked-down policy's devices that need no host file: console, entropy, pvpanic.
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
    "-device",
    "virtio-rng-pci",
    "-device",
    "pvpanic",
    "-qmp",
    `unix:${join(jail.spec.runDir, "qmp.sock")},server=on,wait=off`,
    "-kernel",
    kernelPath,
    "-initrd",
    initrdPath,
    "-append",
    "console=ttyS0 quiet panic=-1 palisade.net=none",
    "-no-reboot",
    ...QEMU_SECCOMP_ARGS,
  ];
  const argv = jailArgv(jail.spec, qemuArgs, world.host);
  const child = spawn(argv[0] ?? "", argv.slice(1), { env: {}, stdio: ["pipe", "pipe", "pipe"] });
  const guest: Guest = { jail, child, output: "" };
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    guest.output += chunk;
  });
  child.stdin.on("error", () => undefined);
  return guest;
}

const ticks = (output: string): number => output.match(/^TICK\r?$/gm)?.length ?? 0;

test(
  "sandbox: a hostile guest (random code, every MSR, every I/O port) harms neither the host nor its neighbour",
  { skip },
  async (t) => {
    const started = Date.now();
    const phases: string[] = [];
    const phase = (name: string): void => {
      phases.push(`${name} ${((Date.now() - started) / 1000).toFixed(1)} s`);
    };
    const [a, b] = await Promise.all([boot("hostile-a"), boot("neighbour-b")]);
    await Promise.all([
      waitFor(a, (o) => o.includes(READY_MARKER), 120_000, "ready"),
      waitFor(b, (o) => o.includes(READY_MARKER), 120_000, "ready"),
    ]);
    phase("booted");
    b.child.stdin.write("while :; do echo T''ICK; sleep 1; done &\n");
    await waitFor(b, (o) => ticks(o) >= 1, 30_000, "a heartbeat");

    a.child.stdin.write('echo CLASSES $(cat /sys/bus/pci/devices/*/class) END""CLASSES\n');
    await waitFor(a, (o) => o.includes("ENDCLASSES"), 30_000, "the device census");
    const classes =
      /CLASSES (.*) ENDCLASSES/
        .exec(
          a.output
            .split("\n")
            .filter((line) => !line.includes("$("))
            .join("\n"),
        )?.[1]
        ?.split(" ") ?? [];
    // Listen to A's QMP events through the attack: a worker that stops says why.
    let events = "";
    const monitor = connect(join(a.jail.spec.runDir, "qmp.sock"));
    monitor.setEncoding("utf8");
    monitor.on("error", () => undefined);
    monitor.on("data", (chunk: string) => {
      if (events === "") monitor.write('{"execute":"qmp_capabilities"}\n');
      events += chunk;
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    a.child.stdin.write(
      `insmod /msr.ko; ${GUEST_PROGRAM} garbage; ${GUEST_PROGRAM} msrs; ${GUEST_PROGRAM} ports; echo ATTACKS-""END\n`,
    );
    // An object, not a let: it changes in a callback the type checker cannot see.
    const attacker = { exited: false };
    a.child.once("exit", () => {
      attacker.exited = true;
    });
    // The guest may die or hang on the port sweep: what happens to the worker is the point.
    await waitFor(
      a,
      (o) => o.includes("ATTACKS-END") || attacker.exited,
      180_000,
      "the end of the attacks",
    ).catch(() => undefined);
    phase("attacked");
    const ticksAfterAttack = ticks(b.output);
    await waitFor(b, (o) => ticks(o) >= ticksAfterAttack + 2, 60_000, "two more heartbeats");
    phase("neighbour ticked");
    // Still running? Ask over the same connection (QMP serves one client at a time).
    if (!attacker.exited) monitor.write('{"execute":"query-status"}\n');
    const deadline = Date.now() + 10_000;
    while (!attacker.exited && !events.includes('"status": "') && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 50));
    monitor.destroy();
    const aStatus = /"status": "([a-z-]+)"/.exec(events)?.[1] ?? null;
    const aEvents = [...events.matchAll(/"event": "([A-Z_]+)"(?:.*?"reason": "([a-z-]+)")?/g)].map((m) =>
      m[2] === undefined ? m[1] : `${m[1]}(${m[2]})`,
    );
    const aWorker = await readWorkerStatus(a.jail.spec.runDir);
    for (const guest of [a, b]) guest.child.kill("SIGKILL");
    t.diagnostic(
      `A: ${a.output.match(/^(garbage|msrs|ports): .*$/gm)?.join("; ") ?? "no attack output"}; QMP events ${aEvents.join(" ") || "none"}; QMP status ${aStatus ?? "none"}; worker exit ${aWorker.exitCode ?? "none (running)"}; B ticked ${ticks(b.output)} times; ${phases.join(", ")}`,
    );

    assert.ok(classes.length > 0, "no PCI devices listed");
    assert.deepEqual(
      classes.filter((cls) => /^0x(03|0c03|02)/.test(cls)),
      [],
      `display, USB or network devices in ${classes.join(" ")}`,
    );
    assert.match(a.output, /garbage: done signalled=\d+/);
    assert.match(a.output, /msrs: done readable=[1-9]\d*/);
    assert.match(a.output, /ports: start/);
    assert.ok(
      aStatus !== null || aWorker.exitCode !== undefined,
      "A's worker neither answers QMP nor reported an exit",
    );
    assert.ok(ticks(b.output) >= ticksAfterAttack + 2);
  },
);
