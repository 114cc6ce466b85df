/**
 * Optional DHCP on an internal switch: one Debian `dnsmasq` per switch, DHCP only (DNS
 * off), bound to the switch's bridge, supervised through its pid file: `switch repair`
 * restarts it when the process is gone.
 */
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { formatIpv4, subnetPlan, type Ipv4Cidr } from "./addresses.js";
import type { HostCommands } from "./host-commands.js";

/** Debian's dnsmasq. */
export const DNSMASQ = "/usr/sbin/dnsmasq";
/** Lease time handed to guests. */
export const DHCP_LEASE = "1h";

/** Files of one switch's DHCP server under the state directory. */
export function dhcpPaths(stateDir: string, switchId: string): { pidFile: string; leaseFile: string } {
  return { pidFile: join(stateDir, `dnsmasq-${switchId}.pid`), leaseFile: join(stateDir, `dnsmasq-${switchId}.leases`) };
}

/** The dnsmasq command line for a switch; pure. */
export function dnsmasqArgv(bridge: string, subnet: Ipv4Cidr, paths: { pidFile: string; leaseFile: string }): string[] {
  const plan = subnetPlan(subnet);
  return [
    DNSMASQ,
    "--conf-file=/dev/null",
    "--port=0",
    `--interface=${bridge}`,
    "--bind-interfaces",
    "--except-interface=lo",
    `--dhcp-range=${formatIpv4(plan.poolFirst)},${formatIpv4(plan.poolLast)},${DHCP_LEASE}`,
    "--dhcp-authoritative",
    `--dhcp-leasefile=${paths.leaseFile}`,
    `--pid-file=${paths.pidFile}`,
  ];
}

/** The pid of a running DHCP server, or undefined. */
export function dhcpPid(pidFile: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, "utf8").trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  // A recycled pid: make sure it is our dnsmasq.
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return cmdline.includes(`--pid-file=${pidFile}`) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Starts the switch's dnsmasq unless it runs already; it daemonizes and writes its pid file. */
export async function ensureDhcp(host: HostCommands, bridge: string, subnet: Ipv4Cidr, paths: { pidFile: string; leaseFile: string }): Promise<number> {
  const running = dhcpPid(paths.pidFile);
  if (running !== undefined) return running;
  await host.run(dnsmasqArgv(bridge, subnet, paths));
  const deadline = Date.now() + 5000;
  for (;;) {
    const pid = dhcpPid(paths.pidFile);
    if (pid !== undefined) return pid;
    if (Date.now() > deadline) return -1;
    await sleep(20);
  }
}

/** Stops the switch's dnsmasq (if any) and removes its files. */
export async function stopDhcp(paths: { pidFile: string; leaseFile: string }): Promise<void> {
  const pid = dhcpPid(paths.pidFile);
  if (pid !== undefined) {
    process.kill(pid, "SIGTERM");
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      try {
        process.kill(pid, 0);
      } catch {
        break;
      }
      await sleep(20);
    }
  }
  rmSync(paths.pidFile, { force: true });
  rmSync(paths.leaseFile, { force: true });
}
