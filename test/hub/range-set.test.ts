import { describe, expect, it } from "vitest";
import { RangeSet } from "../../src/hub/transport/range-set.js";

describe("RangeSet", () => {
  it("merges touching and overlapping ranges, in any order", () => {
    const set = new RangeSet();
    set.add(10, 20);
    set.add(30, 40);
    set.add(20, 25);
    set.add(0, 5);
    expect(set.ranges()).toEqual([[0, 5], [10, 25], [30, 40]]);
    set.add(4, 31);
    expect(set.ranges()).toEqual([[0, 40]]);
    expect(set.size()).toBe(40);
    expect(set.prefix()).toBe(40);
  });

  it("answers coverage, prefix and gaps", () => {
    const set = new RangeSet();
    set.add(100, 200);
    expect(set.prefix()).toBe(0);
    expect(set.covers(120, 200)).toBe(true);
    expect(set.covers(99, 150)).toBe(false);
    expect(set.covers(5, 5)).toBe(true);
    expect(set.gaps(300)).toEqual([[0, 100], [200, 300]]);
    set.add(0, 100);
    expect(set.gaps(200)).toEqual([]);
  });

  it("rebuilds from a sidecar only when the ranges are sorted, disjoint integers inside the file", () => {
    expect(RangeSet.fromJSON([[0, 10], [20, 30]], 30, 10)).toBeInstanceOf(RangeSet);
    expect(RangeSet.fromJSON([[20, 30], [0, 10]], 30, 10)).toMatch(/out of order/);
    expect(RangeSet.fromJSON([[0, 10], [5, 12]], 30, 10)).toMatch(/out of order/);
    expect(RangeSet.fromJSON([[0, 31]], 30, 10)).toMatch(/outside the file/);
    expect(RangeSet.fromJSON([[0, 1.5]], 30, 10)).toMatch(/not an integer/);
    expect(RangeSet.fromJSON([[1, 1]], 30, 10)).toMatch(/out of order/);
    expect(RangeSet.fromJSON({ 0: [0, 1] }, 30, 10)).toMatch(/not a list/);
    expect(RangeSet.fromJSON(Array.from({ length: 11 }, (_, i) => [i * 2, i * 2 + 1]), 30, 10)).toMatch(/more than 10 ranges/);
  });
});
