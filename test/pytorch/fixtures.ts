/**
 * The PyTorch checkpoints in test/fixtures/pytorch, written by real
 * torch.save (scripts/make-pytorch-fixtures.py), and what torch.load gave
 * back for each (expected.json).
 */
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const fixtureDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/pytorch");

export interface ExpectedTensor {
  name: string;
  dtype: string;
  shape: number[];
  sha256: string;
}

export const expected = JSON.parse(readFileSync(path.join(fixtureDir, "expected.json"), "utf8")) as {
  torch: string;
  files: Record<string, ExpectedTensor[]>;
};

export function fixture(name: string): string {
  return path.join(fixtureDir, name);
}
