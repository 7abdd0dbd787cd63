import type { ExpectedSum } from "../conventions/types.js";

/**
 * Integrity sums publishers printed for their recovered models (the sum of
 * every tensor, as Alpaca's weight_diff.py computes it), by the Hub repo of
 * their delta. Applied automatically when the delta comes from that repo.
 */
const SUMS: readonly { repo: string; value: number; tolerance: number; from: string }[] = [
  // weight_diff.py `recover(..., check_integrity_and_sum=True)` asserts allclose(sum, 50637.1836, atol=1e-2, rtol=0).
  { repo: "tatsu-lab/alpaca-7b-wdiff", value: 50637.1836, tolerance: 1e-2, from: "Stanford Alpaca's published sum (weight_diff.py)" },
];

/** The published sum for a delta named by its Hub repo id (`org/name`, `org/name@rev`, `hf://...`), if one is known. */
export function publishedSum(source: string): ExpectedSum | undefined {
  const repo = source.replace(/^hf:\/\//, "").split("@")[0]!.toLowerCase();
  const known = SUMS.find((s) => s.repo.toLowerCase() === repo);
  return known === undefined ? undefined : { value: known.value, tolerance: known.tolerance, from: known.from };
}
