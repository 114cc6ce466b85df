/** Palisade's version, as shown by `--version` and to guests (docs/guest-interface.md). */
export const VERSION = "0.1.0";
