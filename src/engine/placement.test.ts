import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { resolvePolicy } from "../policy/index.js";
import { hostPolicyCeiling, placedVms, reservePlacement } from "./placement.js";
import { testSpec } from "./test-fixtures.js";

const standard = testSpec({ name: "std", uuid: "11111111-1111-4111-8111-111111111111" });
const untrusted = testSpec({
  name: "untr",
  uuid: "22222222-2222-4222-8222-222222222222",
  policy: resolvePolicy({ preset: "locked-down" }),
});

function withDirs(body: (dir: string, runRoot: string) => void): void {
  const root = mkdtempSync(join(tmpdir(), "palisade-placement-"));
  const saved = process.env.PALISADE_HOST_CONFIG;
  process.env.PALISADE_HOST_CONFIG = join(root, "no-host.json");
  try {
    body(join(root, "placement"), join(root, "vms"));
  } finally {
    if (saved === undefined) delete process.env.PALISADE_HOST_CONFIG;
    else process.env.PALISADE_HOST_CONFIG = saved;
    rmSync(root, { recursive: true, force: true });
  }
}

test("placement: a VM is recorded before its worker exists, so a second one of another trust level is refused meanwhile", () => {
  withDirs((dir, runRoot) => {
    const unplace = reservePlacement(standard, join(runRoot, "std"), dir);

    assert.deepEqual(
      placedVms(dir).map((entry) => entry.name),
      ["std"],
      "the launching VM's record holds while its launcher lives, with no worker yet",
    );
    assert.throws(() => reservePlacement(untrusted, join(runRoot, "untr"), dir), { code: "config.trust-placement" });
    assert.deepEqual(readdirSync(dir).sort(), [`${standard.uuid}.json`], "the refused VM leaves no record");

    unplace();
    const again = reservePlacement(untrusted, join(runRoot, "untr"), dir);
    again();
  });
});

test("placement: a record whose launcher is gone and whose worker never started is stale", () => {
  withDirs((dir, runRoot) => {
    reservePlacement(standard, join(runRoot, "std"), dir);
    const file = join(dir, `${standard.uuid}.json`);
    const entry = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...entry, launcherStart: "0" })); // another process's pid reuse

    assert.deepEqual(placedVms(dir), []);
    assert.deepEqual(readdirSync(dir), [], "the stale record is removed");
  });
});

test("placement: the host's policy ceiling is the default preset unless host.json names another; a bad one is refused naming maxPolicy", () => {
  const root = mkdtempSync(join(tmpdir(), "palisade-ceiling-"));
  const saved = process.env.PALISADE_HOST_CONFIG;
  try {
    process.env.PALISADE_HOST_CONFIG = join(root, "host.json");
    assert.equal(hostPolicyCeiling().trustLevel, "standard", "no host.json: the default preset");
    writeFileSync(process.env.PALISADE_HOST_CONFIG, JSON.stringify({ maxPolicy: "locked-down" }));
    assert.equal(hostPolicyCeiling().network.userNet, false);
    writeFileSync(process.env.PALISADE_HOST_CONFIG, JSON.stringify({ maxPolicy: { sandbox: { enabled: "yes" } } }));
    assert.throws(() => hostPolicyCeiling(), (error: Error & { code?: string }) => error.code === "config.host-config" && error.message.includes('maxPolicy'));
    writeFileSync(process.env.PALISADE_HOST_CONFIG, JSON.stringify({ maxPolicy: "no-such-preset" }));
    assert.throws(() => hostPolicyCeiling(), { code: "config.host-config" });
  } finally {
    if (saved === undefined) delete process.env.PALISADE_HOST_CONFIG;
    else process.env.PALISADE_HOST_CONFIG = saved;
    rmSync(root, { recursive: true, force: true });
  }
});
