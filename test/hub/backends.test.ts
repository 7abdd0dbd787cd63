/**
 * The hub's seams: where "is this remote?" is decided (locateSource), and a
 * push going through whatever HubBackend it is given, uploading the files
 * and card data the caller chose (the hub reads no delta.json itself).
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HubError, UsageError } from "../../src/errors.js";
import type { CardManifest, CommitResult, HubBackend, ModelCardInput, RepoUpload, UploadOptions } from "../../src/hub/backend.js";
import { locateSource } from "../../src/hub/backends.js";
import { commitWithCard, listUploadableFiles, uploadFolder } from "../../src/hub/push.js";

let work: string;
beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), "dw-backends-"));
});
afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("locateSource", () => {
  it("an existing path is local, resolved", async () => {
    const dir = join(work, "org", "name");
    await mkdir(dir, { recursive: true });
    expect(locateSource(dir)).toEqual({ kind: "local", path: dir });
  });

  it("a repo id that is no local path is remote, on the Hugging Face Hub, with its revision", () => {
    const at = locateSource("alice/tiny-llama@v1");
    expect(at.kind).toBe("remote");
    if (at.kind !== "remote") return;
    expect(at.ref).toEqual({ repo: "alice/tiny-llama", revision: "v1" });
    expect(at.backend.name).toBe("the Hugging Face Hub");
  });

  it("hf:// is always remote: it is never looked for on disk", () => {
    const at = locateSource("hf://alice/tiny-llama");
    expect(at.kind).toBe("remote");
    if (at.kind === "remote") expect(at.ref).toEqual({ repo: "alice/tiny-llama", revision: "main" });
  });

  it("a path that does not exist and is no repo id is missing", () => {
    expect(locateSource("./no/such/model")).toEqual({ kind: "missing" });
    expect(locateSource(join(work, "absent"))).toEqual({ kind: "missing" });
    expect(locateSource("model")).toEqual({ kind: "missing" });
  });

  it("a repo-shaped id that breaks the naming rules, or hf:// garbage, is refused", () => {
    expect(() => locateSource("alice/bad--name")).toThrow(UsageError);
    expect(() => locateSource("hf://just-a-name")).toThrow(UsageError);
  });
});

/** A host that keeps what it is sent in memory: the push seam, with no HTTP. */
class MemoryHost implements HubBackend {
  readonly name = "memory";
  readonly commits: { repo: string; title: string; files: Map<string, string> }[] = [];
  readonly cards: ModelCardInput[] = [];
  checked = 0;

  isExplicit = (src: string) => src.startsWith("mem://");
  parseRef = () => undefined;
  startDownload = (): never => {
    throw new Error("not used");
  };

  checkPush(repo: string, accessToken: string | undefined): void {
    this.checked++;
    if (accessToken === undefined) throw new HubError(`Failed to push to ${repo}: no token for ${this.name}`);
  }

  async beginUpload(repo: string, options: UploadOptions): Promise<RepoUpload> {
    const files = new Map<string, string>();
    const commits = this.commits;
    const controller = new AbortController();
    expect(options.totalBytes).toBeGreaterThan(0);
    return {
      repo,
      signal: controller.signal,
      has: (path) => files.has(path),
      add: (path, source) => {
        files.set(path, typeof source === "string" ? `file:${source}` : new TextDecoder().decode(source));
      },
      async commit(title: string): Promise<CommitResult> {
        commits.push({ repo, title, files });
        return { files: [...files.keys()].sort(), public: true, commitId: "c0ffee" };
      },
      async cancel() {
        controller.abort();
      },
    };
  }

  modelCard(input: ModelCardInput): string {
    this.cards.push(input);
    return `card of ${input.repo}: ${JSON.stringify(input.manifest ?? null)}`;
  }
}

describe("a push goes through the backend it is given", () => {
  it("uploads exactly the files and card data it is handed, through that host", async () => {
    await writeFile(join(work, "a.json"), "{}");
    await mkdir(join(work, "sub"));
    await writeFile(join(work, "sub", "b.bin"), "bytes");
    await writeFile(join(work, ".hidden"), "never");
    const files = await listUploadableFiles(work);
    expect(files).toEqual(["a.json", "sub/b.bin"]);

    const host = new MemoryHost();
    const card: CardManifest = { codec: "xor", base: { source: "org/base" } };
    const result = await uploadFolder(host, work, files, "me/thing", { accessToken: "token", card, message: "first" });
    expect(result).toMatchObject({ repo: "me/thing", generatedCard: true, files: ["README.md", "a.json", "sub/b.bin"], commitId: "c0ffee" });
    expect(host.cards).toEqual([{ repo: "me/thing", manifest: card }]);
    const [commit] = host.commits;
    expect(commit?.title).toBe("first");
    expect(commit?.files.get("README.md")).toBe(`card of me/thing: ${JSON.stringify(card)}`);
    expect(commit?.files.get("sub/b.bin")).toBe(`file:${join(work, "sub", "b.bin")}`);
  });

  it("keeps a folder's own README.md and names the commit by its file count when no title is given", async () => {
    await writeFile(join(work, "README.md"), "mine");
    await writeFile(join(work, "x.txt"), "x");
    const host = new MemoryHost();
    const result = await uploadFolder(host, work, await listUploadableFiles(work), "me/thing", { accessToken: "token" });
    expect(result.generatedCard).toBe(false);
    expect(host.cards).toEqual([]);
    expect(host.commits[0]?.title).toBe("Upload 2 files");
  });

  it("asks the host to check the push before any file is read", async () => {
    const host = new MemoryHost();
    await expect(uploadFolder(host, join(work, "absent"), ["gone.bin"], "me/thing", {})).rejects.toThrow(/no token for memory/);
    expect(host.checked).toBe(1);
    expect(host.commits).toEqual([]);
  });

  it("commitWithCard adds the host's card to a session built file by file, unless one travelled with the files", async () => {
    const host = new MemoryHost();
    const session = await host.beginUpload("me/made", { totalBytes: 1 });
    session.add("delta.json", new TextEncoder().encode("{}"), { size: 2 });
    const made = await commitWithCard(host, session, { tool: "delta-weights 0.1.0" }, "Upload delta weights");
    expect(made).toMatchObject({ repo: "me/made", generatedCard: true, files: ["README.md", "delta.json"] });
    expect(host.cards).toEqual([{ repo: "me/made", manifest: { tool: "delta-weights 0.1.0" } }]);

    const own = await host.beginUpload("me/own", { totalBytes: 1 });
    own.add("README.md", new TextEncoder().encode("mine"), { size: 4 });
    expect((await commitWithCard(host, own, undefined, "t")).generatedCard).toBe(false);
    expect(host.cards).toHaveLength(1);
  });
});
