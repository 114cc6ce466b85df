import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type ModuleInfo,
  aliasBus,
  formatModulesAlias,
  isDeviceDriver,
  modulesLoadedAtBoot,
} from "./module-aliases.js";

// .modinfo aliases as Debian's 6.1 cloud kernel ships them.
const virtioMmio: ModuleInfo = {
  name: "virtio_mmio",
  modinfo: [
    ["license", "GPL"],
    ["alias", "of:N*T*Cvirtio,mmioC*"],
    ["alias", "acpi*:LNRO0005:*"],
    ["depends", "virtio,virtio_ring"],
  ],
};
const virtioBlk: ModuleInfo = { name: "virtio_blk", modinfo: [["alias", "virtio:d00000002v*"]] };
const evdev: ModuleInfo = { name: "evdev", modinfo: [["alias", "input:b*v*p*e*-e*k*r*a*m*l*s*f*w*"]] };
const ext4: ModuleInfo = {
  name: "ext4",
  modinfo: [
    ["alias", "fs-ext4"],
    ["alias", "fs-ext3"],
    ["depends", "jbd2,mbcache,crc16"],
  ],
};
const tun: ModuleInfo = { name: "tun", modinfo: [["alias", "devname:net/tun"], ["alias", "char-major-10-200"]] };
const crc32cIntel: ModuleInfo = {
  name: "crc32c_intel",
  modinfo: [["alias", "cpu:type:x86,ven*fam*mod*:feature:*0094*"], ["alias", "crypto-crc32c"]],
};
const virtioRing: ModuleInfo = { name: "virtio_ring", modinfo: [["license", "GPL"]] };

test("module-aliases: the bus of an alias is the part before its colon, for buses coldplug reads", () => {
  assert.equal(aliasBus("acpi*:LNRO0005:*"), "acpi");
  assert.equal(aliasBus("pci:v00001AF4d*sv*sd*bc*sc*i*"), "pci");
  assert.equal(aliasBus("virtio:d00000002v*"), "virtio");
  assert.equal(aliasBus("of:N*T*Cvirtio,mmio"), "of");
  assert.equal(aliasBus("devname:net/tun"), undefined);
  assert.equal(aliasBus("cpu:type:x86,ven*"), undefined);
  assert.equal(aliasBus("fs-ext4"), undefined);
  assert.equal(aliasBus(":pci"), undefined);
});

test("module-aliases: drivers of devices are told apart from modules that drive none", () => {
  assert.equal(isDeviceDriver(virtioMmio), true);
  assert.equal(isDeviceDriver(virtioBlk), true);
  assert.equal(isDeviceDriver(evdev), true);
  assert.equal(isDeviceDriver(ext4), false);
  assert.equal(isDeviceDriver(tun), false);
  assert.equal(isDeviceDriver(crc32cIntel), false, "the cpu bus is not coldplugged: loaded at boot");
  assert.equal(isDeviceDriver(virtioRing), false);
});

test("module-aliases: modules.alias has one line per alias, in module order", () => {
  const text = formatModulesAlias([virtioMmio, virtioRing, virtioBlk, tun]);

  assert.equal(
    text,
    [
      "alias of:N*T*Cvirtio,mmioC* virtio_mmio",
      "alias acpi*:LNRO0005:* virtio_mmio",
      "alias virtio:d00000002v* virtio_blk",
      "alias devname:net/tun tun",
      "alias char-major-10-200 tun",
      "",
    ].join("\n"),
  );
});

test("module-aliases: an alias with blanks (hostile .modinfo) cannot add a field to modules.alias", () => {
  const hostile: ModuleInfo = {
    name: "bad",
    modinfo: [
      ["alias", "pci:x evil\nalias * bad"],
      ["alias", ""],
      ["alias", "virtio:d00000009v*"],
    ],
  };

  assert.equal(formatModulesAlias([hostile]), "alias virtio:d00000009v* bad\n");
});

test("module-aliases: at boot go the asked-for modules that drive no device, in the order asked", () => {
  const modules = [virtioRing, virtioMmio, virtioBlk, evdev, ext4, tun, crc32cIntel];

  assert.deepEqual(
    modulesLoadedAtBoot(["tun", "virtio_blk", "ext4", "evdev", "crc32c_intel", "virtio_mmio"], modules),
    ["tun", "ext4", "crc32c_intel"],
  );
  assert.deepEqual(modulesLoadedAtBoot(["virtio_mmio", "virtio_blk"], modules), []);
  assert.deepEqual(modulesLoadedAtBoot(["not_selected"], modules), [], "a module not in the image is not listed");
});
