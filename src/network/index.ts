/**
 * `network/`: Palisade's virtual switches (private, internal, external), their ports (TAP
 * file descriptors for QEMU, veth pairs for namespaces), port ACLs, guards, mirroring,
 * capture and the flow log. A leaf library: imports only `util/`.
 */
export { VirtualSwitches } from "./switches.js";
export type {
  AttachPortRequest,
  AttachedPort,
  AttachVethRequest,
  CreateSwitchRequest,
  MirrorRequest,
  RepairReport,
  SwitchCounters,
  VirtualSwitchesOptions,
} from "./switches.js";
export { closeFd, openTap } from "./tap.js";
export type { OpenTapOptions } from "./tap.js";
export {
  checkVlan,
  formatCidr,
  formatIpv4,
  formatPortRange,
  formatPortRef,
  parseCidr,
  parseIpv4,
  parseMac,
  parsePortRange,
  parsePortRef,
  parseVlan,
  randomMac,
  switchNames,
  portIfname,
  VLAN_MAX,
  VLAN_MIN,
} from "./addresses.js";
export type { Ipv4Cidr, PortRange, PortRef } from "./addresses.js";
export { checkAclRule, compileStage, evaluateStage, stageRules } from "./acl.js";
export type { AclPacket, AclRuleInput, AclVerdict } from "./acl.js";
export { conntrackScript, nftScript, portAddScript, portRemoveScript, ruleCounts, STATEFUL_MARK, VLAN_MARK_MASK, VLAN_OBJECTS, vlanId } from "./ruleset.js";
export type { FlowRecord } from "./flows.js";
export { ACL_PRIORITY_DEFAULT, ACL_PRIORITY_MAX, ACL_PRIORITY_MIN, SWITCH_TYPES } from "./model.js";
export type { AclRule, AclAction, AclDirection, AclProtocol, Mirror, Port, Switch, SwitchType } from "./model.js";
export { DEFAULT_STATE_DIR, defaultStateDir } from "./state-store.js";
