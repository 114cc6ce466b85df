/**
 * Trust levels (the seed's best practice): a VM whose trust level differs from a VM
 * already running on the host is refused, unless the host configuration allows the pair.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { TestVm, defaultImage, runCli } from "../harness/test-vm.js";

const scratch = mkdtempSync(join(tmpdir(), "palisade-trust-"));
// This file's VMs are placed in their own registry, so other suites' VMs do not count.
process.env.PALISADE_PLACEMENT_DIR = join(scratch, "placement");
process.env.PALISADE_HOST_CONFIG = join(scratch, "host.json");
let image = { kernelPath: "", initrdPath: "" };
before(async () => {
  image = await defaultImage();
});
after(() => {
  rmSync(scratch, { recursive: true, force: true });
});

test("trust: an untrusted VM is refused next to a running standard one, and allowed once the host allows the pair", async () => {
  const standard = await TestVm.start();
  try {
    const refused = await runCli(["run", "--kernel", image.kernelPath, "--initrd", image.initrdPath, "--policy", "locked-down", "--run-dir", join(scratch, "run")]);
    writeFileSync(process.env.PALISADE_HOST_CONFIG ?? "", JSON.stringify({ trustPairs: [["standard", "untrusted"]] }));
    const untrusted = await TestVm.start({ extraArgs: ["--policy", "locked-down"] });
    const exit = await untrusted.powerOff();
    await untrusted.dispose();

    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /has trust level "untrusted", but VM "t.*" already running on this host has "standard"/);
    assert.equal(exit.code, 0);
  } finally {
    await standard.dispose();
  }
});
