/** Where `palisade run --net switch=…` finds the virtual switches: as `palisade switch` does. */
import { VirtualSwitches } from "../network/index.js";

/** `--network-dir` (else PALISADE_NETWORK_DIR, else the network layer's default) and `--netns`. */
export function switchesFor(options: { stateDir?: string | undefined; netns?: string | undefined }): VirtualSwitches {
  return new VirtualSwitches({ stateDir: options.stateDir, netns: options.netns });
}
