/**
 * Pure parsing and naming for the virtual switch: IPv4 addresses and CIDRs, MAC
 * addresses, port ranges, and the kernel names Palisade derives for its bridges, ports
 * and nftables tables. No I/O.
 */
import { createHash, randomBytes } from "node:crypto";
import { ConfigError } from "../util/errors.js";

/** An IPv4 network: `address` is the network address as an unsigned 32-bit number. */
export interface Ipv4Cidr {
  readonly address: number;
  readonly prefixLength: number;
}

/** An inclusive range of TCP/UDP ports. */
export interface PortRange {
  readonly first: number;
  readonly last: number;
}

const IPV4_PATTERN = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/**
 * Parses a dotted-quad IPv4 address into an unsigned 32-bit number.
 * @throws {ConfigError} `network.bad-address` naming `what`.
 * @example parseIpv4("10.0.0.1", "--remote") === 0x0a000001
 */
export function parseIpv4(text: string, what: string): number {
  const match = IPV4_PATTERN.exec(text);
  const octets = match?.slice(1, 5).map(Number) ?? [];
  if (octets.length !== 4 || octets.some((octet) => octet > 255) || match?.slice(1, 5).some((o) => o.length > 1 && o.startsWith("0"))) {
    throw new ConfigError(`${what}: "${text}" is not an IPv4 address`, "network.bad-address");
  }
  return octets.reduce((value, octet) => value * 256 + octet, 0);
}

/** Lowest and highest access VLAN id (0 and 4095 are reserved by 802.1Q). */
export const VLAN_MIN = 1;
export const VLAN_MAX = 4094;

/**
 * Checks an access VLAN id.
 * @throws {ConfigError} `network.bad-vlan` naming `what`.
 */
export function checkVlan(vlan: number, what: string): number {
  if (!Number.isInteger(vlan) || vlan < VLAN_MIN || vlan > VLAN_MAX) {
    throw new ConfigError(`${what}: ${String(vlan)} is not a VLAN id (${VLAN_MIN}-${VLAN_MAX})`, "network.bad-vlan");
  }
  return vlan;
}

/**
 * Parses an access VLAN id given as text (decimal digits only).
 * @throws {ConfigError} `network.bad-vlan` naming `what`.
 * @example parseVlan("10", "--vlan") === 10
 */
export function parseVlan(text: string, what: string): number {
  if (!/^\d{1,4}$/.test(text)) throw new ConfigError(`${what}: "${text}" is not a VLAN id (${VLAN_MIN}-${VLAN_MAX})`, "network.bad-vlan");
  return checkVlan(Number(text), what);
}

/** Dotted-quad text of an unsigned 32-bit IPv4 address. */
export function formatIpv4(address: number): string {
  return [24, 16, 8, 0].map((shift) => String(Math.floor(address / 2 ** shift) % 256)).join(".");
}

/** The netmask of a prefix length as an unsigned 32-bit number. */
function maskOf(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

/**
 * Parses `A.B.C.D/N` (or a bare address, meaning /32). Host bits must be zero so that a
 * typo such as `10.0.0.5/24` is caught rather than silently widened.
 * @throws {ConfigError} `network.bad-cidr`.
 * @example parseCidr("10.1.2.0/24", "--subnet")
 */
export function parseCidr(text: string, what: string): Ipv4Cidr {
  const [addressText = "", lengthText, ...rest] = text.split("/");
  if (rest.length > 0 || (lengthText !== undefined && !/^\d{1,2}$/.test(lengthText))) {
    throw new ConfigError(`${what}: "${text}" is not an IPv4 CIDR such as 10.1.2.0/24`, "network.bad-cidr");
  }
  const prefixLength = lengthText === undefined ? 32 : Number(lengthText);
  if (prefixLength > 32) {
    throw new ConfigError(`${what}: prefix length ${prefixLength} in "${text}" is above 32`, "network.bad-cidr");
  }
  let address: number;
  try {
    address = parseIpv4(addressText, what);
  } catch {
    throw new ConfigError(`${what}: "${text}" is not an IPv4 CIDR such as 10.1.2.0/24`, "network.bad-cidr");
  }
  if ((address & ~maskOf(prefixLength)) >>> 0 !== 0) {
    const network = formatIpv4((address & maskOf(prefixLength)) >>> 0);
    throw new ConfigError(`${what}: "${text}" has host bits set (did you mean ${network}/${prefixLength}?)`, "network.bad-cidr");
  }
  return { address, prefixLength };
}

/** `A.B.C.D/N` text of a CIDR. */
export function formatCidr(cidr: Ipv4Cidr): string {
  return `${formatIpv4(cidr.address)}/${cidr.prefixLength}`;
}

/** Whether `address` lies inside `cidr`. */
export function cidrContains(cidr: Ipv4Cidr, address: number): boolean {
  const mask = maskOf(cidr.prefixLength);
  return (address & mask) >>> 0 === cidr.address;
}

/** Whether two CIDRs share at least one address (one contains the other). */
export function cidrsOverlap(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  const shorter = a.prefixLength <= b.prefixLength ? a : b;
  const longer = shorter === a ? b : a;
  return cidrContains(shorter, longer.address);
}

/**
 * The addresses a switch subnet gives out: the host's address on an internal switch
 * (the first usable one) and the DHCP pool (the rest, up to the last usable).
 * @throws {ConfigError} `network.bad-cidr` when the subnet is smaller than a /29.
 */
export function subnetPlan(subnet: Ipv4Cidr): { hostAddress: number; poolFirst: number; poolLast: number } {
  if (subnet.prefixLength > 29) {
    throw new ConfigError(`--subnet: ${formatCidr(subnet)} is too small for a switch (at most /29)`, "network.bad-cidr");
  }
  const size = 2 ** (32 - subnet.prefixLength);
  return { hostAddress: subnet.address + 1, poolFirst: subnet.address + 2, poolLast: subnet.address + size - 2 };
}

/**
 * Parses `A-B` or `A` into an inclusive port range within 1–65535.
 * @throws {ConfigError} `network.bad-port-range`.
 * @example parsePortRange("8000-8080") // { first: 8000, last: 8080 }
 */
export function parsePortRange(text: string, what = "--port-range"): PortRange {
  const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  const first = Number(match?.[1]);
  const last = match?.[2] === undefined ? first : Number(match[2]);
  if (match === null || first < 1 || last > 65535 || first > last) {
    throw new ConfigError(`${what}: "${text}" is not a port range such as 80 or 8000-8080 (ports 1-65535, first <= last)`, "network.bad-port-range");
  }
  return { first, last };
}

/** `A` or `A-B` text of a port range. */
export function formatPortRange(range: PortRange): string {
  return range.first === range.last ? String(range.first) : `${range.first}-${range.last}`;
}

const MAC_PATTERN = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/;

/**
 * Parses a unicast Ethernet address into lower-case colon form.
 * @throws {ConfigError} `network.bad-mac` for bad syntax, a multicast address or all zeros.
 */
export function parseMac(text: string, what = "mac"): string {
  const mac = text.toLowerCase();
  if (!MAC_PATTERN.test(mac)) {
    throw new ConfigError(`${what}: "${text}" is not a MAC address such as 52:54:00:12:34:56`, "network.bad-mac");
  }
  if ((parseInt(mac.slice(0, 2), 16) & 1) === 1 || mac === "00:00:00:00:00:00") {
    throw new ConfigError(`${what}: "${text}" is not a unicast MAC address`, "network.bad-mac");
  }
  return mac;
}

/** A random MAC in QEMU's locally used 52:54:00 prefix, as `virt-install` picks one. */
export function randomMac(random: (size: number) => Uint8Array = randomBytes): string {
  const tail = Array.from(random(3), (byte) => byte.toString(16).padStart(2, "0"));
  return ["52", "54", "00", ...tail].join(":");
}

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/**
 * Checks a switch or VM name: 1–63 characters, letters, digits, `_`, `.`, `-`, starting
 * with a letter or digit (safe in file names, nft comments and command lines).
 * @throws {ConfigError} `network.bad-name`.
 */
export function checkName(text: string, what: string): string {
  if (!NAME_PATTERN.test(text)) {
    throw new ConfigError(
      `${what} "${text}" is not valid: use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit`,
      "network.bad-name",
    );
  }
  return text;
}

/** A VM NIC as the CLI names it: `VM:NIC`. */
export interface PortRef {
  readonly vmName: string;
  readonly nic: string;
}

/**
 * Parses `VM:NIC` (NIC is a name such as `net0` or an index such as `0`).
 * @throws {ConfigError} `network.bad-port`.
 */
export function parsePortRef(text: string, what = "--port"): PortRef {
  const colon = text.lastIndexOf(":");
  if (colon <= 0 || colon === text.length - 1) {
    throw new ConfigError(`${what}: "${text}" is not a VM port such as web-1:net0`, "network.bad-port");
  }
  return { vmName: checkName(text.slice(0, colon), `${what} VM name`), nic: checkName(text.slice(colon + 1), `${what} NIC name`) };
}

/** `VM:NIC` text of a port reference. */
export function formatPortRef(ref: PortRef): string {
  return `${ref.vmName}:${ref.nic}`;
}

function shortHash(...parts: string[]): string {
  return createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 8);
}

/** Prefix of every bridge Palisade creates; `switch repair` only ever touches these. */
export const BRIDGE_PREFIX = "palb";
/** Prefix of every port interface (TAP or veth) Palisade creates. */
export const PORT_PREFIX = "palp";
/** Prefix of every nftables table Palisade creates (family bridge). */
export const TABLE_PREFIX = "palisade_";

/**
 * The kernel names of a switch, derived from its name so that they fit IFNAMSIZ (15
 * characters) and can be found again after a crash: `palb1a2b3c4d`, `palisade_1a2b3c4d`.
 */
export function switchNames(switchName: string): { id: string; bridge: string; table: string } {
  const id = shortHash("switch", switchName);
  return { id, bridge: `${BRIDGE_PREFIX}${id}`, table: `${TABLE_PREFIX}${id}` };
}

/** The kernel name of a VM NIC's port on a switch: `palp` and 8 hex digits (12 characters). */
export function portIfname(switchName: string, ref: PortRef): string {
  return `${PORT_PREFIX}${shortHash("port", switchName, ref.vmName, ref.nic)}`;
}
