/**
 * `palisade run --net switch=NAME`: VMs get TAP ports on a Palisade switch (opened by
 * Palisade and handed to QEMU as file descriptors) and reach each other through it. The
 * switch lives in a network namespace the test creates; no host interface is touched.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { TestVm, defaultImage, runCli } from "../harness/test-vm.js";

const netns = `palrun${process.pid}`;
const stateDir = mkdtempSync(join(tmpdir(), "palisade-run-switch-"));
const switchArgs = ["--netns", netns, "--network-dir", stateDir];

before(async () => {
  await defaultImage();
  execFileSync("ip", ["netns", "add", netns]);
  const created = await runCli(["switch", "create", "lab", "--type", "private", "--netns", netns, "--state-dir", stateDir]);
  assert.equal(created.code, 0, created.stderr);
});
after(async () => {
  await runCli(["switch", "delete", "lab", "--netns", netns, "--state-dir", stateDir]);
  execFileSync("ip", ["netns", "del", netns]);
  rmSync(stateDir, { recursive: true, force: true });
});

test("run: two VMs on a private switch ping each other and move data intact", async () => {
  const a = await TestVm.start({ nets: ["switch=lab"], extraArgs: switchArgs });
  const b = await TestVm.start({ nets: ["switch=lab"], extraArgs: switchArgs });
  try {
    await a.exec("ip addr add 10.77.0.1/24 dev eth0 && ip link set eth0 up");
    await b.exec("ip addr add 10.77.0.2/24 dev eth0 && ip link set eth0 up");
    const ping = await a.exec("ping -c 3 -W 5 10.77.0.2", 60_000);
    // 20 MiB of random bytes over TCP; both sides print its checksum.
    await b.exec("(nc -l -p 5000 | md5sum > /tmp/got) & true");
    const sent = await a.exec("dd if=/dev/urandom of=/tmp/data bs=1M count=20 2>/dev/null; md5sum < /tmp/data; sleep 1; nc 10.77.0.2 5000 < /tmp/data", 120_000);
    const got = await b.exec("while [ ! -s /tmp/got ]; do sleep 0.2; done; cat /tmp/got", 60_000);

    assert.equal(ping.status, 0, ping.stdout);
    assert.match(ping.stdout, /3 packets received/);
    assert.equal(got.stdout.trim().split(/\s+/)[0], sent.stdout.trim().split(/\s+/)[0]);
    const ports = execFileSync("ip", ["-n", netns, "-j", "link", "show", "type", "tun"], { encoding: "utf8" });
    assert.equal((JSON.parse(ports) as unknown[]).length, 2, "one TAP per VM NIC while they run");
  } finally {
    await a.dispose();
    await b.dispose();
  }
});
