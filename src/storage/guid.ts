import { randomBytes } from "node:crypto";

/**
 * GUIDs as VHDX stores them (Microsoft's mixed-endian layout: the first three groups
 * little-endian) and VHD stores them (16 bytes, big-endian as text). Values are the 16
 * bytes; text is only for messages and parent locators.
 */

/** Parses `{8-4-4-4-12}` or `8-4-4-4-12` text into Microsoft's on-disk byte order. */
export function guidFromString(text: string): Uint8Array {
  const hex = text.replace(/[{}-]/g, "");
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new TypeError(`not a GUID: ${text}`);
  const b = Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));
  const out = new Uint8Array(16);
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  order.forEach((from, to) => (out[to] = b[from] ?? 0));
  return out;
}

/** Formats Microsoft-order GUID bytes as upper-case `XXXXXXXX-XXXX-…` text. */
export function guidToString(bytes: Uint8Array): string {
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  const hex = order.map((i) => (bytes[i] ?? 0).toString(16).padStart(2, "0")).join("").toUpperCase();
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A new random (version 4) GUID, in on-disk order. */
export function newGuid(): Uint8Array {
  const b = new Uint8Array(randomBytes(16));
  // Byte 7 holds the version nibble in Microsoft order (group 3 is little-endian).
  b[7] = ((b[7] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  return b;
}

export function guidEquals(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function guidIsZero(a: Uint8Array): boolean {
  return a.every((byte) => byte === 0);
}
