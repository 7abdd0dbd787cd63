/**
 * A set of byte ranges [start, end) of one file, kept sorted, disjoint and
 * merged: which bytes of a download are on disk. Pure: no I/O.
 */
export class RangeSet {
  /** Flat [start0, end0, start1, end1, ...], sorted, no two touching. */
  #bounds: number[] = [];

  /** The ranges, as [start, end) pairs. */
  ranges(): [number, number][] {
    const out: [number, number][] = [];
    for (let i = 0; i < this.#bounds.length; i += 2) out.push([this.#bounds[i]!, this.#bounds[i + 1]!]);
    return out;
  }

  add(start: number, end: number): void {
    if (end <= start) return;
    const b = this.#bounds;
    // First range that ends at or after `start` (it may touch or overlap).
    let i = 0;
    while (i < b.length && b[i + 1]! < start) i += 2;
    let j = i;
    let lo = start;
    let hi = end;
    while (j < b.length && b[j]! <= end) {
      lo = Math.min(lo, b[j]!);
      hi = Math.max(hi, b[j + 1]!);
      j += 2;
    }
    b.splice(i, j - i, lo, hi);
  }

  /** True if every byte of [start, end) is in the set. */
  covers(start: number, end: number): boolean {
    if (end <= start) return true;
    const b = this.#bounds;
    for (let i = 0; i < b.length; i += 2) {
      if (b[i]! <= start && end <= b[i + 1]!) return true;
      if (b[i]! > start) return false;
    }
    return false;
  }

  /** Length of the contiguous run from byte 0. */
  prefix(): number {
    return this.#bounds[0] === 0 ? this.#bounds[1]! : 0;
  }

  /** Bytes in the set. */
  size(): number {
    let n = 0;
    for (let i = 0; i < this.#bounds.length; i += 2) n += this.#bounds[i + 1]! - this.#bounds[i]!;
    return n;
  }

  /** The ranges of [0, length) not in the set, in order. */
  gaps(length: number): [number, number][] {
    const out: [number, number][] = [];
    let at = 0;
    for (const [s, e] of this.ranges()) {
      if (s >= length) break;
      if (s > at) out.push([at, s]);
      at = Math.max(at, e);
    }
    if (at < length) out.push([at, length]);
    return out;
  }

  /**
   * Rebuilds a set from its JSON form (a sidecar read from disk, so untrusted):
   * integer pairs, each inside [0, length), in increasing order without overlap.
   * Returns the problem as a string instead of throwing.
   */
  static fromJSON(value: unknown, length: number, maxRanges: number): RangeSet | string {
    if (!Array.isArray(value)) return "ranges are not a list";
    if (value.length > maxRanges) return `more than ${maxRanges} ranges`;
    const set = new RangeSet();
    let last = 0;
    for (const pair of value) {
      if (!Array.isArray(pair) || pair.length !== 2) return "a range is not a [start, end] pair";
      const [s, e] = pair as unknown[];
      if (!Number.isSafeInteger(s) || !Number.isSafeInteger(e)) return "a range bound is not an integer";
      const start = s as number;
      const end = e as number;
      if (start < last || end <= start || end > length) return `range [${start}, ${end}) is out of order or outside the file`;
      set.add(start, end);
      last = end;
    }
    return set;
  }
}
