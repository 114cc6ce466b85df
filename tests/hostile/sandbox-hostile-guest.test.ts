/**
 * A hostile guest against its virtual hardware, with a neighbour VM beside it, both started
 * by `palisade run` (the engine's command line, the worker's jail): guest A runs random
 * bytes as code, reads and writes back every MSR in 0x0–0x1FFF, 0x40000000–0x400001FF and
 * 0xC0000000–0xC0011FFF, writes and reads unassigned guest-physical MMIO from ring 0
 * (palisade_hostile.ko action=mmio), every one of the 65,536 I/O ports, then every PCI
 * device's config space and memory BARs (each read and written back). Asserted: A
 * sees no device class the policy does not grant (display, USB, network); A's worker
 * either goes on or `palisade run` ends with an exit code and a reason; neighbour B's
 * console heartbeat keeps ticking.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HEARTBEAT, runGuest, ticks, waitUntil } from "./guest-harness.js";
import { GUEST_MODULE, GUEST_PROGRAM, useHostileImage } from "./hostile-image.js";
import { skipReason } from "./sandbox-harness.js";

const skip = skipReason() ?? false;
const image = useHostileImage();
const policyDir = mkdtempSync(join(tmpdir(), "palisade-hostile-policy-"));
after(() => {
  rmSync(policyDir, { recursive: true, force: true });
});

test(
  "sandbox: a hostile guest (random code, every MSR, unassigned MMIO, all 65,536 I/O ports, every PCI config space and BAR) harms neither the host nor its neighbour",
  { skip },
  async (t) => {
    const started = Date.now();
    const phases: string[] = [];
    const phase = (name: string): void => {
      phases.push(`${name} ${((Date.now() - started) / 1000).toFixed(1)} s`);
    };
    // q35: a PCI bus to take the census of; the default policy's devices, but for A no
    // pvpanic: writing back the value read from its port (0x505) is a guest panic, and the
    // sweep would stop there instead of covering all 65,536 ports.
    const flags = { memory: "192M", extraArgs: ["--machine", "q35", "--events", "stderr"] };
    const policyFile = join(policyDir, "no-pvpanic.json");
    writeFileSync(policyFile, JSON.stringify({ preset: "default", devices: ["console", "disk", "nic", "entropy", "balloon"] }));
    const [a, b] = await Promise.all([
      runGuest(image(), { ...flags, extraArgs: [...flags.extraArgs, "--policy", policyFile] }),
      runGuest(image(), flags),
    ]);
    try {
      phase("booted");
      b.send(HEARTBEAT);
      await waitUntil(() => ticks(b.output) >= 1, 30_000, "a heartbeat");

      const census = await a.exec("cat /sys/bus/pci/devices/*/class");
      const classes = census.stdout.split(/\s+/).filter((cls) => cls !== "");
      const vendors = (await a.exec("cat /sys/bus/pci/devices/*/vendor")).stdout.split(/\s+/).filter((id) => id !== "");
      a.send(
        `${GUEST_PROGRAM} garbage; ${GUEST_PROGRAM} msrs; insmod ${GUEST_MODULE} action=mmio; dmesg | grep 'palisade_hostile: mmio'; ${GUEST_PROGRAM} ports; ${GUEST_PROGRAM} pci; echo ATTACKS-""END\n`,
      );
      // The guest may die or hang on the port sweep: what happens to the worker is the point.
      const aExited = (): boolean => a.child.exitCode !== null || a.child.signalCode !== null;
      await waitUntil(() => a.output.includes("ATTACKS-END") || aExited(), 180_000, "the end of the attacks").catch(() => undefined);
      phase("attacked");
      const ticksAfterAttack = ticks(b.output);
      await waitUntil(() => ticks(b.output) >= ticksAfterAttack + 2, 60_000, "two more heartbeats");
      phase("neighbour ticked");
      // Still running: the worker answers the console (or hangs in the guest, its business).
      const aRunning = !aExited();
      t.diagnostic(
        `A: ${a.output.match(/(garbage|msrs|ports|pci): (start|done[^\r\n]*)/g)?.join("; ") ?? "no attack output"}; ${aRunning ? "still running" : `palisade run exited ${String(a.child.exitCode ?? a.child.signalCode)}: ${a.stderr.trim().split("\n").slice(-2).join(" / ")}`}; B ticked ${String(ticks(b.output))} times; ${phases.join(", ")}`,
      );

      assert.ok(classes.length > 0, "no PCI devices listed");
      assert.deepEqual(
        classes.filter((cls) => /^0x(03|0c03|02)/.test(cls)),
        [],
        `display, USB or network devices in ${classes.join(" ")}`,
      );
      // Only q35's own chipset (Intel) and the policy's virtio devices (Red Hat): nothing of the host's.
      assert.deepEqual(
        vendors.filter((id) => id !== "0x8086" && id !== "0x1af4" && id !== "0x1b36"),
        [],
        `PCI vendors ${vendors.join(" ")}`,
      );
      // Bridges, q35's AHCI and SMBus, then only what the policy grants: virtio console (0x0780), entropy and balloon (0x00ff).
      assert.deepEqual(
        classes.filter((cls) => !/^0x(0600|0601|0604|0106|0c05|0780|00ff|0100)/.test(cls)),
        [],
        `PCI classes ${classes.join(" ")}`,
      );
      assert.match(a.output, /garbage: done signalled=\d+/);
      assert.match(a.output, /msrs: done readable=[1-9]\d*/);
      assert.match(a.output, /palisade_hostile: mmio done/);
      assert.match(a.output, /ports: start/);
      // Every port read and written back, or the worker ended (with a reason, below).
      if (aRunning) assert.match(a.output, /ports: done 65536/);
      // Every PCI device's config space and memory BARs read and written back.
      if (aRunning) assert.match(a.output, /pci: done devices=[1-9]\d* bars=[1-9]\d* words=[1-9]/);
      if (!aRunning) {
        // Exited: with a documented exit code and a reason on stderr, never silently.
        assert.ok([0, 4, 5, 6, 7].includes(a.child.exitCode ?? -1), `exit ${String(a.child.exitCode ?? a.child.signalCode)}`);
        assert.match(a.stderr, /palisade: (guest|worker|VM)/);
      }
      assert.ok(ticks(b.output) >= ticksAfterAttack + 2);
    } finally {
      for (const vm of [a, b]) await vm.dispose();
    }
  },
);
