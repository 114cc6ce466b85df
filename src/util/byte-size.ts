import { ConfigError } from "./errors.js";

const UNITS: Readonly<Record<string, bigint>> = {
  "": 1n,
  B: 1n,
  K: 1n << 10n,
  KB: 1n << 10n,
  KIB: 1n << 10n,
  M: 1n << 20n,
  MB: 1n << 20n,
  MIB: 1n << 20n,
  G: 1n << 30n,
  GB: 1n << 30n,
  GIB: 1n << 30n,
  T: 1n << 40n,
  TB: 1n << 40n,
  TIB: 1n << 40n,
};

/**
 * Parses a size such as `512M`, `20G`, `1.5G` or `4096` (bytes) into bytes. Units are
 * binary (K = 1024), as QEMU, qemu-img and Hyper-V read them.
 * @throws {ConfigError} when the text is not a size; the message names `what`.
 * @example parseByteSize("512M", "--memory") === 536870912n
 */
export function parseByteSize(text: string, what: string): bigint {
  const match = /^\s*(\d{1,20})(?:\.(\d{1,9}))?\s*([a-zA-Z]{0,3})\s*$/.exec(text);
  const unit = match ? UNITS[(match[3] ?? "").toUpperCase()] : undefined;
  if (!match || unit === undefined) {
    throw new ConfigError(`${what}: "${text}" is not a size (examples: 512M, 20G, 1048576)`, "config.bad-size");
  }
  const whole = BigInt(match[1] ?? "0") * unit;
  const fractionText = match[2] ?? "";
  const fraction = fractionText === "" ? 0n : (BigInt(fractionText) * unit) / 10n ** BigInt(fractionText.length);
  return whole + fraction;
}

/** Formats bytes for people: `512 MiB`, `1.5 GiB`, `4096 B`. */
export function formatByteSize(bytes: bigint | number): string {
  const value = Number(bytes);
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let scaled = value;
  let index = 0;
  while (scaled >= 1024 && index < units.length - 1) {
    scaled /= 1024;
    index++;
  }
  const text = index === 0 || Number.isInteger(scaled) ? String(scaled) : scaled.toFixed(1);
  return `${text} ${units[index] ?? "B"}`;
}
