import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { COLDPLUG, MODULE_LIST_PATH, READY_MARKER, guestSystemFiles, moduleListFile } from "./guest-files.js";

const byPath = new Map(guestSystemFiles().map((file) => [file.path, file]));

test("guest-files: /init prints the ready marker as a line of its own, before the shell starts", () => {
  const init = byPath.get("/init")?.text ?? "";

  const lines = init.split("\n");
  const marker = lines.indexOf(`echo ${READY_MARKER}`);
  assert.ok(marker > 0, "an echo of the marker alone");
  assert.ok(lines.findIndex((line) => line.includes("cttyhack sh -l")) > marker);
  assert.equal(byPath.get("/init")?.mode, 0o755);
});

test(
  "guest-files: every script is valid busybox sh",
  { skip: !existsSync("/bin/busybox") && "no /bin/busybox" },
  () => {
    for (const file of guestSystemFiles().filter((candidate) => candidate.text.startsWith("#!/bin/sh"))) {
      const check = spawnSync("/bin/busybox", ["sh", "-n"], { input: file.text, encoding: "utf8" });

      assert.equal(check.status, 0, `${file.path}: ${check.stderr}`);
    }
  },
);

test("guest-files: the module list has one module name per line, in the order given", () => {
  const file = moduleListFile(["ext4", "tun"]);

  assert.equal(file.path, MODULE_LIST_PATH);
  assert.equal(file.text, "ext4\ntun\n");
});

/**
 * Runs `/init`'s coldplug loop under busybox sh against a fake sysfs in `root`, with a
 * stub `modprobe` that logs its arguments and runs `onProbe` (a shell snippet that may
 * make new devices appear, as a driver does).
 */
function runColdplug(
  root: string,
  onProbe: string,
): { status: number | null; calls: string[]; stderr: string } {
  const bin = join(root, "bin");
  mkdirSync(bin, { recursive: true });
  writeFileSync(
    join(bin, "modprobe"),
    `#!/bin/busybox sh\nprintf '%s|' "$@" >>"${root}/calls"; echo >>"${root}/calls"\n${onProbe}\n`,
    { mode: 0o755 },
  );
  // A function, since busybox sh runs its own applets before looking in PATH.
  const script = `modprobe() { "${bin}/modprobe" "$@"; }\n${COLDPLUG.replaceAll("/sys/", `${root}/sys/`)}`;
  const run = spawnSync("/bin/busybox", ["sh", "-c", script], {
    cwd: root,
    encoding: "utf8",
    env: { PATH: `${bin}:/usr/bin:/bin` },
    timeout: 10_000,
  });
  const calls = existsSync(join(root, "calls"))
    ? readFileSync(join(root, "calls"), "utf8").trim().split("\n")
    : [];
  return { status: run.status, calls, stderr: run.stderr };
}

/** Runs `body` with a fresh temporary directory, removed afterwards. */
function withTempRoot(body: (root: string) => void): void {
  const root = mkdtempSync(join(tmpdir(), "palisade-coldplug-"));
  try {
    body(root);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

function device(root: string, path: string, modalias: string): void {
  mkdirSync(join(root, "sys", path), { recursive: true });
  writeFileSync(join(root, "sys", path, "modalias"), `${modalias}\n`);
}

test(
  "guest-files: coldplug asks modprobe for each device once, again as drivers reveal devices, then stops",
  { skip: !existsSync("/bin/busybox") && "no /bin/busybox" },
  () => {
    withTempRoot((root) => {
      device(root, "bus/acpi/devices/LNRO0005:00", "acpi:LNRO0005:");
      device(root, "bus/acpi/devices/LNRO0005:01", "acpi:LNRO0005:");
      device(root, "bus/acpi/devices/PNP0C0C:00", "acpi:PNP0C0C:");
      mkdirSync(join(root, "sys/bus/platform/devices/no-modalias"), { recursive: true });
      // The transport's driver reveals a virtio device; the button's, an input device.
      const onProbe = [
        `case "$*" in *acpi:LNRO0005:*) mkdir -p "${root}/sys/bus/virtio/devices/virtio0" && echo virtio:d00000004v554D4551 >"${root}/sys/bus/virtio/devices/virtio0/modalias" ;; esac`,
        `case "$*" in *acpi:PNP0C0C:*) mkdir -p "${root}/sys/class/input/input0" "${root}/sys/class/input/event0" && echo input:b0019v0000p0001e0000-e0,1,k74,ramlsfw >"${root}/sys/class/input/input0/modalias" ;; esac`,
      ].join("\n");

      const { status, calls, stderr } = runColdplug(root, onProbe);

      assert.equal(status, 0, stderr);
      assert.deepEqual(calls, [
        "-a|-q|acpi:LNRO0005:|acpi:PNP0C0C:|",
        "-a|-q|virtio:d00000004v554D4551|input:b0019v0000p0001e0000-e0,1,k74,ramlsfw|",
      ]);
    });
  },
);

test(
  "guest-files: coldplug passes a hostile modalias to modprobe as data, and ends when devices keep appearing",
  { skip: !existsSync("/bin/busybox") && "no /bin/busybox" },
  () => {
    withTempRoot((root) => {
      // A glob that matches files in the working directory must reach modprobe unexpanded.
      writeFileSync(join(root, "calls-decoy"), "");
      device(root, "bus/pci/devices/0000:00:01.0", "calls*");
      device(root, "bus/pci/devices/0000:00:02.0", "$(touch pwned) `touch pwned2`");
      // A "driver" that reveals a new device every time: the loop must still stop.
      const onProbe = `n=$(ls "${root}/sys/bus/virtio/devices" 2>/dev/null | wc -l); mkdir -p "${root}/sys/bus/virtio/devices/v$n" && echo "virtio:d$n" >"${root}/sys/bus/virtio/devices/v$n/modalias"`;

      const { status, calls, stderr } = runColdplug(root, onProbe);

      assert.equal(status, 0, stderr);
      assert.equal(calls.length, 8, "at most 8 rounds");
      assert.ok(calls[0]?.includes("|calls*|"), calls[0]);
      assert.ok(calls[0]?.includes("|$(touch|pwned)|`touch|pwned2`|"), calls[0]);
      assert.equal(existsSync(join(root, "pwned")) || existsSync(join(root, "pwned2")), false);
    });
  },
);
