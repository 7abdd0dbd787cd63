import { describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { hubRepoOf, parseHubRef, validateRepoId } from "../../src/hub/huggingface/repo-id.js";
import { repoPathProblem } from "../../src/hub/select-files.js";

describe("SRC forms", () => {
  it("reads org/name, org/name@rev and hf://", () => {
    expect(parseHubRef("meta-llama/Llama-2-7b-hf")).toEqual({ repo: "meta-llama/Llama-2-7b-hf", revision: "main" });
    expect(parseHubRef("org/name@v1.0")).toEqual({ repo: "org/name", revision: "v1.0" });
    expect(parseHubRef("org/name@refs/pr/1")).toEqual({ repo: "org/name", revision: "refs/pr/1" });
    const sha = "0123456789abcdef0123456789abcdef01234567";
    expect(parseHubRef(`hf://org/name@${sha}`)).toEqual({ repo: "org/name", revision: sha });
  });

  it("leaves path shapes alone (not Hub-shaped: undefined)", () => {
    for (const src of ["model.safetensors", "./org/name", "/abs/org", "a/b/c", "dir\\x"]) expect(parseHubRef(src)).toBeUndefined();
  });

  it("refuses garbage with a one-line usage error", () => {
    for (const src of ["hf://noslash", "hf://a/b/c", "org/na me", "org/..x", "org/-x", "org/x-", "org/.x", "org/x.", "o--rg/x", "org/" + "x".repeat(97), "org/name@", "org/name@a..b", "org/name@x:y", "hf://org/name@ref with space"]) {
      let err: unknown;
      try {
        parseHubRef(src);
      } catch (e) {
        err = e;
      }
      expect(err, src).toBeInstanceOf(UsageError);
      expect((err as Error).message).not.toContain("\n");
    }
  });

  it("accepts the Hub's full character set and 96-character names", () => {
    expect(() => validateRepoId(`A_b.c-1/${"x".repeat(96)}`, { requireNamespace: true })).not.toThrow();
  });

  it("finds the repo a source names, for model cards", () => {
    expect(hubRepoOf("org/name@main")).toBe("org/name");
    expect(hubRepoOf("hf://org/name")).toBe("org/name");
    expect(hubRepoOf("./local/dir")).toBeUndefined();
    expect(hubRepoOf("/abs/path")).toBeUndefined();
  });
});

describe("repo paths from the server", () => {
  it("refuses paths that would escape the cache", () => {
    for (const p of ["../x", "a/../../x", "/etc/passwd", "a//b", "a\\..\\b", "./a", "", "a/\u0000"]) expect(repoPathProblem(p), p).toBeDefined();
    for (const p of ["model.safetensors", "sub/dir/file.json", "a..b"]) expect(repoPathProblem(p), p).toBeUndefined();
  });
});
