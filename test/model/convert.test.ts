import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { MAX_TENSORS_PER_FILE } from "../../src/limits.js";
import { formatIndex } from "../../src/formats/shard-plan.js";
import { convertModel } from "../../src/model/convert.js";
import { openModel } from "../../src/model/open-model.js";
import type { ProgressEvent } from "../../src/progress.js";
import { REAL_FILES, hasRealdata, realPath } from "../helpers/realdata.js";
import { buildSafetensors } from "../helpers/safetensors-bytes.js";
import { makeTempDir } from "../helpers/temp-dir.js";

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

describe.skipIf(!hasRealdata)("convert FILE out.safetensors reproduces every real file byte for byte", () => {
  for (const real of REAL_FILES) {
    it(`reproduces ${real.path}`, async () => {
      const dir = await makeTempDir();
      const out = join(dir, "out.safetensors");
      const result = await convertModel(realPath(real.path), out);
      expect(sha256(out)).toBe(real.sha256);
      expect(result.files).toEqual([{ path: "out.safetensors", size: real.size, sha256: real.sha256 }]);
      expect(readdirSync(dir)).toEqual(["out.safetensors"]); // no temp file left behind
    });
  }
});

describe.skipIf(!hasRealdata)("convert to a directory", () => {
  it("shards tiny-llama like the real sharded copy: identical index, same tensors, {\"format\":\"pt\"} shards", async () => {
    const dir = await makeTempDir();
    const out = join(dir, "model");
    // shard 1 of the real copy holds 176256 bytes of tensors; at that limit HF's split gives the same two shards
    const result = await convertModel(realPath("tiny-llama-bf16"), out, { maxShardBytes: 176256 });
    expect(result.files.map((f) => f.path)).toEqual([
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
      "config.json",
    ]);
    expect(readFileSync(join(out, "model.safetensors.index.json"), "utf8")).toBe(
      readFileSync(realPath("tiny-llama-bf16/sharded/model.safetensors.index.json"), "utf8"),
    );
    expect(sha256(join(out, "config.json"))).toBe(sha256(realPath("tiny-llama-bf16/config.json")));
    const model = await openModel(out);
    try {
      expect(model.tensors.size).toBe(21);
      expect(model.metadata.get("model-00002-of-00002.safetensors")).toEqual({ format: "pt" });
    } finally {
      await model.close();
    }
  });

  it("joins the real shards back into the real single file, byte for byte", async () => {
    const dir = await makeTempDir();
    const out = join(dir, "joined.safetensors");
    await convertModel(realPath("tiny-llama-bf16/sharded"), out);
    expect(sha256(out)).toBe(sha256(realPath("tiny-llama-bf16/model.safetensors")));
  });

  it("writes one model.safetensors and no index when everything fits", async () => {
    const dir = await makeTempDir();
    const out = join(dir, "model");
    const result = await convertModel(realPath("safetensors-jl-dtypes/sharded"), out);
    expect(result.files.map((f) => f.path)).toEqual(["model.safetensors"]);
    expect(existsSync(join(out, "model.safetensors.index.json"))).toBe(false);
  });

  it("reports progress as data: start, advances summing to the total, end", async () => {
    const dir = await makeTempDir();
    const events: ProgressEvent[] = [];
    await convertModel(realPath("tiny-qwen2-bf16/model.safetensors"), join(dir, "o.safetensors"), { onProgress: (e) => events.push(e) });
    const start = events[0];
    expect(start?.kind).toBe("start");
    const advanced = events.filter((e) => e.kind === "advance").reduce((sum, e) => sum + (e.kind === "advance" ? e.bytes : 0), 0);
    expect(start?.kind === "start" && start.totalBytes).toBe(advanced);
    expect(events.at(-1)?.kind).toBe("end");
  });
});

describe("convert refuses to write into its input", () => {
  it("refuses OUT equal to the source file", async () => {
    const dir = await makeTempDir();
    const src = join(dir, "m.safetensors");
    writeFileSync(src, buildSafetensors([{ name: "a", dtype: "U8", shape: [4] }]));
    const before = sha256(src);
    await expect(convertModel(src, src)).rejects.toThrow(/is, or is inside, the input/);
    expect(sha256(src)).toBe(before);
  });

  it("refuses OUT inside the source directory", async () => {
    const dir = await makeTempDir();
    writeFileSync(join(dir, "model.safetensors"), buildSafetensors([{ name: "a", dtype: "U8", shape: [4] }]));
    await expect(convertModel(dir, join(dir, "copy"))).rejects.toThrow(/is, or is inside, the input/);
    await expect(convertModel(dir, dir)).rejects.toThrow(/is, or is inside, the input/);
    expect(readdirSync(dir)).toEqual(["model.safetensors"]);
  });

  it("allows OUT next to a single source file", async () => {
    const dir = await makeTempDir();
    const src = join(dir, "m.safetensors");
    writeFileSync(src, buildSafetensors([{ name: "a", dtype: "U8", shape: [4] }]));
    await convertModel(src, join(dir, "copy.safetensors"));
    expect(sha256(join(dir, "copy.safetensors"))).toBe(sha256(src));
  });

  it("refuses --max-shard-size with a single-file OUT", async () => {
    const dir = await makeTempDir();
    const src = join(dir, "m.safetensors");
    writeFileSync(src, buildSafetensors([{ name: "a", dtype: "U8", shape: [4] }]));
    await expect(convertModel(src, join(dir, "o.safetensors"), { maxShardBytes: 10 })).rejects.toThrow(UsageError);
  });
});

describe("metadata", () => {
  it("keeps a single file's metadata and its key order, adds none where there was none", async () => {
    const dir = await makeTempDir();
    const withMeta = join(dir, "with.safetensors");
    writeFileSync(withMeta, buildSafetensors([{ name: "a", dtype: "U8", shape: [1] }], [["z", "1"], ["10", "x"], ["a", "2"]]));
    await convertModel(withMeta, join(dir, "with-out.safetensors"));
    expect(readFileSync(join(dir, "with-out.safetensors"))).toEqual(readFileSync(withMeta));

    const bare = join(dir, "bare.safetensors");
    writeFileSync(bare, buildSafetensors([{ name: "a", dtype: "U8", shape: [1] }]));
    const outDir = join(dir, "bare-dir");
    await convertModel(bare, outDir);
    const model = await openModel(outDir);
    try {
      // a directory is what save_pretrained writes: {"format":"pt"}
      expect(model.metadata.get("model.safetensors")).toEqual({ format: "pt" });
    } finally {
      await model.close();
    }
  });
});

describe("convert keeps every file it writes within the writer's tensor limit", () => {
  it("splits a model of 10,000 tensors (two shards of 5,000) into files of at most MAX_TENSORS_PER_FILE, not one file the writer refuses", async () => {
    const dir = await makeTempDir();
    const src = join(dir, "src");
    mkdirSync(src);
    const weightMap = new Map<string, string>();
    for (const shard of [1, 2]) {
      const file = `model-0000${shard}-of-00002.safetensors`;
      const tensors = Array.from({ length: 5000 }, (_, i) => ({ name: `s${shard}.t${i}`, dtype: "U8" as const, shape: [1] }));
      writeFileSync(join(src, file), buildSafetensors(tensors));
      for (const t of tensors) weightMap.set(t.name, file);
    }
    writeFileSync(join(src, "model.safetensors.index.json"), formatIndex(10_000, weightMap));
    const result = await convertModel(src, join(dir, "out"));
    const model = await openModel(join(dir, "out"));
    try {
      expect(model.tensors.size).toBe(10_000);
      const perFile = new Map<string, number>();
      for (const t of model.tensors.values()) perFile.set(t.file, (perFile.get(t.file) ?? 0) + 1);
      expect([...perFile.values()]).toEqual([MAX_TENSORS_PER_FILE, 10_000 - MAX_TENSORS_PER_FILE]);
    } finally {
      await model.close();
    }
    expect(result.files.map((f) => f.path)).toContain("model.safetensors.index.json");
  });
});
