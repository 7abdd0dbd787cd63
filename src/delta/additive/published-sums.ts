import type { ExpectedSum } from "../conventions/types.js";
import { namesRepo, type ReleaseEvidence } from "../conventions/release-evidence.js";

/**
 * Integrity sums publishers printed for their recovered models (the sum of
 * every tensor, as Alpaca's weight_diff.py computes it), by the Hub repo of
 * their delta. Applied automatically when the delta is that repo, however it
 * is named: by repo id, as its Hugging Face cache snapshot, or as a clone.
 */
const SUMS: readonly { repo: string; value: number; tolerance: number; from: string; script: string }[] = [
  // weight_diff.py `recover(..., check_integrity_and_sum=True)` asserts allclose(sum, 50637.1836, atol=1e-2, rtol=0).
  { repo: "tatsu-lab/alpaca-7b-wdiff", value: 50637.1836, tolerance: 1e-2, from: "Stanford Alpaca's published sum", script: "weight_diff.py" },
];

/** The published sum for the delta `evidence` names (picked as the XOR payloads' published lists are), if one is known. */
export function publishedSum(evidence: ReleaseEvidence): ExpectedSum | undefined {
  for (const known of SUMS) {
    const by = namesRepo(evidence, known.repo);
    if (by !== undefined) return { value: known.value, tolerance: known.tolerance, from: `${known.from} (${known.script}; picked by ${by})` };
  }
  return undefined;
}
