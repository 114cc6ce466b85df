/**
 * `palisade run` boots real guests (KVM where the host has it, TCG here) and reports how
 * they end.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { readHostConfig } from "../../src/engine/placement.js";
import { favorDynmodsState } from "../../src/sandbox/index.js";
import { TestVm, defaultImage } from "../harness/test-vm.js";

const scratch = mkdtempSync(join(tmpdir(), "palisade-run-test-"));
before(async () => {
  await defaultImage();
});
after(() => {
  rmSync(scratch, { recursive: true, force: true });
});

function qemuProcessesNamed(name: string): string[] {
  try {
    return execFileSync("pgrep", ["-af", `guest=${name}`], { encoding: "utf8" })
      .trim()
      .split("\n")
      .filter((line) => line !== "");
  } catch {
    return [];
  }
}

for (const cpus of [1, 2]) {
  test(`run: boots to the ready marker with ${cpus} vCPU(s), sees its memory and CPUs, powers off with exit 0`, async () => {
    const vm = await TestVm.start({ cpus, memory: "256M" });
    try {
      const online = await vm.exec("grep -c ^processor /proc/cpuinfo");
      const memTotal = await vm.exec("grep MemTotal /proc/meminfo");
      const clock = await vm.exec("cat /sys/devices/system/clocksource/clocksource0/current_clocksource");
      const cmdline = await vm.exec("cat /proc/cmdline; dmesg | grep -i 'unknown kernel command line'");
      const exit = await vm.powerOff();

      assert.equal(online.stdout.trim(), String(cpus));
      const kib = Number(/MemTotal:\s+(\d+) kB/.exec(memTotal.stdout)?.[1]);
      // The kernel keeps a little for itself: between 200 and 256 MiB of 256 MiB show up.
      assert.ok(kib > 200 * 1024 && kib <= 256 * 1024, `MemTotal ${kib} kB`);
      // Under TCG the guest keeps the TSC (tsc=reliable); under KVM it has kvm-clock. Never
      // the 4 ms jiffies it fell back to when its watchdog distrusted TCG's TSC.
      // (tsc-early until the kernel refines its calibration, about a second after boot.)
      assert.match(clock.stdout.trim(), /^(tsc|tsc-early|kvm-clock)$/);
      // A 1-vCPU TCG guest keeps its lock prefixes (noreplace-smp, qemu-argv.ts), and the
      // kernel knows the parameter (it lists the ones it does not).
      const tcg = vm.stderr.includes("accelerator tcg");
      assert.equal(/\bnoreplace-smp\b/.test(cmdline.stdout), tcg && cpus === 1, cmdline.stdout);
      assert.doesNotMatch(cmdline.stdout, /unknown kernel command line/i);
      assert.deepEqual(exit, { code: 0, signal: null });
    } finally {
      await vm.dispose();
    }
  });
}

test("run: console input reaches the guest shell and its output comes back", async () => {
  const vm = await TestVm.start();
  try {
    const result = await vm.exec("echo $((6 * 7)) from $(uname -s)");

    assert.equal(result.stdout.trim(), "42 from Linux");
    assert.equal(result.status, 0);
  } finally {
    await vm.dispose();
  }
});

test("default guest: the initcalls its command line skips are skipped (the kernel honours initcall_blacklist)", async () => {
  const vm = await TestVm.start();
  try {
    // init_kprobe_trace is what creates kprobe_events; the rest of tracefs comes from
    // other initcalls, so `trace` being there shows tracefs itself is mounted.
    const tracefs = await vm.exec(
      "mount -t tracefs tracefs /sys/kernel/tracing && ls /sys/kernel/tracing/trace /sys/kernel/tracing/kprobe_events",
    );
    const cmdline = await vm.exec("cat /proc/cmdline");

    assert.match(cmdline.stdout, /initcall_blacklist=crypto_kdf108_init,init_kprobe_trace/);
    assert.match(tracefs.stdout, /^\/sys\/kernel\/tracing\/trace\r?$/m);
    assert.match(tracefs.stdout, /kprobe_events: No such file or directory/);
  } finally {
    await vm.dispose();
  }
});

test("default guest: it loads the drivers of the devices its machine has, and no others (coldplug)", async () => {
  const disk = join(scratch, "coldplug.raw");
  writeFileSync(disk, Buffer.alloc(1 << 20));
  const loaded: Record<string, string[]> = {};
  for (const machine of ["microvm", "q35"]) {
    const vm = await TestVm.start({
      disks: [`path=${disk},format=raw,readonly`],
      extraArgs: ["--machine", machine],
    });
    try {
      const modules = await vm.exec("cut -d' ' -f1 /proc/modules | sort | tr '\\n' ' '");
      const devices = await vm.exec("ls /dev/vda /dev/input/event0 /run/palisade/acpid.pid");
      loaded[machine] = modules.stdout.trim().split(/\s+/);
      assert.equal(devices.status, 0, `the disk, the power button's input device and acpid: ${devices.stdout}`);
      assert.deepEqual(await vm.powerOff(), { code: 0, signal: null });
    } finally {
      await vm.dispose();
    }
  }

  // microvm: virtio over MMIO, described in ACPI; no PCI bus, so no PCI drivers.
  for (const name of ["virtio_mmio", "virtio_blk", "virtio_rng", "button", "evdev", "pvpanic_mmio", "qemu_fw_cfg"])
    assert.ok(loaded.microvm?.includes(name), `microvm loads ${name}: ${loaded.microvm?.join(" ")}`);
  for (const name of ["virtio_pci", "pvpanic_pci", "virtio_net", "virtio_console"])
    assert.ok(!loaded.microvm?.includes(name), `microvm has no device for ${name}: ${loaded.microvm?.join(" ")}`);
  // q35: virtio over PCI, and no virtio-mmio transport.
  for (const name of ["virtio_pci", "virtio_blk", "button", "evdev"])
    assert.ok(loaded.q35?.includes(name), `q35 loads ${name}: ${loaded.q35?.join(" ")}`);
  for (const name of ["virtio_mmio", "virtio_net"])
    assert.ok(!loaded.q35?.includes(name), `q35 has no device for ${name}: ${loaded.q35?.join(" ")}`);
});

test("run: a jailed start leaves cgroup2's favordynmods on (workers join their cgroups without an RCU grace period)", async (t) => {
  if (process.getuid?.() !== 0 || !readFileSync("/proc/self/mountinfo", "utf8").includes(" - cgroup2 ")) {
    t.skip("needs root and a cgroup2 mount");
    return;
  }
  if (!readHostConfig().cgroupFavorDynmods) {
    t.skip("this host's /etc/palisade/host.json keeps favordynmods off");
    return;
  }
  const vm = await TestVm.start();
  try {
    const mountinfo = readFileSync("/proc/self/mountinfo", "utf8");

    assert.equal(favorDynmodsState(mountinfo).enabled, true, mountinfo);
    assert.match(vm.stderr, /worker sandbox: uid \d+/);
  } finally {
    await vm.dispose();
  }
});

test("run: a raw disk is /dev/vda and what the guest writes is there after power-off", async () => {
  const disk = join(scratch, "data.raw");
  writeFileSync(disk, Buffer.alloc(4 << 20));
  const vm = await TestVm.start({ disks: [`path=${disk},format=raw`] });
  try {
    const size = await vm.exec("cat /sys/block/vda/size");
    await vm.exec("echo palisade-was-here | dd of=/dev/vda bs=512 seek=100 conv=fsync 2>/dev/null");
    const exit = await vm.powerOff();

    assert.equal(size.stdout.trim(), String((4 << 20) / 512));
    assert.equal(exit.code, 0);
    const bytes = execFileSync("dd", [`if=${disk}`, "bs=512", "skip=100", "count=1", "status=none"]);
    assert.equal(bytes.subarray(0, 17).toString(), "palisade-was-here");
  } finally {
    await vm.dispose();
  }
});

test("run: --on-reboot exit ends with code 5; --on-reboot restart resets the guest and keeps the VM", async () => {
  const events = join(scratch, "restart-events.jsonl");
  writeFileSync(events, "");
  const exiting = await TestVm.start({ extraArgs: ["--on-reboot", "exit"] });
  const restarting = await TestVm.start({
    extraArgs: ["--on-reboot", "restart", "--events", `json:${events}`],
  });
  try {
    exiting.send("reboot\n");
    const exit = await exiting.waitExit(60_000);
    restarting.send("reboot\n");
    // The reset is a QMP event Palisade reports; the VM goes on instead of exiting.
    // (Whether the second boot reaches the marker is the guest's business; a second boot
    // that hangs is caught by the boot watchdog, tested in lifecycle.test.ts.)
    const deadline = Date.now() + 60_000;
    while (!readFileSync(events, "utf8").includes('"event":"reset"') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }

    assert.equal(exit.code, 5);
    assert.match(readFileSync(events, "utf8"), /"event":"reset","detail":"guest-reset"/);
    assert.equal(restarting.child.exitCode, null, "the VM keeps running after the guest's reboot");
  } finally {
    await exiting.dispose();
    await restarting.dispose();
  }
});

test("run: a guest that triple-faults at every boot is stopped as a reset loop (exit 5), even under --on-reboot restart", async () => {
  // PID 1 is `reboot -f`: with reboot=t (the microvm default) the kernel reboots by a
  // triple fault, so each boot ends in a CPU reset the guest did not ask QEMU for.
  const vm = await TestVm.start({
    append: "quiet rdinit=/sbin/reboot -- -f",
    memory: "128M",
    waitReady: false,
    extraArgs: ["--on-reboot", "restart", "--console", "none", "--events", "stderr"],
  });
  try {
    const exit = await vm.waitExit(180_000);

    assert.equal(exit.code, 5);
    assert.match(vm.stderr, /guest reset 6 times within 60 s \(triple fault or reset loop\); stopped/);
    // Six within the last 60 s; a slow host may have had earlier ones outside the window.
    assert.ok(
      (vm.stderr.match(/"event":"reset"/g) ?? []).length >= 6,
      "every reset was reported before the stop",
    );
    assert.doesNotMatch(
      vm.stderr,
      /"event":"ready"/,
      "a guest that never ran its init was never called ready",
    );
  } finally {
    await vm.dispose();
  }
});

test("run: a guest kernel panic is reported through pvpanic with exit code 4", async () => {
  const vm = await TestVm.start();
  try {
    vm.send("echo c > /proc/sysrq-trigger\n");
    const exit = await vm.waitExit(60_000);

    assert.equal(exit.code, 4);
    assert.match(vm.stderr, /guest kernel panicked/);
  } finally {
    await vm.dispose();
  }
});

test("run: --net user reaches a host TCP port from the guest", async () => {
  const server = createServer((socket) => {
    socket.end("hello-from-host\n");
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  const vm = await TestVm.start({ nets: ["user"] });
  try {
    // QEMU's user network maps 10.0.2.2 to the host's loopback.
    const reply = await vm.exec(`nc 10.0.2.2 ${port} </dev/null`, 60_000);

    assert.equal(reply.stdout.trim(), "hello-from-host");
  } finally {
    await vm.dispose();
    server.close();
  }
});

test("run: SIGKILL of the worker is reported (exit 6) and leaves no process or socket behind", async () => {
  const vm = await TestVm.start();
  try {
    const [line] = qemuProcessesNamed(vm.name);
    const pid = Number(line?.split(" ")[0]);
    process.kill(pid, "SIGKILL");
    const exit = await vm.waitExit(30_000);

    assert.equal(exit.code, 6);
    assert.match(vm.stderr, /worker \(QEMU\) killed by SIGKILL/);
    assert.deepEqual(qemuProcessesNamed(vm.name), []);
    assert.deepEqual(existsSync(vm.runRoot) ? readdirSync(vm.runRoot) : [], []);
  } finally {
    await vm.dispose();
  }
});
