import type { WeightFile } from "../model/types.js";
import { PytorchError } from "../errors.js";

/**
 * Opens a PyTorch checkpoint (the zip format of torch >= 1.6) without running
 * any of its pickle: tensors are rebuilt from an allow-list, bytes are read
 * in bounded chunks. (Placeholder until the reader lands.)
 */
export async function openPytorchFile(path: string): Promise<WeightFile> {
  throw new PytorchError(path, "PyTorch checkpoints are not supported yet");
}
