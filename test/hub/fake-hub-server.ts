/**
 * A loopback Hugging Face Hub for tests: node:http on 127.0.0.1, a random
 * port, all state in memory. It implements the endpoints the real
 * `@huggingface/hub` client (v2) calls, the way that client calls them
 * (node_modules/@huggingface/hub/src/lib/*.ts), with the Hub's status codes
 * and `X-Error-Code` headers:
 *
 *   POST /api/repos/create                          createRepo
 *   POST /api/models/{repo}/branch/{branch}         createBranch
 *   GET  /api/models/{repo}[/revision/{rev}]        modelInfo (sha, siblings)
 *   POST /api/models/{repo}/preupload/{rev}         commit: lfs or regular per file
 *   POST /{repo}.git/info/lfs/objects/batch         commit: basic or multipart transfer
 *   PUT  /__lfs/upload/{oid}                        presigned basic upload
 *   PUT  /__lfs/part/{id}/{n}, POST /__lfs/complete/{id}   multipart parts and completion
 *   POST /api/models/{repo}/commit/{rev}            NDJSON commit
 *   GET  /api/models/{repo}/tree/{rev}[/{path}]     listFiles (paginated with Link)
 *   POST /api/models/{repo}/paths-info/{rev}        pathsInfo
 *   GET|HEAD /{repo}/resolve/{rev}/{path}           downloads: Range, X-Repo-Commit, X-Linked-Etag,
 *                                                   X-Linked-Size, ETag; LFS files redirected to
 *   GET|HEAD /__lfs/download/{sha256}               the "CDN" (same server)
 *
 * Byte ranges are answered as the Hub's CDN answers them: `Range: bytes=a-b`
 * or `bytes=a-` gives 206 with `Content-Range: bytes a-b/size` (b clamped to
 * the last byte), a start past the end gives 416 with `bytes * /size`.
 * `throttle.bytesPerSecondPerConnection` paces every body per connection;
 * `throttle.uploadBytesPerSecondPerConnection` paces the reading of every LFS
 * upload body (basic PUT or part), as a slow uplink would. `peak.uploads`
 * counts LFS upload bodies received at once; `uploadActions` lists the
 * objects the LFS batch asked a client to upload (those not stored yet).
 *
 * Failure injection (`inject`): a status on a matching request (with
 * `Retry-After` if asked), a body cut short (connection closed cleanly) or
 * reset (TCP RST) after some bytes, or corrupted bytes; optionally only for
 * requests whose Range header matches.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeToken {
  user: string;
  /** Organisations the user belongs to (may write there, read private repos there). */
  orgs?: string[];
  write: boolean;
  /** False for a token scoped to existing repos: it may commit but not create repos. */
  canCreate?: boolean;
  /** Gated repos this user was granted access to. */
  gatedAccess?: string[];
}

export interface FakeHubOptions {
  tokens?: Record<string, FakeToken>;
  /** Files at least this large are LFS (the Hub: 10 MiB). */
  lfsThreshold?: number;
  /** LFS objects at least this large use the multipart transfer. */
  multipartThreshold?: number;
  /** Part size of multipart uploads (the Hub: a few hundred MB; tests: small). */
  multipartChunkSize?: number;
  /** Serve LFS files by a 302 to the "CDN" endpoint (the real Hub does). Default true. */
  redirectLfs?: boolean;
  /** Tree entries per page before a `Link: rel="next"` (the Hub: 1000). */
  treePageSize?: number;
  /** A hostile or broken server: rewrite tree listings before they are sent. */
  tamperTree?: ((entries: Record<string, unknown>[]) => unknown[]) | null;
}

interface StoredFile {
  content: Buffer;
  lfs: boolean;
  /** Git blob sha1 of what git stores (the pointer for LFS files). */
  oid: string;
  sha256: string;
  pointerSize: number;
}

interface Commit {
  id: string;
  title: string;
  parent?: string;
  files: Map<string, StoredFile>;
}

interface Repo {
  id: string;
  private: boolean;
  gated: false | "auto" | "manual";
  branches: Map<string, string>;
  commits: Map<string, Commit>;
}

export interface LoggedRequest {
  method: string;
  url: string;
  authorization?: string;
  range?: string;
  /** When the request arrived (Date.now()). */
  at: number;
  /** Body bytes sent so far in the answer. */
  sent: number;
}

export type Injection =
  | { kind: "status"; status: number; errorCode?: string; retryAfter?: string }
  /** Send this many body bytes, then close the connection (a short read). */
  | { kind: "truncate"; afterBytes: number }
  /** Send this many body bytes, then reset the connection (ECONNRESET); on an upload, reset once this many have arrived. */
  | { kind: "reset"; afterBytes: number }
  /** Flip one byte in the middle of the body. */
  | { kind: "corrupt" }
  /** Send this many body bytes (none: not even the headers), then nothing more, keeping the connection open. */
  | { kind: "stall"; afterBytes?: number };

interface PendingInjection {
  method?: string;
  match: RegExp;
  range?: RegExp;
  times: number;
  action: Injection;
}

interface MultipartUpload {
  oid: string;
  size: number;
  chunkSize: number;
  parts: Map<number, { bytes: Buffer; etag: string }>;
}

const LFS_PATTERNS = [/\.safetensors$/, /\.bin$/, /\.pt$/, /\.pth$/, /\.ckpt$/, /\.h5$/, /\.msgpack$/, /\.onnx$/, /\.gguf$/, /\.model$/, /\.zip$/];

export function gitBlobSha1(content: Buffer): string {
  return createHash("sha1").update(`blob ${content.length}\0`).update(content).digest("hex");
}

export function sha256Hex(content: Buffer): string {
  return createHash("sha256").update(content).digest("hex");
}

function lfsPointer(sha256: string, size: number): Buffer {
  return Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`);
}

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly errorCode?: string) {
    super(message);
  }
}

export class FakeHub {
  readonly repos = new Map<string, Repo>();
  readonly lfsObjects = new Map<string, Buffer>();
  readonly requests: LoggedRequest[] = [];
  readonly options: Required<FakeHubOptions>;
  /** Pacing of every body (change it at any time; undefined: as fast as possible). */
  readonly throttle: { bytesPerSecondPerConnection?: number; uploadBytesPerSecondPerConnection?: number } = {};
  /** Most bodies sent at once: per path, of distinct paths, and in all; most LFS upload bodies received at once. */
  readonly peak = { perPath: new Map<string, number>(), distinctPaths: 0, total: 0, uploads: 0 };
  /** Oids the LFS batch answered with an upload action, in order. */
  readonly uploadActions: string[] = [];
  #inFlight = 0;
  #uploading = 0;
  #sending = new Map<string, number>();
  #server: Server;
  #injections: PendingInjection[] = [];
  #multipart = new Map<string, MultipartUpload>();
  url = "";

  private constructor(options: FakeHubOptions) {
    this.options = {
      tokens: options.tokens ?? {},
      lfsThreshold: options.lfsThreshold ?? 10 * 1024 * 1024,
      multipartThreshold: options.multipartThreshold ?? 64 * 1024 * 1024,
      multipartChunkSize: options.multipartChunkSize ?? 16 * 1024 * 1024,
      redirectLfs: options.redirectLfs ?? true,
      treePageSize: options.treePageSize ?? 1000,
      tamperTree: options.tamperTree ?? null,
    };
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.#send(res, 500, { error: String(err) });
        else res.destroy();
      });
    });
  }

  static async start(options: FakeHubOptions = {}): Promise<FakeHub> {
    const hub = new FakeHub(options);
    await new Promise<void>((resolve) => hub.#server.listen(0, "127.0.0.1", resolve));
    hub.url = `http://127.0.0.1:${(hub.#server.address() as AddressInfo).port}`;
    return hub;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** The next `times` requests matching `match` (on the path; and `range`, on the Range header) get `action`. */
  inject(match: RegExp, action: Injection, options: { method?: string; times?: number; range?: RegExp } = {}): void {
    this.#injections.push({ match, action, method: options.method, range: options.range, times: options.times ?? 1 });
  }

  /** Drops every pending injection (the Hub is healthy again). */
  clearInjections(): void {
    this.#injections = [];
  }

  /** Body bytes sent so far in answers to requests whose path matches. */
  bytesSent(match: RegExp): number {
    return this.requests.filter((r) => match.test(r.url.split("?")[0]!)).reduce((n, r) => n + r.sent, 0);
  }

  /** Creates a repo directly (test setup), with one commit holding `files`. Returns the commit id. */
  seed(repoId: string, files: Record<string, Buffer | string>, options: { private?: boolean; gated?: false | "auto" | "manual"; branch?: string } = {}): string {
    let repo = this.repos.get(repoId);
    if (repo === undefined) {
      repo = this.#newRepo(repoId, options.private === true);
      repo.gated = options.gated ?? false;
    }
    const branch = options.branch ?? "main";
    const parentId = repo.branches.get(branch) ?? repo.branches.get("main");
    const parent = parentId !== undefined ? repo.commits.get(parentId) : undefined;
    const tree = new Map(parent?.files ?? []);
    for (const [path, data] of Object.entries(files)) {
      const content = typeof data === "string" ? Buffer.from(data) : data;
      const lfs = this.#isLfs(path, content.length, content.subarray(0, 512));
      if (lfs) this.lfsObjects.set(sha256Hex(content), content);
      tree.set(path, this.#stored(content, lfs));
    }
    return this.#commit(repo, branch, "seed", tree);
  }

  /** The bytes of a file at a revision, as the Hub would serve it. */
  file(repoId: string, path: string, revision = "main"): Buffer | undefined {
    const repo = this.repos.get(repoId);
    const commitId = repo?.branches.get(revision) ?? revision;
    return repo?.commits.get(commitId)?.files.get(path)?.content;
  }

  headCommit(repoId: string, branch = "main"): Commit | undefined {
    const repo = this.repos.get(repoId);
    const id = repo?.branches.get(branch);
    return id !== undefined ? repo?.commits.get(id) : undefined;
  }

  // ---- state ----

  #newRepo(id: string, isPrivate: boolean): Repo {
    const repo: Repo = { id, private: isPrivate, gated: false, branches: new Map(), commits: new Map() };
    this.repos.set(id, repo);
    // The Hub makes an initial commit with a .gitattributes on creation.
    this.#commit(repo, "main", "initial commit", new Map([[".gitattributes", this.#stored(Buffer.from("*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"), false)]]));
    return repo;
  }

  #stored(content: Buffer, lfs: boolean): StoredFile {
    const sha256 = sha256Hex(content);
    const pointer = lfsPointer(sha256, content.length);
    return { content, lfs, sha256, oid: gitBlobSha1(lfs ? pointer : content), pointerSize: pointer.length };
  }

  #commit(repo: Repo, branch: string, title: string, files: Map<string, StoredFile>): string {
    const id = randomBytes(20).toString("hex");
    repo.commits.set(id, { id, title, parent: repo.branches.get(branch), files });
    repo.branches.set(branch, id);
    return id;
  }

  #isLfs(path: string, size: number, sample: Buffer): boolean {
    return size >= this.options.lfsThreshold || LFS_PATTERNS.some((p) => p.test(path)) || sample.includes(0);
  }

  // ---- auth ----

  #token(req: IncomingMessage): FakeToken | undefined | "invalid" {
    const header = req.headers.authorization;
    if (header === undefined) return undefined;
    const token = /^Bearer (.+)$/.exec(header)?.[1];
    const found = token !== undefined ? this.options.tokens[token] : undefined;
    return found ?? "invalid";
  }

  #isMember(token: FakeToken | undefined, namespace: string): boolean {
    return token !== undefined && (token.user === namespace || (token.orgs ?? []).includes(namespace));
  }

  /** The Hub's answers: private repos are "not found" to others (401 without a token, 404 with one). */
  #readableRepo(req: IncomingMessage, repoId: string): Repo {
    const token = this.#token(req);
    if (token === "invalid") throw new HttpError(401, "Invalid credentials in Authorization header");
    const repo = this.repos.get(repoId);
    const namespace = repoId.split("/")[0] ?? "";
    if (repo === undefined || (repo.private && !this.#isMember(token, namespace))) {
      throw new HttpError(token === undefined ? 401 : 404, "Repository Not Found", "RepoNotFound");
    }
    return repo;
  }

  /** Gating applies to file contents, not to metadata. */
  #checkGate(req: IncomingMessage, repo: Repo): void {
    if (repo.gated === false) return;
    const token = this.#token(req);
    if (token === undefined || token === "invalid") {
      throw new HttpError(401, `Access to model ${repo.id} is restricted. You must have access to it and be authenticated to access it. Please log in.`, "GatedRepo");
    }
    if (!this.#isMember(token, repo.id.split("/")[0] ?? "") && !(token.gatedAccess ?? []).includes(repo.id)) {
      throw new HttpError(403, `Access to model ${repo.id} is restricted and you are not in the authorized list. Visit https://huggingface.co/${repo.id} to ask for access.`, "GatedRepo");
    }
  }

  #writableRepo(req: IncomingMessage, repoId: string): Repo {
    const token = this.#token(req);
    if (token === undefined || token === "invalid") throw new HttpError(401, "Invalid username or password.");
    const repo = this.#readableRepo(req, repoId);
    if (!token.write || !this.#isMember(token, repoId.split("/")[0] ?? "")) {
      throw new HttpError(403, `You don't have the rights to create a commit in ${repoId}`);
    }
    return repo;
  }

  #resolveRevision(repo: Repo, rev: string): Commit {
    const id = repo.branches.get(rev) ?? rev;
    const commit = repo.commits.get(id);
    if (commit === undefined) throw new HttpError(404, `Invalid rev id: ${rev}`, "RevisionNotFound");
    return commit;
  }

  // ---- http ----

  #send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  async #body(req: IncomingMessage): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  async #json<T>(req: IncomingMessage): Promise<T> {
    return JSON.parse((await this.#body(req)).toString("utf8")) as T;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.url);
    const method = req.method ?? "GET";
    const logged: LoggedRequest = { method, url: url.pathname + url.search, authorization: req.headers.authorization, range: req.headers.range, at: Date.now(), sent: 0 };
    this.requests.push(logged);

    const injection = this.#takeInjection(method, url.pathname, req.headers.range);
    if (injection?.kind === "stall" && injection.afterBytes === undefined) {
      req.resume(); // and never answer
      return;
    }
    if (injection?.kind === "reset" && method !== "GET" && method !== "HEAD") {
      // An upload cut off: the connection is reset once this many body bytes have arrived.
      const reset = () => req.socket.resetAndDestroy();
      if (injection.afterBytes <= 0) reset();
      else {
        let seen = 0;
        req.on("data", (chunk: Buffer) => { if ((seen += chunk.length) >= injection.afterBytes) reset(); });
      }
      return;
    }
    if (injection?.kind === "status") {
      req.resume();
      this.#send(res, injection.status, { error: `injected ${injection.status}` }, {
        ...(injection.errorCode !== undefined ? { "X-Error-Code": injection.errorCode } : {}),
        ...(injection.retryAfter !== undefined ? { "Retry-After": injection.retryAfter } : {}),
      });
      return;
    }
    try {
      await this.#route(req, res, method, url, injection, logged);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      req.resume();
      this.#send(res, err.status, { error: err.message }, err.errorCode !== undefined ? { "X-Error-Code": err.errorCode, "X-Error-Message": err.message } : {});
    }
  }

  #takeInjection(method: string, path: string, range: string | undefined): Injection | undefined {
    const i = this.#injections.findIndex((inj) =>
      (inj.method === undefined || inj.method === method) && inj.match.test(path) && (inj.range === undefined || inj.range.test(range ?? "")));
    if (i === -1) return undefined;
    const inj = this.#injections[i]!;
    if (--inj.times <= 0) this.#injections.splice(i, 1);
    return inj.action;
  }

  async #route(req: IncomingMessage, res: ServerResponse, method: string, url: URL, injection: Injection | undefined, logged: LoggedRequest): Promise<void> {
    const path = url.pathname;
    let m: RegExpExecArray | null;
    const seg = "([^/]+/[^/]+)";

    if (method === "POST" && path === "/api/repos/create") return this.#createRepo(req, res);
    if (method === "POST" && (m = new RegExp(`^/api/models/${seg}/branch/([^/]+)$`).exec(path))) {
      return this.#createBranch(req, res, m[1]!, decodeURIComponent(m[2]!));
    }
    if (method === "GET" && (m = new RegExp(`^/api/models/${seg}(?:/revision/([^/]+))?$`).exec(path))) {
      return this.#modelInfo(req, res, m[1]!, decodeURIComponent(m[2] ?? "main"));
    }
    if (method === "POST" && (m = new RegExp(`^/api/models/${seg}/preupload/([^/]+)$`).exec(path))) {
      return this.#preupload(req, res, m[1]!, decodeURIComponent(m[2]!));
    }
    if (method === "POST" && (m = new RegExp(`^/${seg}\\.git/info/lfs/objects/batch$`).exec(path))) {
      return this.#lfsBatch(req, res, m[1]!);
    }
    if (method === "PUT" && (m = /^\/__lfs\/upload\/([0-9a-f]{64})$/.exec(path))) return this.#lfsBasicUpload(req, res, m[1]!);
    if (method === "PUT" && (m = /^\/__lfs\/part\/([0-9a-f]+)\/(\d+)$/.exec(path))) return this.#lfsPart(req, res, m[1]!, Number(m[2]));
    if (method === "POST" && (m = /^\/__lfs\/complete\/([0-9a-f]+)$/.exec(path))) return this.#lfsComplete(req, res, m[1]!);
    if (method === "POST" && (m = new RegExp(`^/api/models/${seg}/commit/([^/]+)$`).exec(path))) {
      return this.#commitRequest(req, res, m[1]!, decodeURIComponent(m[2]!));
    }
    if (method === "GET" && (m = new RegExp(`^/api/models/${seg}/tree/([^/]+)(?:/(.*))?$`).exec(path))) {
      return this.#tree(req, res, url, m[1]!, decodeURIComponent(m[2]!), m[3] !== undefined ? decodeURIComponent(m[3]) : "");
    }
    if (method === "POST" && (m = new RegExp(`^/api/models/${seg}/paths-info/([^/]+)$`).exec(path))) {
      return this.#pathsInfo(req, res, m[1]!, decodeURIComponent(m[2]!));
    }
    if ((method === "GET" || method === "HEAD") && (m = new RegExp(`^/${seg}/resolve/([^/]+)/(.+)$`).exec(path))) {
      return this.#resolve(req, res, method, m[1]!, decodeURIComponent(m[2]!), m[3]!.split("/").map(decodeURIComponent).join("/"), injection, logged);
    }
    if ((method === "GET" || method === "HEAD") && (m = /^\/__lfs\/download\/([0-9a-f]{64})$/.exec(path))) {
      const bytes = this.lfsObjects.get(m[1]!);
      if (bytes === undefined) throw new HttpError(404, "no such object");
      return this.#serveBytes(req, res, method, bytes, { ETag: `"${m[1]}"` }, injection, logged);
    }
    throw new HttpError(404, `fake hub: no route for ${method} ${path}`);
  }

  async #createRepo(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const token = this.#token(req);
    const body = await this.#json<{ name: string; organization?: string; type?: string; private?: boolean; visibility?: string }>(req);
    if (token === undefined || token === "invalid") throw new HttpError(401, "Invalid username or password.");
    const namespace = body.organization ?? token.user;
    if (!token.write || token.canCreate === false || !this.#isMember(token, namespace)) throw new HttpError(403, `You don't have the rights to create a model under the namespace "${namespace}"`);
    const id = `${namespace}/${body.name}`;
    if (this.repos.has(id)) throw new HttpError(409, "You already created this model repo");
    this.#newRepo(id, body.visibility === "private" || body.private === true);
    this.#send(res, 200, { url: `${this.url}/${id}`, name: id, id });
  }

  async #createBranch(req: IncomingMessage, res: ServerResponse, repoId: string, branch: string): Promise<void> {
    const body = await this.#json<{ startingPoint?: string }>(req);
    const repo = this.#writableRepo(req, repoId);
    if (repo.branches.has(branch)) throw new HttpError(409, `Reference already exists: refs/heads/${branch}`);
    repo.branches.set(branch, this.#resolveRevision(repo, body.startingPoint ?? "main").id);
    this.#send(res, 200, {});
  }

  #modelInfo(req: IncomingMessage, res: ServerResponse, repoId: string, rev: string): void {
    const repo = this.#readableRepo(req, repoId);
    const commit = this.#resolveRevision(repo, rev === "HEAD" ? "main" : rev);
    this.#send(res, 200, {
      _id: createHash("sha1").update(repo.id).digest("hex").slice(0, 24),
      id: repo.id,
      private: repo.private,
      gated: repo.gated,
      downloads: 0,
      likes: 0,
      lastModified: new Date(0).toISOString(),
      pipeline_tag: "text-generation",
      sha: commit.id,
      siblings: [...commit.files.keys()].sort().map((rfilename) => ({ rfilename })),
    });
  }

  async #preupload(req: IncomingMessage, res: ServerResponse, repoId: string, rev: string): Promise<void> {
    const body = await this.#json<{ files: { path: string; size: number; sample: string }[] }>(req);
    const repo = this.#writableRepo(req, repoId);
    if (!repo.branches.has(rev)) throw new HttpError(404, `Invalid rev id: ${rev}`, "RevisionNotFound");
    this.#send(res, 200, {
      files: body.files.map((f) => ({
        path: f.path,
        uploadMode: this.#isLfs(f.path, f.size, Buffer.from(f.sample, "base64")) ? "lfs" : "regular",
        shouldIgnore: false,
      })),
    });
  }

  async #lfsBatch(req: IncomingMessage, res: ServerResponse, repoId: string): Promise<void> {
    const body = await this.#json<{ operation: string; transfers?: string[]; objects: { oid: string; size: number }[] }>(req);
    this.#writableRepo(req, repoId);
    if (body.operation !== "upload") throw new HttpError(400, "only upload is implemented");
    const multipartOk = (body.transfers ?? []).includes("multipart");
    const useMultipart = multipartOk && body.objects.some((o) => o.size >= this.options.multipartThreshold);
    const objects = body.objects.map((o) => {
      if (!/^[0-9a-f]{64}$/.test(o.oid)) return { oid: o.oid, size: o.size, error: { code: 422, message: "invalid oid" } };
      if (this.lfsObjects.has(o.oid)) return { oid: o.oid, size: o.size }; // already uploaded: no action
      this.uploadActions.push(o.oid);
      if (useMultipart && o.size >= this.options.multipartThreshold) {
        const id = randomBytes(8).toString("hex");
        const chunkSize = this.options.multipartChunkSize;
        const parts = Math.max(1, Math.ceil(o.size / chunkSize));
        this.#multipart.set(id, { oid: o.oid, size: o.size, chunkSize, parts: new Map() });
        const header: Record<string, string> = { chunk_size: String(chunkSize) };
        for (let n = 1; n <= parts; n++) header[String(n).padStart(5, "0")] = `${this.url}/__lfs/part/${id}/${n}`;
        return { oid: o.oid, size: o.size, authenticated: true, actions: { upload: { href: `${this.url}/__lfs/complete/${id}`, header } } };
      }
      return { oid: o.oid, size: o.size, authenticated: true, actions: { upload: { href: `${this.url}/__lfs/upload/${o.oid}` } } };
    });
    const text = JSON.stringify({ transfer: useMultipart ? "multipart" : "basic", objects });
    res.writeHead(200, { "Content-Type": "application/vnd.git-lfs+json", "Content-Length": Buffer.byteLength(text) });
    res.end(text);
  }

  /** An LFS upload body, read at the upload throttle's pace, counted while it arrives. */
  async #uploadBody(req: IncomingMessage): Promise<Buffer> {
    this.peak.uploads = Math.max(this.peak.uploads, ++this.#uploading);
    try {
      const began = Date.now();
      const chunks: Buffer[] = [];
      let received = 0;
      for await (const chunk of req) {
        chunks.push(chunk as Buffer);
        received += (chunk as Buffer).length;
        const rate = this.throttle.uploadBytesPerSecondPerConnection;
        const wait = rate === undefined ? 0 : began + (received / rate) * 1000 - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
      return Buffer.concat(chunks);
    } finally {
      this.#uploading--;
    }
  }

  async #lfsBasicUpload(req: IncomingMessage, res: ServerResponse, oid: string): Promise<void> {
    const bytes = await this.#uploadBody(req);
    if (sha256Hex(bytes) !== oid) throw new HttpError(400, "sha256 mismatch");
    this.lfsObjects.set(oid, bytes);
    res.writeHead(200, { ETag: `"${createHash("md5").update(bytes).digest("hex")}"` });
    res.end();
  }

  async #lfsPart(req: IncomingMessage, res: ServerResponse, id: string, n: number): Promise<void> {
    const upload = this.#multipart.get(id);
    const bytes = await this.#uploadBody(req);
    if (upload === undefined) throw new HttpError(404, "no such upload");
    const expected = Math.min(upload.chunkSize, upload.size - (n - 1) * upload.chunkSize);
    if (bytes.length !== expected) throw new HttpError(400, `part ${n}: ${bytes.length} bytes, expected ${expected}`);
    const etag = `"${createHash("md5").update(bytes).digest("hex")}"`;
    upload.parts.set(n, { bytes, etag });
    res.writeHead(200, { ETag: etag });
    res.end();
  }

  async #lfsComplete(req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
    const body = await this.#json<{ oid: string; parts: { partNumber: number; etag: string }[] }>(req);
    const upload = this.#multipart.get(id);
    if (upload === undefined || body.oid !== upload.oid) throw new HttpError(404, "no such upload");
    const chunks: Buffer[] = [];
    for (const part of [...body.parts].sort((a, b) => a.partNumber - b.partNumber)) {
      const stored = upload.parts.get(part.partNumber);
      if (stored === undefined || stored.etag !== part.etag) throw new HttpError(400, `part ${part.partNumber} missing or etag mismatch`);
      chunks.push(stored.bytes);
    }
    const bytes = Buffer.concat(chunks);
    if (bytes.length !== upload.size || sha256Hex(bytes) !== upload.oid) throw new HttpError(400, "assembled object does not match its oid");
    this.lfsObjects.set(upload.oid, bytes);
    this.#multipart.delete(id);
    this.#send(res, 200, {});
  }

  async #commitRequest(req: IncomingMessage, res: ServerResponse, repoId: string, rev: string): Promise<void> {
    const contentType = req.headers["content-type"] ?? "";
    const text = (await this.#body(req)).toString("utf8");
    const repo = this.#writableRepo(req, repoId);
    if (!contentType.startsWith("application/x-ndjson")) throw new HttpError(400, "expected NDJSON");
    const head = repo.branches.get(rev);
    if (head === undefined) throw new HttpError(404, `Invalid rev id: ${rev}`, "RevisionNotFound");
    const tree = new Map(repo.commits.get(head)!.files);
    let title = "";
    for (const line of text.split("\n").filter((l) => l.trim() !== "")) {
      const { key, value } = JSON.parse(line) as { key: string; value: Record<string, unknown> };
      if (key === "header") {
        title = String(value.summary ?? "");
        if (typeof value.parentCommit === "string" && value.parentCommit !== head) throw new HttpError(412, "parent commit is not the head");
      } else if (key === "file") {
        const content = Buffer.from(String(value.content), value.encoding === "base64" ? "base64" : "utf8");
        tree.set(String(value.path), this.#stored(content, false));
      } else if (key === "lfsFile") {
        const bytes = this.lfsObjects.get(String(value.oid));
        if (bytes === undefined || bytes.length !== value.size) throw new HttpError(422, `LFS object ${String(value.oid)} of ${String(value.path)} was not uploaded`);
        tree.set(String(value.path), this.#stored(bytes, true));
      } else if (key === "deletedFile") {
        tree.delete(String(value.path));
      } else {
        throw new HttpError(400, `unknown commit operation ${key}`);
      }
    }
    if (title === "") throw new HttpError(400, "commit header with a summary is required");
    const id = this.#commit(repo, rev, title, tree);
    this.#send(res, 200, { success: true, commitOid: id, commitUrl: `${this.url}/${repo.id}/commit/${id}`, hookOutput: "" });
  }

  #entry(path: string, file: StoredFile) {
    return {
      type: "file" as const,
      oid: file.oid,
      size: file.content.length,
      path,
      ...(file.lfs ? { lfs: { oid: file.sha256, size: file.content.length, pointerSize: file.pointerSize } } : {}),
    };
  }

  #tree(req: IncomingMessage, res: ServerResponse, url: URL, repoId: string, rev: string, dir: string): void {
    const repo = this.#readableRepo(req, repoId);
    const commit = this.#resolveRevision(repo, rev);
    const recursive = url.searchParams.get("recursive") === "true";
    const prefix = dir === "" ? "" : `${dir}/`;
    if (dir !== "" && ![...commit.files.keys()].some((p) => p.startsWith(prefix))) throw new HttpError(404, `${dir} does not exist`, "EntryNotFound");
    const entries: unknown[] = [];
    const dirs = new Set<string>();
    for (const path of [...commit.files.keys()].sort()) {
      if (!path.startsWith(prefix)) continue;
      const rest = path.slice(prefix.length);
      const slash = rest.indexOf("/");
      if (slash !== -1 && !recursive) {
        const sub = prefix + rest.slice(0, slash);
        if (!dirs.has(sub)) {
          dirs.add(sub);
          entries.push({ type: "directory", oid: gitBlobSha1(Buffer.from(sub)), size: 0, path: sub });
        }
        continue;
      }
      if (recursive) {
        const parts = rest.split("/");
        for (let i = 1; i < parts.length; i++) {
          const sub = prefix + parts.slice(0, i).join("/");
          if (!dirs.has(sub)) {
            dirs.add(sub);
            entries.push({ type: "directory", oid: gitBlobSha1(Buffer.from(sub)), size: 0, path: sub });
          }
        }
      }
      entries.push(this.#entry(path, commit.files.get(path)!));
    }
    if (this.options.tamperTree !== null) entries.splice(0, entries.length, ...this.options.tamperTree(entries as Record<string, unknown>[]));
    const cursor = Number(url.searchParams.get("cursor") ?? "0");
    const page = entries.slice(cursor, cursor + this.options.treePageSize);
    const headers: Record<string, string> = {};
    if (cursor + this.options.treePageSize < entries.length) {
      const next = new URL(url);
      next.searchParams.set("cursor", String(cursor + this.options.treePageSize));
      headers.Link = `<${this.url}${next.pathname}${next.search}>; rel="next"`;
    }
    this.#send(res, 200, page, headers);
  }

  async #pathsInfo(req: IncomingMessage, res: ServerResponse, repoId: string, rev: string): Promise<void> {
    const body = await this.#json<{ paths: string[]; expand?: boolean }>(req);
    const repo = this.#readableRepo(req, repoId);
    const commit = this.#resolveRevision(repo, rev);
    const out = body.paths.flatMap((p) => {
      const file = commit.files.get(p);
      if (file === undefined) return [];
      return [{ ...this.#entry(p, file), ...(body.expand === true ? { lastCommit: { id: commit.id, title: commit.title, date: new Date(0).toISOString() }, securityFileStatus: { status: "safe" } } : {}) }];
    });
    this.#send(res, 200, out);
  }

  #resolve(req: IncomingMessage, res: ServerResponse, method: string, repoId: string, rev: string, path: string, injection: Injection | undefined, logged: LoggedRequest): Promise<void> | void {
    const repo = this.#readableRepo(req, repoId);
    this.#checkGate(req, repo);
    const commit = this.#resolveRevision(repo, rev);
    const file = commit.files.get(path);
    if (file === undefined) throw new HttpError(404, "Entry not found", "EntryNotFound");
    const common = { "X-Repo-Commit": commit.id };
    if (file.lfs) {
      const linked = { ...common, "X-Linked-Etag": `"${file.sha256}"`, "X-Linked-Size": String(file.content.length), ETag: `"${file.oid}"` };
      if (this.options.redirectLfs) {
        res.writeHead(302, { ...linked, Location: `${this.url}/__lfs/download/${file.sha256}`, "Content-Length": 0 });
        res.end();
        return;
      }
      return this.#serveBytes(req, res, method, file.content, { ...linked, ETag: `"${file.sha256}"` }, injection, logged);
    }
    return this.#serveBytes(req, res, method, file.content, { ...common, ETag: `"${file.oid}"` }, injection, logged);
  }

  async #serveBytes(req: IncomingMessage, res: ServerResponse, method: string, bytes: Buffer, headers: Record<string, string>, injection: Injection | undefined, logged: LoggedRequest): Promise<void> {
    let start = 0;
    let end = bytes.length - 1;
    let status = 200;
    const range = req.headers.range;
    if (range !== undefined) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      if (m === null) throw new HttpError(416, "bad range");
      start = Number(m[1]);
      end = m[2] !== "" ? Math.min(Number(m[2]), bytes.length - 1) : bytes.length - 1;
      if (start >= bytes.length || end < start) {
        res.writeHead(416, { "Content-Range": `bytes */${bytes.length}` });
        res.end();
        return;
      }
      status = 206;
    }
    let body = bytes.subarray(start, end + 1);
    if (injection?.kind === "corrupt" && body.length > 0) {
      body = Buffer.from(body);
      body[body.length >> 1] = (body[body.length >> 1]! ^ 0xff) & 0xff;
    }
    res.writeHead(status, {
      ...headers,
      "Accept-Ranges": "bytes",
      "Content-Type": "application/octet-stream",
      "Content-Length": body.length,
      ...(status === 206 ? { "Content-Range": `bytes ${start}-${end}/${bytes.length}` } : {}),
    });
    if (method === "HEAD") {
      res.end();
      return;
    }
    const cut = injection?.kind === "truncate" || injection?.kind === "reset" || injection?.kind === "stall" ? Math.min(injection.afterBytes ?? 0, body.length) : body.length;
    const began = Date.now();
    const path = logged.url.split("?")[0]!;
    this.#sending.set(path, (this.#sending.get(path) ?? 0) + 1);
    this.peak.perPath.set(path, Math.max(this.peak.perPath.get(path) ?? 0, this.#sending.get(path)!));
    this.peak.distinctPaths = Math.max(this.peak.distinctPaths, this.#sending.size);
    this.peak.total = Math.max(this.peak.total, ++this.#inFlight);
    let counted = true;
    // Out of the count once the last byte is handed over: the client may ask again before a drain.
    const handedOver = () => {
      if (counted) this.#inFlight--;
      counted = false;
    };
    try {
      await this.#sendBody(res, body, cut, began, logged, handedOver);
    } finally {
      handedOver();
      const left = this.#sending.get(path)! - 1;
      if (left === 0) this.#sending.delete(path);
      else this.#sending.set(path, left);
    }
    if (injection?.kind === "stall") {
      await new Promise<void>((resolve) => res.once("close", resolve));
      return;
    }
    if (injection?.kind === "truncate" || injection?.kind === "reset") {
      // Part of the body, then the connection goes: the client sees a short read or a reset.
      await new Promise<void>((resolve) => res.write(Buffer.alloc(0), () => resolve()));
      if (injection.kind === "reset") res.socket?.resetAndDestroy();
      else res.socket?.destroy();
      return;
    }
    res.end();
  }

  async #sendBody(res: ServerResponse, body: Buffer, cut: number, began: number, logged: LoggedRequest, handedOver: () => void): Promise<void> {
    const slice = 16 * 1024;
    for (let at = 0; at < cut; ) {
      if (res.destroyed) return;
      const part = body.subarray(at, Math.min(cut, at + slice));
      at += part.length;
      logged.sent += part.length;
      const written = res.write(part);
      if (at >= cut) handedOver();
      if (!written) {
        await new Promise<void>((resolve) => {
          const go = () => {
            res.off("drain", go);
            res.off("close", go);
            resolve();
          };
          res.on("drain", go);
          res.on("close", go);
        });
      }
      const rate = this.throttle.bytesPerSecondPerConnection;
      if (rate !== undefined && at < cut) { // no pause after the last byte: the body is done for the client too
        const due = began + (at / rate) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }
}
