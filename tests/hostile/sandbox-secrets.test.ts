/**
 * Two real guests started by `palisade run`, each holding a random 64-byte secret in its
 * RAM, each QEMU in its own jail. From inside worker A's own namespaces, as A's uid (what a
 * guest that broke out of QEMU A holds), the secret of B is in no memory A can read — A's
 * whole QEMU process, guest RAM included, is scanned through /proc/1/mem — and in no file;
 * the scan does find A's own secret (the positive control that proves it would see one).
 * And the other way.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { asWorker, runGuest, usePrivatePlacement, workerOf } from "./guest-harness.js";
import { skipReason, useJailWorld } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
const world = useJailWorld();
usePrivatePlacement();

test(
  "sandbox: two guests' RAM secrets: neither worker's jail can find the other's, only its own",
  { skip },
  async (t) => {
    const vms = await Promise.all([runGuest(null, { memory: "192M" }), runGuest(null, { memory: "192M" })]);
    try {
      const [a, b] = await Promise.all(
        vms.map(async (vm) => ({ vm, worker: await workerOf(vm), secret: randomBytes(64).toString("hex") })),
      );
      if (a === undefined || b === undefined) throw new Error("two guests expected");
      // 64 random bytes, as 128 hex digits (the console carries text), kept in guest RAM.
      for (const guest of [a, b]) await guest.vm.exec(`echo ${guest.secret} > /dev/shm/secret`);

      // QEMU as the worker's pid namespace names it: every readable mapping, guest RAM included.
      const aFindsOwn = asWorker(a.worker, world().probe, ["scanmem", String(a.worker.qemuPidInJail), a.secret]);
      const aFindsB = asWorker(a.worker, world().probe, ["scanmem", String(a.worker.qemuPidInJail), b.secret]);
      const bFindsOwn = asWorker(b.worker, world().probe, ["scanmem", String(b.worker.qemuPidInJail), b.secret]);
      const bFindsA = asWorker(b.worker, world().probe, ["scanmem", String(b.worker.qemuPidInJail), a.secret]);
      const files = asWorker(a.worker, "/usr/bin/busybox", [
        "sh",
        "-c",
        // Every file the jail shows but the kernel's own trees and device nodes (/dev/zero never ends).
        `H1=${b.secret.slice(0, 64)}; H2=${b.secret.slice(64)}; for d in /* /dev/shm; do case $d in /proc|/sys|/dev) ;; *) grep -rsl "$H1$H2" $d ;; esac; done; echo scanned`,
      ]);
      const exits = await Promise.all(vms.map((vm) => vm.powerOff()));

      t.diagnostic(`A: ${aFindsOwn.trim()} (own), ${aFindsB.trim()} (B's); B: ${bFindsOwn.trim()} (own), ${bFindsA.trim()} (A's)`);
      assert.match(aFindsOwn, /scanmem: found/);
      assert.match(aFindsB, /scanmem: not found after [1-9]\d+ MiB/);
      assert.match(bFindsOwn, /scanmem: found/);
      assert.match(bFindsA, /scanmem: not found after [1-9]\d+ MiB/);
      assert.equal(files, "scanned\n");
      for (const exit of exits) assert.deepEqual(exit, { code: 0, signal: null });
    } finally {
      for (const vm of vms) await vm.dispose();
    }
  },
);
