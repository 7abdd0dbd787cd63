/**
 * The blob lock against the lock Python's huggingface_hub takes: filelock's
 * UnixFileLock is open(O_RDWR | O_CREAT) + fcntl.flock(LOCK_EX | LOCK_NB),
 * which the Python snippet below does verbatim (python3's standard library
 * only; the tests are skipped where python3 is missing). Also the fallback
 * marker: a killed holder never blocks forever.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { acquireBlobLock } from "../../src/hub/transport/blob-lock.js";
import { startSnapshotDownload, type DownloadEvent } from "../../src/hub/huggingface/download.js";
import { FakeHub } from "./fake-hub-server.js";

const hasPython = spawnSync("python3", ["-c", "import fcntl"]).status === 0;

const PYTHON_LOCK = `
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o664)
if sys.argv[2] == "hold":
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()
    fcntl.flock(fd, fcntl.LOCK_UN)
else:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free")
    except BlockingIOError:
        print("busy")
`;

let dir: string;
const children: ChildProcess[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "dw-lock-"));
});
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

/** Python holding the lock until told (a line on stdin) or killed. */
async function pythonHolds(lockPath: string): Promise<ChildProcess> {
  const py = spawn("python3", ["-c", PYTHON_LOCK, lockPath, "hold"], { stdio: ["pipe", "pipe", "inherit"] });
  children.push(py);
  await new Promise<void>((resolve, reject) => {
    py.stdout!.once("data", () => resolve());
    py.once("exit", () => reject(new Error("python exited before locking")));
  });
  return py;
}

function pythonProbe(lockPath: string): string {
  return spawnSync("python3", ["-c", PYTHON_LOCK, lockPath, "probe"], { encoding: "utf8" }).stdout.trim();
}

describe.skipIf(!hasPython)("the flock shared with huggingface_hub", () => {
  it("waits while Python holds the lock, and takes it when Python lets go", async () => {
    const lockPath = join(dir, ".locks/models--a--b/x.lock");
    await mkdir(join(dir, ".locks/models--a--b"), { recursive: true });
    const py = await pythonHolds(lockPath);
    let waited = "";
    let acquired = false;
    const pending = acquireBlobLock(lockPath, { onWaiting: (who) => { waited = who; } }).then((lock) => {
      acquired = true;
      return lock;
    });
    await until(() => (waited !== "" ? true : undefined));
    expect(waited).toMatch(/holds .*x\.lock$/);
    expect(acquired).toBe(false);
    py.stdin!.end("\n");
    const lock = await pending;
    expect(lock.kind).toBe("flock");
    expect(pythonProbe(lockPath)).toBe("busy");
    await lock.release();
    expect(pythonProbe(lockPath)).toBe("free");
  });

  for (const helper of ["flock", "perl"] as const) {
    it.skipIf(spawnSync(helper, ["--version"]).error !== undefined)(`locks through ${helper} exactly as Python does: Python sees it held, then free`, async () => {
      const lockPath = join(dir, `${helper}.lock`);
      const lock = await acquireBlobLock(lockPath, { mode: helper });
      expect(lock.kind).toBe("flock");
      expect(pythonProbe(lockPath)).toBe("busy");
      await lock.release();
      expect(pythonProbe(lockPath)).toBe("free");
    });
  }

  it("a Python holder killed with SIGKILL does not block us: the kernel drops its lock", async () => {
    const lockPath = join(dir, "y.lock");
    const py = await pythonHolds(lockPath);
    const pending = acquireBlobLock(lockPath);
    py.kill("SIGKILL");
    const lock = await pending;
    await lock.release();
  });

  it("a download waits for Python's lock on the blob and sends no request for it until released", async () => {
    const hub = await FakeHub.start();
    try {
      const weights = randomBytes(512 * 1024);
      const etag = createHash("sha256").update(weights).digest("hex");
      hub.seed("alice/shared", { "model.safetensors": weights, "config.json": "{}" });
      await mkdir(join(dir, ".locks/models--alice--shared"), { recursive: true });
      const py = await pythonHolds(join(dir, ".locks/models--alice--shared", `${etag}.lock`));
      const events: DownloadEvent[] = [];
      const download = await startSnapshotDownload({ repo: "alice/shared", revision: "main" }, { cacheDir: dir, hubUrl: hub.url, onEvent: (e) => events.push(e) });
      await until(() => events.find((e) => e.kind === "waiting-for-lock"));
      await download.file("config.json").complete; // other files go on meanwhile
      expect(hub.requests.filter((r) => r.url.includes("model.safetensors") || r.url.includes(etag))).toEqual([]);
      py.stdin!.end("\n");
      const snap = await download.done;
      expect((await readFile(join(snap.dir, "model.safetensors"))).equals(weights)).toBe(true);
    } finally {
      await hub.close();
    }
  });
});

describe("the fallback lock file (no flock to share)", () => {
  it("waits for a live holder and takes over once that process is killed", async () => {
    const lockPath = join(dir, "z.lock");
    const holder = spawn(process.execPath, ["-e", "setTimeout(() => {}, 600000)"]);
    children.push(holder);
    await writeFile(`${lockPath}.dw-owner`, `${holder.pid}\n${hostname()}\n`);
    let waited = "";
    const pending = acquireBlobLock(lockPath, { mode: "own-file", onWaiting: (who) => { waited = who; } });
    await until(() => (waited !== "" ? true : undefined));
    expect(waited).toBe(`process ${holder.pid} on ${hostname()} holds ${lockPath}.dw-owner (delete it if that process is gone)`);
    holder.kill("SIGKILL");
    const lock = await pending;
    expect(lock.kind).toBe("own-file");
    expect(await readFile(`${lockPath}.dw-owner`, "utf8")).toBe(`${process.pid}\n${hostname()}\n`);
    await lock.release();
    await expect(readFile(`${lockPath}.dw-owner`)).rejects.toThrow();
  });

  it("breaks at once a marker whose process is gone, and one left half-written", async () => {
    const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }).stdout;
    await writeFile(join(dir, "a.lock.dw-owner"), `${gone}\n${hostname()}\n`);
    await (await acquireBlobLock(join(dir, "a.lock"), { mode: "own-file" })).release();
    const stale = join(dir, "b.lock.dw-owner");
    await writeFile(stale, "");
    const old = new Date(Date.now() - 60_000);
    await utimes(stale, old, old);
    await (await acquireBlobLock(join(dir, "b.lock"), { mode: "own-file" })).release();
  });
});

async function until<T>(check: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}
