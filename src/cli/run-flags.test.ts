import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../util/errors.js";
import { parseConsoleFlag, parseCpusFlag, parseDiskFlag, parseEventsFlag, parseMemoryFlag, parseNetFlag } from "./run-flags.js";

function rejects(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.match(error.message, message);
    return true;
  });
}

test("--disk: path, format and readonly; format from the extension by default", () => {
  assert.deepEqual(parseDiskFlag("path=/vms/a.img"), { path: "/vms/a.img", format: "raw", readonly: false });
  assert.deepEqual(parseDiskFlag("path=/vms/a.vhdx,readonly"), { path: "/vms/a.vhdx", format: "vhdx", readonly: true });
  assert.deepEqual(parseDiskFlag("path=/vms/a.vhd"), { path: "/vms/a.vhd", format: "vpc", readonly: false });
  assert.deepEqual(parseDiskFlag("path=/vms/a,format=qcow2,readonly=off"), { path: "/vms/a", format: "qcow2", readonly: false });
});

test("--disk: a bad key, a missing path or an unknown format is named", () => {
  rejects(() => parseDiskFlag("path=/a,fromat=raw"), /--disk: unknown key "fromat"/);
  rejects(() => parseDiskFlag("format=raw"), /--disk: key "path" is missing/);
  rejects(() => parseDiskFlag("path=/a,format=vmdk"), /--disk: format "vmdk" is unknown/);
  rejects(() => parseDiskFlag(""), /--disk: empty value/);
});

test("--net: user with forwards, switch with mac and vlan", () => {
  assert.deepEqual(parseNetFlag("user,hostfwd=tcp::2222-:22"), { kind: "user", hostfwd: ["tcp::2222-:22"] });
  assert.deepEqual(parseNetFlag("switch=lab,mac=52:54:00:00:00:01,vlan=10"), {
    kind: "switch",
    switch: "lab",
    mac: "52:54:00:00:00:01",
    vlan: 10,
  });
});

test("--net: an unknown network or key is named", () => {
  rejects(() => parseNetFlag("bridge=br0"), /--net: unknown network "bridge"/);
  rejects(() => parseNetFlag("user,hostfw=tcp::1-:2"), /--net user: unknown key "hostfw"/);
  rejects(() => parseNetFlag("switch="), /switch needs a name/);
  rejects(() => parseNetFlag("switch=lab,vlan=x"), /bad key "vlan"=x/);
});

test("--memory: sizes to MiB; garbage and fractions of a MiB refused", () => {
  assert.equal(parseMemoryFlag("512M"), 512);
  assert.equal(parseMemoryFlag("2G"), 2048);
  rejects(() => parseMemoryFlag("lots"), /--memory: "lots" is not a size/);
  rejects(() => parseMemoryFlag("1000K"), /not a whole number of MiB/);
});

test("--cpus, --console, --events", () => {
  assert.equal(parseCpusFlag("2"), 2);
  rejects(() => parseCpusFlag("two"), /--cpus: "two" is not a whole number/);
  assert.deepEqual(parseConsoleFlag("socket:/tmp/c.sock"), { kind: "socket", path: "/tmp/c.sock" });
  rejects(() => parseConsoleFlag("tty"), /--console: "tty"/);
  assert.deepEqual(parseEventsFlag("json:/tmp/e.jsonl"), { kind: "json", path: "/tmp/e.jsonl" });
  rejects(() => parseEventsFlag("syslog"), /--events: "syslog"/);
});
