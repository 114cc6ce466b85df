import assert from "node:assert/strict";
import { test } from "node:test";
import { parseCidr } from "./addresses.js";
import { dhcpPaths, dnsmasqArgv } from "./dhcp.js";

test("dhcp: one dnsmasq per switch, DHCP only, bound to the bridge, pool after the host address", () => {
  const paths = dhcpPaths("/var/lib/palisade/network", "1a2b3c4d");

  const argv = dnsmasqArgv("palb1a2b3c4d", parseCidr("10.20.0.0/24", "--subnet"), paths);

  assert.deepEqual(argv, [
    "/usr/sbin/dnsmasq",
    "--conf-file=/dev/null",
    "--port=0",
    "--interface=palb1a2b3c4d",
    "--bind-interfaces",
    "--except-interface=lo",
    "--dhcp-range=10.20.0.2,10.20.0.254,1h",
    "--dhcp-authoritative",
    "--dhcp-leasefile=/var/lib/palisade/network/dnsmasq-1a2b3c4d.leases",
    "--pid-file=/var/lib/palisade/network/dnsmasq-1a2b3c4d.pid",
  ]);
});
