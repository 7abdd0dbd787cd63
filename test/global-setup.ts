import { hasRealdata } from "./helpers/realdata.js";

/**
 * Runs once before the suite: says, in one line, what a clone without the
 * shared corpus skips (CI always has it beside the checkout, so it runs them).
 */
export default function setup(): void {
  if (!hasRealdata) {
    process.stdout.write(
      "note: ../shared/realdata is absent (a clone without the shared corpus): the tests that read its Hugging Face-written files are skipped; CI runs them\n",
    );
  }
}
