#!/usr/bin/env node
// Makes sure the Debian packages Palisade drives are installed. As root it installs what
// is missing (apt-get update first, as a fresh Debian machine needs); otherwise it prints
// the exact command to run. Plain JavaScript: it runs before the TypeScript build.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

/** command or file that proves the package is there -> Debian package. */
export const HOST_PACKAGES = [
  ["/usr/bin/qemu-system-x86_64", "qemu-system-x86"],
  ["/usr/bin/qemu-img", "qemu-utils"],
  ["/bin/busybox", "busybox-static"],
  ["/usr/bin/bwrap", "bubblewrap"],
  ["/usr/bin/setpriv", "util-linux"],
  ["/sbin/ip", "iproute2"],
  ["/usr/sbin/nft", "nftables"],
  ["/usr/sbin/dnsmasq", "dnsmasq-base"],
  ["/usr/bin/tcpdump", "tcpdump"],
  ["/usr/bin/gcc", "gcc"],
  ["/usr/bin/dpkg-deb", "dpkg"],
  // The default guest kernel (Debian cloud) is LZ4-compressed; the image builder unpacks
  // its vmlinux for PVH boot.
  ["/usr/bin/lz4", "lz4"],
  // bench switch-guests puts iperf3 into its guests (image build --add-binary).
  ["/usr/bin/iperf3", "iperf3"],
];

function missingPackages() {
  const missing = [];
  for (const [proof, pkg] of HOST_PACKAGES) {
    const busyboxIsStatic = proof !== "/bin/busybox" || isStaticBusybox();
    if ((!existsSync(proof) || !busyboxIsStatic) && !missing.includes(pkg)) missing.push(pkg);
  }
  return missing;
}

function isStaticBusybox() {
  if (!existsSync("/bin/busybox")) return false;
  const result = spawnSync("dpkg-query", ["-W", "-f=${Status}", "busybox-static"], { encoding: "utf8" });
  return result.status === 0 && result.stdout.includes("install ok installed");
}

const install = process.argv.includes("--install");
const missing = missingPackages();
if (missing.length === 0) process.exit(0);
const command = `apt-get update && apt-get install -y --no-install-recommends ${missing.join(" ")}`;
if (!install || process.getuid?.() !== 0) {
  console.error(`Palisade needs these Debian packages: ${missing.join(", ")}. Install them as root with:\n  ${command}`);
  process.exit(install ? 0 : 1);
}
console.error(`Installing Debian packages Palisade needs: ${missing.join(", ")}`);
const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
try {
  execFileSync("apt-get", ["update"], { stdio: ["ignore", "ignore", "inherit"], env });
  execFileSync("apt-get", ["install", "-y", "--no-install-recommends", ...missing], { stdio: ["ignore", "ignore", "inherit"], env });
} catch {
  console.error(`Installing failed; run it by hand:\n  ${command}`);
  process.exit(1);
}
