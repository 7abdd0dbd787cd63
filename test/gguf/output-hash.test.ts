import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { convertModel } from "../../src/api.js";
import { convertModel as convertOnThisThread } from "../../src/model/convert.js";
import { REPO_ROOT } from "../helpers/realdata.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const MODEL = join(REPO_ROOT, "test", "fixtures", "gguf", "model");
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

describe("GGUF output hashed on a worker", () => {
  for (const outtype of ["f16", "q8_0"] as const) {
    it(`reports the SHA-256 of the ${outtype} file it wrote, the same file as hashing on the calling thread gives`, async () => {
      const root = await makeTempDir();
      const out = join(root, "worker", "model.gguf");
      const result = await convertModel(MODEL, out, { outtype });
      expect(result.files).toHaveLength(1);
      expect(result.files[0]!.sha256).toBe(sha256(out));
      const local = join(root, "local", "model.gguf");
      const direct = await convertOnThisThread(MODEL, local, { outtype });
      expect(readFileSync(out).equals(readFileSync(local))).toBe(true);
      expect(result.files[0]!.sha256).toBe(direct.files[0]!.sha256);
    });
  }
});
