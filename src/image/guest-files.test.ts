import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { MODULE_LIST_PATH, READY_MARKER, guestSystemFiles, moduleListFile } from "./guest-files.js";

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
