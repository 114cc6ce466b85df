/**
 * Where the image builder keeps things: `$XDG_CACHE_HOME/palisade` (or
 * `~/.cache/palisade`), with `downloads/` (kernel packages, unpacked) apart from
 * `images/<name>/` (built images), so a new image reuses the downloads.
 */
import { isAbsolute, join } from "node:path";

/** The cache root for an environment and home directory; pure. */
export function palisadeCacheDir(env: Readonly<Record<string, string | undefined>>, homeDir: string): string {
  const xdg = env.XDG_CACHE_HOME;
  // The XDG spec says to ignore relative paths.
  const base = xdg !== undefined && xdg !== "" && isAbsolute(xdg) ? xdg : join(homeDir, ".cache");
  return join(base, "palisade");
}

/** Downloaded packages and their unpacked trees. */
export function downloadsDir(cacheDir: string): string {
  return join(cacheDir, "downloads");
}

/** The default image's directory (`vmlinuz`, `initrd.img`, `manifest.json`). */
export function defaultImageDir(cacheDir: string): string {
  return join(cacheDir, "images", "default");
}
