/**
 * Sorting comparators. `String.prototype.localeCompare` is avoided on purpose: its first
 * call loads ICU's collation data (~14 ms of `palisade run`'s start-up here), and the
 * orders Palisade needs (mount order, stable listings) are byte orders, not a language's.
 */

/** Orders strings by UTF-16 code units, as `Array.prototype.sort` does with no comparator. */
export function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
