import assert from "node:assert/strict";
import { test } from "node:test";
import { cgroup2RootOptions, favorDynmodsState, judgeFavorDynmodsRemount, planFavorDynmods } from "./cgroup-tuning.js";

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

test("cgroup-tuning: the plan remounts cgroup2 only when it is off, allowed and not refused earlier this boot", () => {
  const on = hybrid.replace("cgroup2 rw", "cgroup2 rw,favordynmods");
  const noCgroup2 = hybrid.split("\n").slice(0, 3).join("\n");

  assert.deepEqual(planFavorDynmods(hybrid, true, null, "boot-a"), { kind: "remount", mountPoint: "/sys/fs/cgroup/unified" });
  assert.deepEqual(planFavorDynmods(on, true, null, "boot-a"), { kind: "nothing", why: "already-on" });
  assert.deepEqual(planFavorDynmods(hybrid, false, null, "boot-a"), { kind: "nothing", why: "refused-by-host-config" });
  assert.deepEqual(planFavorDynmods(hybrid, true, "boot-a\nmount: bad option\n", "boot-a"), {
    kind: "nothing",
    why: "refused-earlier-this-boot",
  });
  // A marker from an earlier boot (or an unreadable boot id) does not stop a new attempt.
  assert.equal(planFavorDynmods(hybrid, true, "boot-a\nmount: bad option\n", "boot-b").kind, "remount");
  assert.equal(planFavorDynmods(hybrid, true, "\nwhatever\n", "").kind, "remount");
  assert.deepEqual(planFavorDynmods(noCgroup2, true, null, "boot-a"), { kind: "nothing", why: "no-cgroup2" });
});

test("cgroup-tuning: a remount is judged by the mount table: on, and every other root option kept", () => {
  const before = hybrid.replace("cgroup2 rw", "cgroup2 rw,nsdelegate,memory_recursiveprot");

  assert.deepEqual(cgroup2RootOptions(before), ["nsdelegate", "memory_recursiveprot"]);
  assert.deepEqual(
    judgeFavorDynmodsRemount(before, hybrid.replace("cgroup2 rw", "cgroup2 rw,nsdelegate,favordynmods,memory_recursiveprot")),
    { ok: true },
  );
  assert.deepEqual(judgeFavorDynmodsRemount(before, hybrid.replace("cgroup2 rw", "cgroup2 rw,favordynmods")), {
    ok: false,
    reason: "the remount dropped cgroup2 options nsdelegate, memory_recursiveprot",
  });
  // Inside a non-initial cgroup namespace the kernel accepts the remount and ignores it.
  assert.deepEqual(judgeFavorDynmodsRemount(before, before), {
    ok: false,
    reason: "the remount succeeded but favordynmods is still off (a cgroup namespace other than the host's?)",
  });
});
