import { existsSync } from "node:fs";
import { stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { makeDirectory } from "../../src/io/make-directory.js";
import { makeTempDir } from "../helpers/temp-dir.js";

// /proc takes no new entries and answers mkdir with ENOENT: Node's recursive mkdir loops there for ever.
const hasProc = existsSync("/proc/self");

describe("makeDirectory (mkdir -p)", () => {
  it("creates every missing component, and accepts a directory that is already there", async () => {
    const root = await makeTempDir();
    const deep = join(root, "a", "b", "c");
    await makeDirectory(deep);
    expect((await stat(deep)).isDirectory()).toBe(true);
    await makeDirectory(deep);
    await makeDirectory(root);
    expect((await stat(deep)).isDirectory()).toBe(true);
  });

  it("lets several callers create the same directories at once", async () => {
    const root = await makeTempDir();
    const deep = join(root, "x", "y", "z");
    await Promise.all(Array.from({ length: 8 }, () => makeDirectory(deep)));
    expect((await stat(deep)).isDirectory()).toBe(true);
  });

  it("refuses a file in the way with ENOTDIR, whether it is the path or one of its parents", async () => {
    const root = await makeTempDir();
    await writeFile(join(root, "file"), "x");
    await expect(makeDirectory(join(root, "file"))).rejects.toMatchObject({ code: "ENOTDIR", path: join(root, "file") });
    await expect(makeDirectory(join(root, "file", "below"))).rejects.toMatchObject({ code: "ENOTDIR" });
  });

  it.skipIf(!hasProc)("fails at once under /proc, saying the parent takes no new entries (skipped without /proc)", async () => {
    await expect(makeDirectory("/proc/delta-weights-out/a")).rejects.toMatchObject({
      code: "EREFUSED",
      path: "/proc/delta-weights-out",
      message: "/proc exists but takes no new entries (a virtual file system?)",
    });
  });

});
