import assert from "node:assert/strict";
import { test } from "node:test";
import { kernelCommandLine, qemuArgv, timingArgs } from "./qemu-argv.js";
import { optionValue, optionValues, testArgvInputs, testSpec } from "./test-fixtures.js";

test("qemu-argv: no default devices, no user config, no display", () => {
  const argv = qemuArgv(testArgvInputs(testSpec()));

  assert.ok(argv.includes("-nodefaults"));
  assert.ok(argv.includes("-no-user-config"));
  assert.equal(optionValue(argv, "-display"), "none");
});

test("qemu-argv: microvm by default, q35 on request, with the matching virtio transport", () => {
  const disk = { path: "/vms/a.raw", format: "raw" as const };
  const micro = qemuArgv(testArgvInputs(testSpec({ disks: [disk] })));
  const q35 = qemuArgv(testArgvInputs(testSpec({ disks: [disk], machine: "q35" })));

  assert.equal(optionValue(micro, "-M"), "microvm,x-option-roms=off");
  assert.match(optionValues(micro, "-device").join(" "), /virtio-blk-device,drive=disk0/);
  assert.equal(optionValue(q35, "-M"), "q35");
  assert.match(optionValues(q35, "-device").join(" "), /virtio-blk-pci,drive=disk0/);
});

test("qemu-argv: memory, vCPUs, accelerator and CPU model come from the spec and the policy", () => {
  const argv = qemuArgv(testArgvInputs(testSpec({ memoryMiB: 512, vcpus: 2 }), { accel: "kvm", cpuArg: "host,-vmx" }));

  assert.equal(optionValue(argv, "-m"), "512M");
  assert.equal(optionValue(argv, "-smp"), "2");
  assert.equal(optionValue(argv, "-accel"), "kvm");
  assert.equal(optionValue(argv, "-cpu"), "host,-vmx");
});

test("qemu-argv: TCG is multi-threaded, with a translation cache bounded to fit the worker's memory limit", () => {
  const argv = qemuArgv(testArgvInputs(testSpec({ vcpus: 2 })));

  assert.equal(optionValue(argv, "-accel"), "tcg,thread=multi,tb-size=64");
});

test("qemu-argv: a read-only disk is opened read-only with locking on", () => {
  const argv = qemuArgv(testArgvInputs(testSpec({ disks: [{ path: "/vms/base.vhdx", format: "vhdx", readonly: true }] })));
  const [fileNode, formatNode] = optionValues(argv, "-blockdev").map((text) => JSON.parse(text) as Record<string, unknown>);

  assert.deepEqual(fileNode, { driver: "file", filename: "/vms/base.vhdx", "node-name": "disk0-file", "read-only": true, locking: "on" });
  assert.deepEqual(formatNode, { driver: "vhdx", file: "disk0-file", "node-name": "disk0", "read-only": true });
});

test("qemu-argv: control sockets live in the run directory, QMP and console as servers", () => {
  const argv = qemuArgv(testArgvInputs(testSpec()));

  assert.equal(optionValue(argv, "-qmp"), "unix:/run/palisade/vms/web-1/qmp.sock,server=on,wait=off");
  assert.equal(optionValue(argv, "-chardev"), "socket,id=console,path=/run/palisade/vms/web-1/console.sock,server=on,wait=off");
  assert.equal(optionValue(argv, "-serial"), "chardev:console");
});

test("qemu-argv: lifecycle actions map --on-reboot and --on-panic", () => {
  const exit = qemuArgv(testArgvInputs(testSpec({ onReboot: "exit", onPanic: "exit" })));
  const restart = qemuArgv(testArgvInputs(testSpec({ onReboot: "restart", onPanic: "restart" })));

  assert.equal(optionValue(exit, "-action"), "reboot=shutdown,shutdown=poweroff,panic=shutdown");
  assert.equal(optionValue(restart, "-action"), "reboot=reset,shutdown=poweroff,panic=pause");
});

test("qemu-argv: pvpanic and entropy only when the policy grants them", () => {
  const granted = qemuArgv(testArgvInputs(testSpec()));
  const denied = qemuArgv(testArgvInputs(testSpec(), { pvpanic: false, entropy: false }));

  assert.ok(optionValues(granted, "-device").includes("pvpanic"));
  assert.ok(optionValues(granted, "-device").includes("virtio-rng-device,rng=rng0"));
  assert.equal(optionValues(denied, "-device").length, 0);
  assert.equal(optionValue(denied, "-object"), undefined);
});

test("qemu-argv: user networking with host forwards; switch NICs use the TAP fd handed over", () => {
  const spec = testSpec({
    nics: [
      { kind: "user", hostfwd: ["tcp:127.0.0.1:2222-:22"] },
      { kind: "switch", switch: "lab", mac: "52:54:00:12:34:56" },
    ],
  });
  const argv = qemuArgv(testArgvInputs(spec, { tapFds: [3] }));

  assert.deepEqual(optionValues(argv, "-netdev"), ["user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22", "tap,id=net1,fd=3"]);
  assert.ok(optionValues(argv, "-device").includes("virtio-net-device,netdev=net1,id=nic1,mac=52:54:00:12:34:56"));
});

test("qemu-argv: the guest can read Palisade's version and its VM id from fw_cfg", () => {
  const argv = qemuArgv(testArgvInputs(testSpec()));

  assert.deepEqual(optionValues(argv, "-fw_cfg"), [
    "name=opt/org.palisade/version,string=0.1.0",
    "name=opt/org.palisade/vm-id,string=6f1c9a3e-2b7d-4c1a-9e8f-0a1b2c3d4e5f",
  ]);
});

test("qemu-argv: QEMU's seccomp switches are appended as given", () => {
  const argv = qemuArgv(testArgvInputs(testSpec(), { seccompArgs: ["-sandbox", "on,spawn=deny"] }));

  assert.equal(optionValue(argv, "-sandbox"), "on,spawn=deny");
});

test("kernel command line: TCG gets the host TSC frequency and lpj (the microvm boot-hang fix)", () => {
  assert.deepEqual(timingArgs("tcg", 2_445_404), ["tsc_early_khz=2445404", "lpj=9781616", "tsc=reliable"]);
  assert.deepEqual(timingArgs("kvm", 2_445_404), []);
  assert.deepEqual(timingArgs("tcg", null), []);
});

test("kernel command line: Palisade's arguments first, the user's override them by key", () => {
  const line = kernelCommandLine(testSpec({ append: "quiet console=hvc0" }), "tcg", 2_000_000);

  assert.equal(line, "panic=-1 reboot=t tsc_early_khz=2000000 lpj=8000000 tsc=reliable noreplace-smp quiet console=hvc0");
});

test("kernel command line: noreplace-smp for 1-vCPU TCG guests only (the kernel's UP patching is slow under TCG)", () => {
  const has = (vcpus: number, accel: "tcg" | "kvm"): boolean =>
    kernelCommandLine(testSpec({ vcpus }), accel, 2_000_000).split(" ").includes("noreplace-smp");

  assert.equal(has(1, "tcg"), true);
  assert.equal(has(2, "tcg"), false);
  assert.equal(has(1, "kvm"), false);
});
