/**
 * The engine's path, end to end, with a real QEMU: a TAP fd from `attachPort` passed to
 * QEMU through spawn's stdio array (`-netdev tap,fd=3`, virtio-net with vnet headers). The
 * VM's firmware (iPXE network boot) asks for an address and gets one from the internal
 * switch's dnsmasq; the flow log shows it; when QEMU exits the TAP is gone. Runs in a
 * network namespace this test creates.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { closeFd, VirtualSwitches } from "../../src/network/index.js";

const QEMU = "/usr/bin/qemu-system-x86_64";
// QEMU looks up its option ROMs in its data directory; Debian links them from ipxe-qemu.
const VIRTIO_ROM = "/usr/lib/ipxe/qemu/efi-virtio.rom";

async function run(argv: string[]): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(argv[0] ?? "false", argv.slice(1), { timeout: 10_000 }, (error) => {
      resolve(error === null);
    });
  });
}

test("a QEMU NIC on a Palisade TAP fd gets a DHCP lease from an internal switch", { skip: !existsSync(QEMU) || !existsSync(VIRTIO_ROM) ? "needs qemu-system-x86 and its iPXE ROMs" : false }, async () => {
  const netns = `pq${process.pid % 100000}h`;
  const stateDir = mkdtempSync(join(tmpdir(), "palisade-qemu-net-"));
  assert.ok(await run(["ip", "netns", "add", netns]));
  const switches = new VirtualSwitches({ stateDir, netns });
  try {
    const sw = await switches.create({ name: "boot", type: "internal", subnet: { address: 0x0a5a0000, prefixLength: 24 }, dhcp: true });
    const port = await switches.attachPort({ switchName: "boot", vmName: "vm1", nic: "net0" });
    const qemu = spawn(
      QEMU,
      ["-nodefaults", "-no-user-config", "-display", "none", "-serial", "null", "-accel", "tcg", "-m", "64", "-boot", "n",
        "-netdev", "tap,id=n0,fd=3", "-device", `virtio-net-pci,netdev=n0,mac=${port.mac}`],
      { stdio: ["ignore", "ignore", "ignore", port.fd] },
    );
    closeFd(port.fd); // QEMU holds the TAP now, as the engine will do
    const exited = new Promise((resolve) => qemu.on("exit", resolve));
    try {
      const leaseFile = join(stateDir, `dnsmasq-${sw.id}.leases`);
      let leases = "";
      const deadline = Date.now() + 60_000; // iPXE under TCG asks after ~5 s
      while (!leases.includes(port.mac) && Date.now() < deadline) {
        await sleep(250);
        leases = existsSync(leaseFile) ? readFileSync(leaseFile, "utf8") : "";
      }
      assert.match(leases, new RegExp(`${port.mac} 10\\.90\\.0\\.\\d+ `), "the VM got a lease");
      const flows = await switches.flows("boot");
      assert.ok(
        flows.some((flow) => flow.port === "vm1:net0" && flow.protocol === "udp" && flow.sourcePort === 68 && flow.destinationPort === 67),
        `the flow log shows the VM's DHCP request: ${JSON.stringify(flows)}`,
      );
      assert.equal((await switches.counters("boot")).guards.get("vm1:net0")?.mac, 0, "the guest's frames carry its own MAC");
    } finally {
      qemu.kill();
      await exited;
    }
    await sleep(100);
    assert.ok(!(await run(["ip", "netns", "exec", netns, "ip", "link", "show", "dev", port.ifname])), "the TAP died with QEMU");
    assert.deepEqual((await switches.repair()).stalePorts, ["boot/vm1:net0"]);
  } finally {
    await switches.delete("boot").catch(() => undefined);
    await run(["ip", "netns", "del", netns]);
    rmSync(stateDir, { recursive: true, force: true });
  }
});
