import { createHash } from "node:crypto";
import { openSafetensorsFile } from "../../formats/registry.js";
import type { Manifest } from "./manifest.js";

/**
 * Names the first tensor of a safetensors file whose bytes differ from
 * delta.json: only run when a file's hash already failed, to say where.
 */
export async function firstDifferentTensor(path: string, manifest: Manifest): Promise<string | undefined> {
  try {
    const file = await openSafetensorsFile(path);
    try {
      for (const t of file.tensors) {
        const hash = createHash("sha256");
        for await (const chunk of file.readTensor(t.name)) hash.update(chunk);
        if (hash.digest("hex") !== manifest.target.tensors.get(t.name)?.sha256) return t.name;
      }
    } finally {
      await file.close();
    }
  } catch {
    return undefined; // the header itself is damaged: the file's name says enough
  }
  return undefined;
}
