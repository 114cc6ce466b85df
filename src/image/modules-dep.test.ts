import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ModuleNotFoundError,
  formatModulesDep,
  moduleNameOf,
  modulesDepFromDirect,
  parseModulesBuiltin,
  parseModulesDep,
  resolveModuleLoadOrder,
} from "./modules-dep.js";

// Lines from the modules.dep depmod writes for Debian's 6.1.0-56-cloud-amd64 kernel.
const FIXTURE = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
`;

const names = (entries: { name: string }[]): string[] => entries.map((entry) => entry.name);

test("modules-dep: module names drop the suffix and read dashes as underscores", () => {
  assert.equal(moduleNameOf("kernel/drivers/char/hw_random/virtio-rng.ko.xz"), "virtio_rng");
  assert.equal(moduleNameOf("virtio_blk.ko"), "virtio_blk");
  assert.equal(moduleNameOf("virtio-blk"), "virtio_blk");
});

test("modules-dep: virtio_net loads after everything it needs, farthest first", () => {
  const order = resolveModuleLoadOrder(parseModulesDep(FIXTURE), ["virtio_net"]);

  assert.deepEqual(names(order), ["virtio_ring", "virtio", "failover", "net_failover", "virtio_net"]);
});

test("modules-dep: shared dependencies are loaded once, in the order asked", () => {
  const order = resolveModuleLoadOrder(parseModulesDep(FIXTURE), [
    "virtio_mmio",
    "virtio-pci",
    "virtio_blk",
    "virtio_rng",
  ]);

  assert.deepEqual(names(order), [
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "virtio_rng",
  ]);
  assert.equal(order.at(-1)?.path, "kernel/drivers/char/hw_random/virtio-rng.ko.xz");
});

test("modules-dep: an unknown module is a ModuleNotFoundError naming it; a built-in one is skipped", () => {
  const modulesDep = parseModulesDep(FIXTURE);

  assert.throws(
    () => resolveModuleLoadOrder(modulesDep, ["virtio_blk", "virtio_nope"]),
    (error: unknown) => {
      assert.ok(error instanceof ModuleNotFoundError);
      assert.equal(error.code, "image.module-not-found");
      assert.match(error.message, /^Kernel module virtio_nope is neither/);
      return true;
    },
  );
  assert.deepEqual(
    names(resolveModuleLoadOrder(modulesDep, ["ext4"], parseModulesBuiltin("kernel/fs/ext4/ext4.ko\n"))),
    [],
  );
});

test("modules-dep: a dependency missing from the file names the module that needs it", () => {
  const modulesDep = parseModulesDep("kernel/a.ko: kernel/b.ko\n");

  assert.throws(
    () => resolveModuleLoadOrder(modulesDep, ["a"]),
    /Kernel module b \(needed by a\) is missing/,
  );
});

test("modules-dep: malformed lines are refused with their line number", () => {
  assert.throws(() => parseModulesDep("kernel/a.ko:\nnonsense\n"), /modules.dep line 2/);
});

test("modules-dep: entries built from direct dependencies match what depmod writes", () => {
  const direct = [
    {
      name: "virtio_net",
      path: "kernel/drivers/net/virtio_net.ko",
      depends: ["net_failover", "virtio", "virtio_ring"],
    },
    { name: "net_failover", path: "kernel/drivers/net/net_failover.ko", depends: ["failover"] },
    { name: "failover", path: "kernel/net/core/failover.ko", depends: [] },
    { name: "virtio", path: "kernel/drivers/virtio/virtio.ko", depends: ["virtio_ring"] },
    { name: "virtio_ring", path: "kernel/drivers/virtio/virtio_ring.ko", depends: [] },
  ];

  const generated = parseModulesDep(formatModulesDep(modulesDepFromDirect(direct)));

  const depmod = parseModulesDep(FIXTURE);
  for (const entry of generated.values()) {
    assert.deepEqual(
      [...entry.dependencies].sort(),
      [...(depmod.get(entry.name)?.dependencies ?? [])].sort(),
      entry.name,
    );
  }
  // Loading the list from its end never loads a module before one it needs directly.
  const loadOrder = (generated.get("virtio_net")?.dependencies ?? []).map(moduleNameOf).reverse();
  for (const module of direct.filter((item) => loadOrder.includes(item.name))) {
    for (const dep of module.depends)
      assert.ok(loadOrder.indexOf(dep) < loadOrder.indexOf(module.name), `${dep} before ${module.name}`);
  }
});
