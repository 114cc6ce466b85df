/**
 * The rule for names of roles, tasks, scopes, VMs and principals: they become file names,
 * log fields and URL segments, so they carry no path separators and no control characters.
 */

/** Longest name accepted, in characters. */
export const MAX_NAME_LENGTH = 64;

// Control characters: C0, DEL and C1.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * What is wrong with a name, or `null` when it is acceptable.
 *
 * @example
 * nameProblem("web-1");   // null
 * nameProblem("../etc");  // "must not contain a path separator"
 */
export function nameProblem(value: string): string | null {
  if (value.length === 0) return "must not be empty";
  if (value.length > MAX_NAME_LENGTH)
    return `must be at most ${MAX_NAME_LENGTH} characters (got ${value.length})`;
  if (value.includes("/") || value.includes("\\")) return "must not contain a path separator";
  if (CONTROL.test(value)) return "must not contain control characters";
  if (value === "." || value === "..") return "must not be . or ..";
  if (/\s/.test(value)) return "must not contain white space";
  return null;
}
