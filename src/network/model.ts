/**
 * What a virtual switch is, as stored in the state file: switches, their ports, ACL rules
 * and mirrors. Validated once by zod when the file is read; readonly values afterwards.
 */
import * as z from "zod";

/** Hyper-V's three kinds of virtual switch. */
export const SWITCH_TYPES = ["private", "internal", "external"] as const;
/** private: VMs only; internal: VMs and the host; external: bridged to a host NIC. */
export type SwitchType = (typeof SWITCH_TYPES)[number];

export const ACL_DIRECTIONS = ["in", "out"] as const;
/** `in`: traffic delivered to the VM port; `out`: traffic sent by the VM. */
export type AclDirection = (typeof ACL_DIRECTIONS)[number];
export const ACL_ACTIONS = ["allow", "deny"] as const;
export type AclAction = (typeof ACL_ACTIONS)[number];
export const ACL_PROTOCOLS = ["tcp", "udp", "icmp", "any"] as const;
export type AclProtocol = (typeof ACL_PROTOCOLS)[number];

/** Priority range of ACL rules: higher is evaluated first. */
export const ACL_PRIORITY_MIN = 1;
export const ACL_PRIORITY_MAX = 65535;
export const ACL_PRIORITY_DEFAULT = 1000;

const portRangeSchema = z.object({ first: z.number().int().min(1).max(65535), last: z.number().int().min(1).max(65535) });
const cidrSchema = z.object({ address: z.number().int().min(0).max(0xffffffff), prefixLength: z.number().int().min(0).max(32) });

export const aclRuleSchema = z.object({
  id: z.number().int().positive(),
  /** Unset: the rule applies to every VM port of the switch. */
  port: z.object({ vmName: z.string(), nic: z.string() }).optional(),
  direction: z.enum(ACL_DIRECTIONS),
  action: z.enum(ACL_ACTIONS),
  protocol: z.enum(ACL_PROTOCOLS),
  /** The other end: source address for `in`, destination for `out`. Unset: any. */
  remote: cidrSchema.optional(),
  /** Destination port of the packet (the service port); tcp and udp only. */
  portRange: portRangeSchema.optional(),
  priority: z.number().int().min(ACL_PRIORITY_MIN).max(ACL_PRIORITY_MAX),
});
/** One port ACL rule. */
export type AclRule = z.infer<typeof aclRuleSchema>;

export const portSchema = z.object({
  vmName: z.string(),
  nic: z.string(),
  /** Kernel interface name of the port (TAP, or the host end of a veth). */
  ifname: z.string(),
  kind: z.enum(["tap", "veth"]),
  mac: z.string(),
  vlan: z.number().int().min(1).max(4094).optional(),
  /** For a veth port: the network namespace holding the guest end. */
  peerNetns: z.string().optional(),
  /** Drop frames whose source MAC is not the port's. */
  macGuard: z.boolean(),
  /** Drop DHCP server replies and IPv6 router advertisements sent by the VM. */
  dhcpGuard: z.boolean(),
  routerGuard: z.boolean(),
  createdAt: z.string(),
});
/** A VM NIC's port on a switch. */
export type Port = z.infer<typeof portSchema>;

export const mirrorSchema = z.object({
  from: z.object({ vmName: z.string(), nic: z.string() }),
  /** A port of the same switch, or a host interface. */
  to: z.union([z.object({ port: z.object({ vmName: z.string(), nic: z.string() }) }), z.object({ ifname: z.string() })]),
});
/** A copy of one port's traffic (both directions) sent to another port or interface. */
export type Mirror = z.infer<typeof mirrorSchema>;

export const switchSchema = z.object({
  name: z.string(),
  id: z.string(),
  type: z.enum(SWITCH_TYPES),
  bridge: z.string(),
  table: z.string(),
  uplink: z.string().optional(),
  subnet: cidrSchema.optional(),
  dhcp: z.boolean(),
  defaultDeny: z.boolean(),
  /**
   * Stateful ACLs: packets of connections conntrack has seen allowed (replies, ICMP errors)
   * pass without the ACL stages. Turns conntrack on in the switch's network namespace.
   */
  stateful: z.boolean().default(false),
  /** Log flows (one set update per packet); off trades the log for throughput. */
  flowLog: z.boolean().default(true),
  createdAt: z.string(),
  ports: z.array(portSchema),
  acls: z.array(aclRuleSchema),
  nextAclId: z.number().int().positive(),
  mirrors: z.array(mirrorSchema),
});
/** A virtual switch and everything attached to it. */
export type Switch = z.infer<typeof switchSchema>;

export const networkStateSchema = z.object({ version: z.literal(1), switches: z.array(switchSchema) });
/** The whole state file. */
export type NetworkState = z.infer<typeof networkStateSchema>;

/** Whether a port matches a `VM:NIC` reference. */
export function isPort(port: { vmName: string; nic: string }, ref: { vmName: string; nic: string }): boolean {
  return port.vmName === ref.vmName && port.nic === ref.nic;
}
