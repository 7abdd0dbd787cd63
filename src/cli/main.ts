import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { CONVENTION_NAMES, CONVENTION_SUMMARIES } from "../delta/conventions/registry.js";
import { DeltaWeightsError, UsageError, ioError } from "../errors.js";
import { enableChunkCollections } from "../io/memory.js";
import { DEFAULT_DOWNLOAD_CONNECTIONS, MAX_DOWNLOAD_CONNECTIONS } from "../limits.js";
import { printable, terminalSafeJson } from "../text.js";
import { VERSION } from "../version.js";
import { makeContext, type CliContext, type GlobalFlags } from "./context.js";
import { hubSettings } from "./hub-options.js";
import { requiredOption } from "./options.js";
import { parseSize } from "./parse-size.js";
import { OUTTYPES, type Outtype } from "../gguf/llama.js";
import { OUTPUT_FORMAT_NAMES, type OutputFormatName } from "../model/output-formats.js";
import type { ApplyArgs, ConvertArgs, IdentifyArgs, InspectArgs, MakeArgs, PushArgs, VerifyArgs } from "./args.js";

/**
 * The command-line program: commander definitions, and the one place where
 * flags and the environment become library options (makeContext). Each
 * command is a module under commands/ that turns its typed arguments into
 * one library call; it is imported lazily so `inspect` never loads the Hub
 * client or the kernels.
 */

/** More hashing threads than this only adds memory: hashing is bound by the disk long before. */
const MAX_THREADS = 64;

function parseConnections(value: string): number {
  if (!/^[1-9][0-9]*$/.test(value) || Number(value) > MAX_DOWNLOAD_CONNECTIONS) throw new InvalidArgumentError(`expected a whole number from 1 to ${MAX_DOWNLOAD_CONNECTIONS}`);
  return Number(value);
}

function parseThreads(value: string): number {
  if (!/^[1-9][0-9]*$/.test(value) || Number(value) > MAX_THREADS) throw new InvalidArgumentError(`expected a whole number from 1 to ${MAX_THREADS}`);
  return Number(value);
}

function parseShards(value: string): number {
  if (!/^[1-9][0-9]?$/.test(value)) throw new InvalidArgumentError("expected a whole number from 1 to 99");
  return Number(value);
}

function parseSum(value: string): number {
  if (!/^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$/.test(value.trim())) throw new InvalidArgumentError("expected a number, e.g. 50637.1836");
  return Number(value);
}

/** Flags every command takes, before or after the subcommand's name. */
function addGlobalOptions(cmd: Command): Command {
  return cmd
    .option("--json", "print one JSON result document on stdout (an error document on failure)")
    .option("-q, --quiet", "print nothing but errors")
    .option("--no-progress", "no progress bars")
    .option("--threads <n>", `hashing threads (1-${MAX_THREADS})`, parseThreads)
    .option("--token <token>", "Hugging Face token (else HF_TOKEN or $HF_HOME/token)")
    .option("--connections <n>", `simultaneous downloads from the Hub in all, across files, byte ranges and repos (1-${MAX_DOWNLOAD_CONNECTIONS}; default ${DEFAULT_DOWNLOAD_CONNECTIONS})`, parseConnections)
    .option("--debug", "print stack traces");
}

type Options = Record<string, unknown>;

/** Runs a lazily imported command with its typed arguments and the context of the merged global flags. */
function action<A>(load: () => Promise<{ default: (args: A, ctx: CliContext) => Promise<void> }>, toArgs: (opts: Options, positional: string[]) => A) {
  return async (...params: unknown[]) => {
    const cmd = params[params.length - 1] as Command;
    const positional = params.slice(0, -2).filter((p): p is string => typeof p === "string");
    const opts = cmd.optsWithGlobals<Options & GlobalFlags>();
    const args = toArgs(opts, positional);
    const ctx = makeContext(opts, hubSettings({ token: opts.token }));
    current = ctx;
    const mod = await load();
    await mod.default(args, ctx);
  };
}

const optionalString = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined);

/** commander's collector for a repeatable option. */
function collect(value: string, previous: unknown): string[] {
  return [...(Array.isArray(previous) ? (previous as string[]) : []), value];
}

/** --delta, given once (or as --delta-path) or several times (LoRA adapters merged in order). */
function deltaOptions(o: Record<string, unknown>): { delta: string; chained?: string[] } {
  const given = Array.isArray(o.delta) ? (o.delta as string[]) : [];
  const [first, ...chained] = given;
  const delta = requiredOption({ ...o, delta: first }, "delta", "deltaPath");
  return chained.length === 0 ? { delta } : { delta, chained };
}

function applyCommand(name: string): Command {
  return addGlobalOptions(new Command(name))
    .description("recover a fine-tuned model: base + delta -> target, each output checked against what its publisher gave")
    .addOption(new Option("--base <src>", "base model (file, directory or Hub repo id)"))
    .addOption(new Option("--base-model-path <src>", "FastChat's name for --base"))
    .addOption(new Option("--delta <src>", "delta (directory or Hub repo id); LoRA adapters: repeat it to merge several in order").argParser(collect))
    .addOption(new Option("--delta-path <src>", "FastChat's name for --delta"))
    .addOption(new Option("--target <dir>", "output directory"))
    .addOption(new Option("--target-model-path <dir>", "FastChat's name for --target"))
    .option("--checksums <file>", "also check the outputs against a sha256sum or md5sum list the publisher gave")
    .addOption(new Option("--convention <name>", "apply by this convention instead of recognising it from the files").choices(CONVENTION_NAMES))
    .option("--expect-sum <value>", "check the recovered model against the integrity sum its publisher printed (Alpaca's check)", parseSum)
    .option("--force", "write into a target directory that holds other files (none of them is overwritten)")
    .option("--low-cpu-mem", "accepted for FastChat's scripts; delta-weights always works in bounded memory")
    .option("--no-cache-delta", "keep no copy of a delta from the Hub: fetch it into the target a file at a time, deleting each file once used (a rerun downloads it again)")
    .addOption(new Option("--format <format>", "format of the recovered weights: safetensors (default), pytorch (torch.save checkpoints, .bin shards), gguf (one GGUF file for llama.cpp) or meta (Meta's consolidated.NN.pth layout)").choices(OUTPUT_FORMAT_NAMES))
    .option("--byteorder-record", "PyTorch output: add the byteorder record torch >= 2.1 writes")
    .addOption(new Option("--outtype <type>", "GGUF tensor type, as llama.cpp's converter names it (default f16)").choices(OUTTYPES))
    .option("--num-shards <n>", "Meta's layout (--format meta): model-parallel ranks, consolidated.NN.pth files (default as Meta: 7B 1, 13B 2, 33B 4, 65B 8)", parseShards)
    .addHelpText("after", `\nConventions (--convention), in the order they are recognised:\n${CONVENTION_SUMMARIES.map((c) => `  ${c.name.padEnd(22)}${c.summary}`).join("\n")}`)
    .action(action(() => import("./commands/apply.js"), (o): ApplyArgs => ({
      base: requiredOption(o, "base", "baseModelPath"),
      ...deltaOptions(o),
      target: requiredOption(o, "target", "targetModelPath"),
      checksums: optionalString(o.checksums),
      convention: optionalString(o.convention),
      expectSum: typeof o.expectSum === "number" ? o.expectSum : undefined,
      force: o.force === true,
      cacheDelta: o.cacheDelta !== false,
      ...(typeof o.format === "string" ? { format: o.format as OutputFormatName } : {}),
      ...(o.byteorderRecord === true ? { byteorderRecord: true } : {}),
      ...(typeof o.outtype === "string" ? { outtype: o.outtype as Outtype } : {}),
      ...(typeof o.numShards === "number" ? { numShards: o.numShards } : {}),
    })));
}

function makeCommand(name: string): Command {
  return addGlobalOptions(new Command(name))
    .description("make a delta: target - base, with a manifest that proves the recovery exact")
    .addOption(new Option("--base <src>", "base model (file, directory or Hub repo id)"))
    .addOption(new Option("--base-model-path <src>", "FastChat's name for --base"))
    .addOption(new Option("--target <src>", "fine-tuned model (file, directory or Hub repo id)"))
    .addOption(new Option("--target-model-path <src>", "FastChat's name for --target"))
    .addOption(new Option("--delta <dir>", "output directory for the delta"))
    .addOption(new Option("--delta-path <dir>", "FastChat's name for --delta"))
    .addOption(new Option("--codec <codec>", "add (FastChat-compatible, plus exact fix-ups) or xor").choices(["add", "xor"]).default("add"))
    .option("--max-shard-size <size>", "shard size of the delta, e.g. 5GB (default: the target's layout)")
    .option("--push-to-hub <repo>", "upload the delta to this Hub repo")
    .option("--private", "create the Hub repo private")
    .option("--force", "write into a directory that holds other files (none of them is overwritten)")
    .action(action(() => import("./commands/make.js"), (o): MakeArgs => ({
      base: requiredOption(o, "base", "baseModelPath"),
      target: requiredOption(o, "target", "targetModelPath"),
      delta: requiredOption(o, "delta", "deltaPath"),
      codec: o.codec === "xor" ? "xor" : "add",
      maxShardBytes: typeof o.maxShardSize === "string" ? parseSize(o.maxShardSize) : undefined,
      pushToHub: optionalString(o.pushToHub),
      private: o.private === true,
      force: o.force === true,
    })));
}

export function buildProgram(): Command {
  const program = addGlobalOptions(new Command("delta-weights"))
    .description("make and apply delta weights for large language models, streaming and verified")
    .version(VERSION);
  program.addCommand(applyCommand("apply"));
  program.addCommand(makeCommand("make"));
  program.addCommand(
    addGlobalOptions(new Command("verify"))
      .description("re-check a recovered model against a manifest or a sha256sum list")
      .argument("<dir>", "model directory")
      .option("--manifest <src>", "delta.json, or the delta directory / repo holding it")
      .option("--checksums <file>", "a sha256sum list")
      .action(action(() => import("./commands/verify.js"), (o, [dir]): VerifyArgs => ({ dir: dir!, manifest: optionalString(o.manifest), checksums: optionalString(o.checksums) }))),
  );
  program.addCommand(
    addGlobalOptions(new Command("inspect"))
      .description("list a model's tensors, dtypes, shapes, files and metadata")
      .argument("<src>", "file, directory or Hub repo id")
      .action(action(() => import("./commands/inspect.js"), (_o, [src]): InspectArgs => ({ src: src! }))),
  );
  program.addCommand(
    addGlobalOptions(new Command("identify"))
      .description("say which known base conversion a model is, by its files' SHA-256 (the Hugging Face cache's blob names are used as they are)")
      .argument("<src>", "file, directory or Hub repo id")
      .action(action(() => import("./commands/identify.js"), (_o, [src]): IdentifyArgs => ({ src: src! }))),
  );
  program.addCommand(
    addGlobalOptions(new Command("convert"))
      .description("convert a model to safetensors or PyTorch checkpoints (one file, or a sharded directory)")
      .argument("<src>", "file, directory or Hub repo id")
      .argument("<out>", "output .safetensors, .bin, .pt or .pth file, or directory")
      .option("--max-shard-size <size>", "largest shard, e.g. 5GB (default: one file)")
      .option("--force", "write into a directory that holds other files (none of them is overwritten)")
      .addOption(new Option("--format <format>", "output format (default: from OUT's extension, else safetensors); pytorch writes torch.save checkpoints, gguf one GGUF file for llama.cpp, meta Meta's consolidated.NN.pth + params.json into a directory").choices(OUTPUT_FORMAT_NAMES))
      .option("--byteorder-record", "PyTorch output: add the byteorder record torch >= 2.1 writes")
      .addOption(new Option("--outtype <type>", "GGUF tensor type, as llama.cpp's converter names it (default f16; auto: f16 for a float16 model, else bf16)").choices(OUTTYPES))
      .option("--num-shards <n>", "Meta's layout (--format meta): model-parallel ranks, consolidated.NN.pth files (default as Meta: 7B 1, 13B 2, 33B 4, 65B 8)", parseShards)
      .action(action(() => import("./commands/convert.js"), (o, [src, out]): ConvertArgs => ({
        src: src!,
        out: out!,
        maxShardBytes: typeof o.maxShardSize === "string" ? parseSize(o.maxShardSize) : undefined,
        force: o.force === true,
        ...(typeof o.format === "string" ? { format: o.format as OutputFormatName } : {}),
        ...(o.byteorderRecord === true ? { byteorderRecord: true } : {}),
        ...(typeof o.outtype === "string" ? { outtype: o.outtype as Outtype } : {}),
        ...(typeof o.numShards === "number" ? { numShards: o.numShards } : {}),
      }))),
  );
  program.addCommand(
    addGlobalOptions(new Command("push"))
      .description("upload a delta directory to the Hugging Face Hub with a model card")
      .argument("<dir>", "directory to upload (a delta: it holds delta.json)")
      .argument("<repo>", "Hub repo id, org/name")
      .option("--private", "create the repo private")
      .option("--revision <branch>", "branch to commit to")
      .option("--message <text>", "commit message")
      .option("--allow-non-delta", "upload a directory that is not a delta (its weights become public unless the repo is private)")
      .action(action(() => import("./commands/push.js"), (o, [dir, repo]): PushArgs => ({
        dir: dir!,
        repo: repo!,
        private: o.private === true,
        revision: optionalString(o.revision),
        message: optionalString(o.message),
        allowNonDelta: o.allowNonDelta === true,
      }))),
  );
  return program;
}

/** The context of the command running, for the failure report (--json wants its error on stdout). */
let current: CliContext | undefined;

/** Exit status: 0 success, 1 the operation failed, 2 usage error. */
export async function main(argv: string[]): Promise<void> {
  // `... | head` closes stdout early: that is the reader's choice, not a failure.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
  process.once("SIGINT", () => {
    process.stderr.write(interruptedMessage(process.stderr.isTTY === true));
    process.exit(130);
  });
  enableChunkCollections();
  const [invokedAs, ...args] = argv;
  const debug = args.includes("--debug");
  const json = args.includes("--json");
  const program =
    invokedAs === "apply-delta" ? applyCommand("apply-delta").version(VERSION)
    : invokedAs === "make-delta" ? makeCommand("make-delta").version(VERSION)
    : buildProgram();
  configureExit(program);
  try {
    await program.parseAsync(args, { from: "user" });
  } catch (err) {
    process.exitCode = reportError(err, debug, current?.json ?? json);
  }
  // The command is over, whatever it left open. A worker, socket or timer still
  // referenced would hold the process after its last line was printed: give
  // pending writes a moment, then exit. Unreferenced, so a clean run exits at once.
  setTimeout(() => process.exit(), EXIT_GRACE_MS).unref();
}

/** How long a finished command waits for something it left open before exiting anyway. */
const EXIT_GRACE_MS = 2000;

/**
 * Ctrl-C's last words. On a terminal the cursor cli-progress hid is shown
 * again, on a line of its own after the echoed ^C; a pipe or file gets no
 * escape code, only the sentence.
 */
export function interruptedMessage(terminal: boolean): string {
  const sentence = "interrupted: run the same command again to resume\n";
  return terminal ? `\u001b[?25h\n${sentence}` : sentence;
}

function configureExit(program: Command): void {
  program.exitOverride();
  program.configureOutput({ outputError: (str, write) => write(str.startsWith("error:") ? str : `error: ${str}`) });
  for (const sub of program.commands) configureExit(sub);
}

/** One line on stderr (and with --json, an error document on stdout); the exit status. */
function reportError(err: unknown, debug: boolean, json: boolean): number {
  if (err instanceof CommanderError) {
    // help and version are "errors" with exit code 0; commander printed its own message
    if (err.exitCode !== 0 && json) printJsonError("E_USAGE", err.message.replace(/^error: /, ""));
    return err.exitCode === 0 ? 0 : 2;
  }
  const code = err instanceof DeltaWeightsError ? err.code : systemErrorCode(err);
  const message = printable(oneLine(err));
  process.stderr.write(`error: ${message}\n`);
  if (debug && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  if (json) printJsonError(code, message, err instanceof DeltaWeightsError ? err.rule : undefined);
  return err instanceof UsageError ? 2 : 1;
}

function printJsonError(code: string, message: string, rule?: string): void {
  process.stdout.write(terminalSafeJson(JSON.stringify({ error: { code, message, ...(rule === undefined ? {} : { rule }) } }, null, 2)) + "\n");
}

/**
 * The first line of the failure. A Node system error that reached here (a
 * path we did not expect to fail) is told as its path and cause, never as
 * "unexpected failure".
 */
function oneLine(err: unknown): string {
  // Escaped, not cut: a newline from an untrusted name would otherwise lose the rule after it.
  if (err instanceof DeltaWeightsError) return err.message;
  const sys = err as NodeJS.ErrnoException;
  if (err instanceof Error && typeof sys.code === "string" && typeof sys.path === "string") {
    return ioError(sys.syscall ?? "use", sys.path, err).message;
  }
  return `unexpected failure: ${err instanceof Error ? err.message : String(err)}`;
}

function systemErrorCode(err: unknown): string {
  return typeof (err as NodeJS.ErrnoException).code === "string" ? "E_IO" : "E_UNEXPECTED";
}
