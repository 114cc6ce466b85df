/** Where the CLI finds the virtual switches: shared by `palisade switch` and `palisade run --net switch=…`. */
import { homedir } from "node:os";
import { join } from "node:path";
import { DEFAULT_STATE_DIR, VirtualSwitches } from "../network/index.js";

/** The switches' state directory: the flag, then PALISADE_NETWORK_DIR, then the per-user default. */
export function networkStateDir(flag: string | undefined): string {
  const fallback = process.getuid?.() === 0 ? DEFAULT_STATE_DIR : join(homedir(), ".local/share/palisade/network");
  return flag ?? process.env.PALISADE_NETWORK_DIR ?? fallback;
}

export function switchesFor(options: { stateDir?: string | undefined; netns?: string | undefined }): VirtualSwitches {
  return new VirtualSwitches({ stateDir: networkStateDir(options.stateDir), netns: options.netns });
}
