/**
 * `palisade image build` end to end: an image built from scratch into a temporary
 * directory (the kernel package download is cached between runs) unpacks to what the
 * builder promised and boots under a plain QEMU command line to the ready marker, a
 * working shell and a clean power-off. No Palisade engine involved: this proves the
 * image alone.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { ConfigError, HostError } from "../../src/util/errors.js";
import { READY_MARKER, buildImage, type BuiltImage } from "../../src/image/index.js";
import { readCpioArchive } from "../../src/image/initramfs/cpio-reader.js";
import { checkKernelFile } from "../../src/engine/index.js";
import { CLI } from "../harness/test-vm.js";

/** Generous: the 2-core machines we test on are shared; an idle boot takes ~2-3 s. */
const BOOT_TIMEOUT_MS = 120_000;
/** A small dynamically linked binary (libc only) that busybox does not provide. */
const DYNAMIC_BINARY = "/usr/bin/getconf";

let workDir: string;
let image: BuiltImage;
const addedText = `added by the image test ${process.pid}\n`;

/**
 * The host TSC frequency in kHz, for the guest's `tsc_early_khz=` (under TCG the guest
 * reads the host TSC; without it microvm boots can hang in calibrate_delay, see
 * host-notes). The kernel's own calibration first, else /proc/cpuinfo.
 */
function hostTscKhz(): number {
  const dmesg = spawnSync("dmesg", [], { encoding: "utf8" });
  const text = dmesg.status === 0 ? dmesg.stdout : "";
  const refined =
    /tsc: Refined TSC clocksource calibration: ([\d.]+) MHz/.exec(text) ??
    /tsc: Detected ([\d.]+) MHz/.exec(text);
  const mhz = refined?.[1] ?? /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1];
  assert.ok(mhz !== undefined, "cannot find the host TSC frequency");
  return Math.round(Number(mhz) * 1000);
}

interface BootResult {
  readonly code: number | null;
  readonly output: string;
  readonly markerMs: number | undefined;
}

/** Boots `kernel`+`initrd` with a bare QEMU command line, types `commands` after the marker. */
function bootAndType(kernel: string, initrd: string, commands: string): Promise<BootResult> {
  const tscKhz = hostTscKhz();
  // lpj for HZ=250 (Debian's cloud kernel): skips delay-loop calibration.
  const lpj = Math.round((tscKhz * 1000) / 250);
  const append = `console=ttyS0 quiet panic=-1 tsc_early_khz=${tscKhz} lpj=${lpj}`;
  const qemu = spawn(
    "qemu-system-x86_64",
    [
      "-M",
      "microvm",
      "-nodefaults",
      "-no-user-config",
      "-nographic",
      "-accel",
      "tcg",
      "-m",
      "256",
      "-smp",
      "1",
    ].concat(["-kernel", kernel, "-initrd", initrd, "-append", append, "-serial", "stdio", "-no-reboot"]),
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  const started = performance.now();
  let output = "";
  let markerMs: number | undefined;
  qemu.stdout.setEncoding("utf8");
  qemu.stderr.setEncoding("utf8");
  qemu.stderr.on("data", (chunk: string) => (output += chunk));
  qemu.stdout.on("data", (chunk: string) => {
    output += chunk;
    if (markerMs === undefined && output.includes(READY_MARKER)) {
      markerMs = performance.now() - started;
      qemu.stdin.write(commands);
    }
  });
  return new Promise((resolvePromise) => {
    const timer = setTimeout(() => qemu.kill("SIGKILL"), BOOT_TIMEOUT_MS);
    qemu.on("close", (code) => {
      clearTimeout(timer);
      resolvePromise({ code, output, markerMs });
    });
  });
}

before(async () => {
  workDir = await mkdtemp(join(tmpdir(), "palisade-image-test-"));
  await writeFile(join(workDir, "hello.txt"), addedText);
  image = await buildImage({
    outDir: join(workDir, "image"),
    add: [{ hostPath: join(workDir, "hello.txt"), guestPath: "/root/hello.txt" }],
    addBinaries: [DYNAMIC_BINARY],
  });
});

after(async () => {
  await rm(workDir, { recursive: true, force: true });
});

test("image build: a fresh directory gets vmlinuz, its PVH vmlinux, initrd.img and a manifest that matches them", async () => {
  assert.equal(image.rebuilt, true);
  assert.equal(basename(image.bzImagePath), "vmlinuz");
  assert.equal(
    basename(image.kernelPath),
    "vmlinux",
    "the Debian cloud kernel has a PVH entry: its vmlinux is what boots",
  );
  assert.deepEqual(await checkKernelFile(image.kernelPath), { format: "pvh-elf" });
  assert.match(image.kernelVersion, /^\d+\.\d+\.\d+-\d+-cloud-amd64$/);
  const manifest = JSON.parse(await readFile(image.manifestPath, "utf8")) as BuiltImage["manifest"];
  assert.equal(manifest.kernel.release, image.kernelVersion);
  assert.match(manifest.kernel.package ?? "", /^linux-image-\d.*-cloud-amd64$/);
  assert.equal(manifest.outputs.initrd.sizeBytes, (await readFile(image.initrdPath)).length);
  assert.equal(manifest.outputs.pvhKernel?.sizeBytes, (await stat(image.kernelPath)).size);
  const regular = new Map(manifest.files.regular.map((file) => [file.path, file]));
  assert.ok((regular.get("/bin/busybox")?.sizeBytes ?? 0) > 500_000);
  assert.match(regular.get("/init")?.sha256 ?? "", /^[0-9a-f]{64}$/);
  const loaded = manifest.modules.loadOrder.map((module) => module.name);
  for (const name of [
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
  ])
    assert.ok(loaded.includes(name), name);
  // Dependencies come before the modules that need them.
  assert.ok(
    loaded.indexOf("virtio_ring") < loaded.indexOf("virtio") &&
      loaded.indexOf("virtio") < loaded.indexOf("virtio_blk"),
  );
  assert.ok(
    loaded.indexOf("failover") < loaded.indexOf("net_failover") &&
      loaded.indexOf("net_failover") < loaded.indexOf("virtio_net"),
  );
});

test("image build: the initramfs is a newc archive with /init, busybox, modules and the added files", async () => {
  const members = readCpioArchive(gunzipSync(await readFile(image.initrdPath)));
  const byPath = new Map(members.map((member) => [member.entry.path, member.entry]));

  assert.equal(byPath.get("init")?.kind, "file");
  assert.equal(byPath.get("bin/sh")?.kind, "symlink");
  const busybox = byPath.get("bin/busybox");
  assert.ok(busybox?.kind === "file" && busybox.data.length > 500_000, "bin/busybox is the real binary");
  const added = byPath.get("root/hello.txt");
  assert.ok(added?.kind === "file");
  assert.equal(new TextDecoder().decode(added.data), addedText);
  assert.equal(byPath.get(DYNAMIC_BINARY.slice(1))?.kind, "file");
  assert.equal(byPath.get("lib64/ld-linux-x86-64.so.2")?.kind, "file");
  assert.equal(byPath.get("lib/x86_64-linux-gnu/libc.so.6")?.kind, "file");
  assert.ok(members.some((member) => member.entry.path.endsWith("/virtio_blk.ko")));
  // Drivers are loaded by device: modules.alias maps each device's modalias to its driver.
  const aliases = byPath.get(`lib/modules/${image.kernelVersion}/modules.alias`);
  assert.ok(aliases?.kind === "file");
  const aliasText = new TextDecoder().decode(aliases.data);
  assert.match(aliasText, /^alias virtio:d00000002v\* virtio_blk$/m);
  assert.match(aliasText, /^alias acpi\*:LNRO0005:\* virtio_mmio$/m);
  assert.ok(image.manifest.modules.deviceDrivers.includes("virtio_blk"));
  assert.deepEqual(image.manifest.modules.loadedAtBoot, [], "every default module drives a device");
  // Host tools read it too: busybox cpio lists the same members.
  const listed = spawnSync("/bin/busybox", ["cpio", "-t"], {
    input: gunzipSync(await readFile(image.initrdPath)),
    encoding: "utf8",
  });
  assert.equal(listed.status, 0, listed.stderr);
  assert.equal(listed.stdout.trim().split("\n").length, members.length);
});

for (const kernel of ["vmlinux", "vmlinuz"] as const)
  test(`image build: the image boots (${kernel}) to the ready marker, runs commands and powers off with exit 0`, async () => {
    const result = await bootAndType(
      kernel === "vmlinux" ? image.kernelPath : image.bzImagePath,
      image.initrdPath,
      `echo "sum=$((40 + 2))"; cat /root/hello.txt; ${DYNAMIC_BINARY} PAGESIZE; lsmod | grep -c virtio; poweroff\n`,
    );

    assert.notEqual(result.markerMs, undefined, `no ${READY_MARKER} in:\n${result.output}`);
    assert.equal(result.code, 0, `QEMU exit code ${result.code} after:\n${result.output}`);
    assert.match(result.output, /sum=42/);
    assert.ok(result.output.includes(addedText.trim()), "the added file is in the guest");
    assert.match(result.output, /\r?\n4096\r?\n/, "the added dynamic binary runs with its copied libraries");
    assert.match(result.output, /\n# /, "the shell shows its prompt");
    console.log(`# boot to ${READY_MARKER}: ${(result.markerMs ?? 0).toFixed(0)} ms (TCG, microvm)`);
  });

test("image build: the same inputs again are not rebuilt; --force rebuilds the same bytes", async () => {
  const options = {
    outDir: image.outDir,
    add: [{ hostPath: join(workDir, "hello.txt"), guestPath: "/root/hello.txt" }],
    addBinaries: [DYNAMIC_BINARY],
  };

  const again = await buildImage(options);
  const forced = await buildImage({ ...options, force: true });

  assert.equal(again.rebuilt, false);
  assert.equal(forced.rebuilt, true);
  assert.equal(forced.manifest.outputs.initrd.sha256, image.manifest.outputs.initrd.sha256);
});

test("image build: the CLI reports an up-to-date image as JSON and bad input as one line with exit code 2", () => {
  const json = spawnSync(
    process.execPath,
    [
      CLI,
      "image",
      "build",
      "--out",
      image.outDir,
      "--add",
      `${join(workDir, "hello.txt")}:/root/hello.txt`,
      "--add-binary",
      DYNAMIC_BINARY,
      "--json",
    ],
    {
      encoding: "utf8",
    },
  );
  assert.equal(json.status, 0, json.stderr);
  const printed = JSON.parse(json.stdout) as { rebuilt: boolean; initrdPath: string; kernelVersion: string };
  assert.equal(printed.rebuilt, false);
  assert.equal(printed.initrdPath, image.initrdPath);
  assert.equal(printed.kernelVersion, image.kernelVersion);

  const bad = spawnSync(
    process.execPath,
    [CLI, "image", "build", "--out", join(workDir, "bad"), "--add", "/nonexistent/file:/root/x"],
    { encoding: "utf8" },
  );
  assert.equal(bad.status, 2);
  assert.equal(
    bad.stderr.trim(),
    "palisade: --add /nonexistent/file:/root/x: /nonexistent/file does not exist [image.bad-add]",
  );
});

test("image build: an unknown module named with --modules is a ConfigError naming it", async () => {
  await assert.rejects(
    buildImage({ outDir: join(workDir, "bad-module"), modules: ["virtio_blk", "no_such_module"] }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.code, "image.module-not-found");
      assert.match(error.message, /Kernel module no_such_module/);
      return true;
    },
  );
});

test("image build: --kernel FILE without host modules skips the default modules and refuses explicit ones", async (t) => {
  if (existsSync(`/lib/modules/${image.kernelVersion}`)) {
    t.skip(`this host has /lib/modules/${image.kernelVersion}`);
    return;
  }
  const fromFile = await buildImage({
    outDir: join(workDir, "from-file"),
    kernel: { kind: "file", path: image.bzImagePath },
  });

  assert.equal(fromFile.kernelVersion, image.kernelVersion);
  assert.equal(fromFile.manifest.kernel.source, "file");
  assert.deepEqual(fromFile.manifest.modules.loadOrder, []);
  assert.ok(fromFile.manifest.modules.skipped.includes("virtio_blk"));
  await assert.rejects(
    buildImage({
      outDir: join(workDir, "from-file-2"),
      kernel: { kind: "file", path: image.bzImagePath },
      modules: ["virtio_blk"],
    }),
    /--modules: kernel .* has no modules on this host/,
  );
  await assert.rejects(
    buildImage({ outDir: join(workDir, "not-kernel"), kernel: { kind: "file", path: "/etc/hostname" } }),
    /is not a bzImage/,
  );
});

test("image build: a package apt does not know, without the right to run apt-get update, says what to do", async () => {
  await assert.rejects(
    buildImage({
      outDir: join(workDir, "no-package"),
      kernel: { kind: "package", name: "linux-image-no-such-flavour" },
      allowAptUpdate: false,
    }),
    (error: unknown) => {
      assert.ok(error instanceof HostError);
      assert.equal(error.code, "image.apt-lists");
      assert.match(
        error.message,
        /^apt knows no package linux-image-no-such-flavour: check the name, or .*apt-get update/,
      );
      return true;
    },
  );
});
