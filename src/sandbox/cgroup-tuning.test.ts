import assert from "node:assert/strict";
import { test } from "node:test";
import { enableFavorDynmods, favorDynmodsState } from "./cgroup-tuning.js";

// A hybrid host as these machines have it: v1 hierarchies plus cgroup2 at .../unified.
const hybrid = [
  "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
  "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu",
  "36 31 0:33 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
  "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw",
  "",
].join("\n");

test("cgroup-tuning: favordynmods is off when no cgroup root's super options carry it", () => {
  assert.deepEqual(favorDynmodsState(hybrid), { enabled: false, cgroup2MountPoint: "/sys/fs/cgroup/unified" });
});

test("cgroup-tuning: favordynmods on cgroup2 or on a v1 root counts (the lock is global)", () => {
  assert.equal(favorDynmodsState(hybrid.replace("cgroup2 rw", "cgroup2 rw,nsdelegate,favordynmods")).enabled, true);
  assert.equal(favorDynmodsState(hybrid.replace("rw,memory", "rw,memory,favordynmods")).enabled, true);
  // The per-mount options (before " - ") are not the file system's: a bind mount's name there means nothing.
  assert.equal(favorDynmodsState("50 31 0:40 / /mnt/favordynmods rw,favordynmods - ext4 /dev/vda rw").enabled, false);
});

test("cgroup-tuning: a pure v2 host, an escaped mount point, and no cgroup2 at all", () => {
  assert.deepEqual(favorDynmodsState("30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"), {
    enabled: false,
    cgroup2MountPoint: "/sys/fs/cgroup",
  });
  assert.equal(favorDynmodsState("30 23 0:27 / /run/my\\040cgroup rw - cgroup2 none rw\n").cgroup2MountPoint, "/run/my cgroup");
  assert.deepEqual(favorDynmodsState(hybrid.split("\n").slice(0, 3).join("\n")), { enabled: false, cgroup2MountPoint: null });
  assert.deepEqual(favorDynmodsState("garbage\n - \n\n"), { enabled: false, cgroup2MountPoint: null });
});

test("cgroup-tuning: nothing is remounted when it is on already or there is no cgroup2", () => {
  assert.deepEqual(enableFavorDynmods(hybrid.replace("cgroup2 rw", "cgroup2 rw,favordynmods")), { kind: "already-on" });
  assert.deepEqual(enableFavorDynmods(hybrid.split("\n").slice(0, 3).join("\n")), {
    kind: "unavailable",
    reason: "no cgroup2 mount",
  });
});
