import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { DeltaWeightsError, UsageError } from "../errors.js";
import { enableChunkCollections } from "../io/memory.js";
import type { CliContext } from "./context.js";

/**
 * The command-line program: commander definitions only. Each command is a
 * module under commands/ that turns its options into one library call; it is
 * imported lazily so `inspect` never loads the Hub client.
 */

interface GlobalOptions {
  json?: boolean;
  quiet?: boolean;
  progress?: boolean;
  debug?: boolean;
  threads?: number;
  token?: string;
}

function parseThreads(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new InvalidArgumentError("expected an integer from 1 to 256");
  return n;
}

function addGlobalOptions(cmd: Command): Command {
  return cmd
    .option("--json", "print one JSON result document on stdout")
    .option("-q, --quiet", "print nothing but errors")
    .option("--no-progress", "no progress bars")
    .option("--threads <n>", "worker threads", parseThreads)
    .option("--token <token>", "Hugging Face token (else HF_TOKEN or $HF_HOME/token)")
    .option("--debug", "print stack traces");
}

function makeContext(opts: GlobalOptions): CliContext {
  const json = opts.json === true;
  const quiet = opts.quiet === true;
  return {
    json,
    quiet,
    progress: opts.progress !== false && !quiet && !json && process.stderr.isTTY === true,
    debug: opts.debug === true,
    threads: opts.threads,
    token: opts.token,
    log: (line) => { if (!quiet && !json) process.stdout.write(line + "\n"); },
    printJson: (value) => { process.stdout.write(JSON.stringify(value, null, 2) + "\n"); },
  };
}

type CommandModule = { default: (args: Record<string, unknown>, ctx: CliContext) => Promise<void> };

/** Runs a lazily imported command module with the merged options. */
function action(load: () => Promise<CommandModule>, positional: string[] = []) {
  return async (...params: unknown[]) => {
    const cmd = params[params.length - 1] as Command;
    const opts = cmd.opts() as Record<string, unknown> & GlobalOptions;
    const args: Record<string, unknown> = { ...opts };
    positional.forEach((key, i) => { args[key] = params[i]; });
    const mod = await load();
    await mod.default(args, makeContext(opts));
  };
}

function applyCommand(name: string): Command {
  return addGlobalOptions(new Command(name))
    .description("recover a fine-tuned model: base + delta -> target, verified by SHA-256")
    .addOption(new Option("--base <src>", "base model (file, directory or Hub repo id)"))
    .addOption(new Option("--base-model-path <src>").hideHelp())
    .addOption(new Option("--delta <src>", "delta (directory or Hub repo id)"))
    .addOption(new Option("--delta-path <src>").hideHelp())
    .addOption(new Option("--target <dir>", "output directory"))
    .addOption(new Option("--target-model-path <dir>").hideHelp())
    .option("--checksums <file>", "check outputs against a sha256sum list (legacy deltas)")
    .action(action(() => import("./commands/apply.js")));
}

function makeCommand(name: string): Command {
  return addGlobalOptions(new Command(name))
    .description("make a delta: target - base, with a manifest that proves the recovery exact")
    .addOption(new Option("--base <src>", "base model (file, directory or Hub repo id)"))
    .addOption(new Option("--base-model-path <src>").hideHelp())
    .addOption(new Option("--target <src>", "fine-tuned model (file, directory or Hub repo id)"))
    .addOption(new Option("--target-model-path <src>").hideHelp())
    .addOption(new Option("--delta <dir>", "output directory for the delta"))
    .addOption(new Option("--delta-path <dir>").hideHelp())
    .addOption(new Option("--codec <codec>", "add (FastChat-compatible, plus exact fix-ups) or xor").choices(["add", "xor"]).default("add"))
    .option("--max-shard-size <size>", "shard size of the delta, e.g. 5GB (default: the target's layout)")
    .option("--push-to-hub <repo>", "upload the delta to this Hub repo")
    .option("--private", "create the Hub repo private")
    .action(action(() => import("./commands/make.js")));
}

export function buildProgram(): Command {
  const program = new Command("delta-weights")
    .description("make and apply delta weights for large language models, streaming and verified")
    .version("0.1.0");
  program.addCommand(applyCommand("apply"));
  program.addCommand(makeCommand("make"));
  program.addCommand(
    addGlobalOptions(new Command("verify"))
      .description("re-check a recovered model against a manifest or a sha256sum list")
      .argument("<dir>", "model directory")
      .option("--manifest <src>", "delta.json, or the delta directory / repo holding it")
      .option("--checksums <file>", "a sha256sum list")
      .action(action(() => import("./commands/verify.js"), ["dir"])),
  );
  program.addCommand(
    addGlobalOptions(new Command("inspect"))
      .description("list a model's tensors, dtypes, shapes, files and metadata")
      .argument("<src>", "file, directory or Hub repo id")
      .action(action(() => import("./commands/inspect.js"), ["src"])),
  );
  program.addCommand(
    addGlobalOptions(new Command("convert"))
      .description("convert a model to safetensors (one file, or a sharded directory)")
      .argument("<src>", "file, directory or Hub repo id")
      .argument("<out>", "output .safetensors file or directory")
      .option("--max-shard-size <size>", "largest shard, e.g. 5GB (default: one file)")
      .action(action(() => import("./commands/convert.js"), ["src", "out"])),
  );
  program.addCommand(
    addGlobalOptions(new Command("push"))
      .description("upload a directory (a delta) to the Hugging Face Hub with a model card")
      .argument("<dir>", "directory to upload")
      .argument("<repo>", "Hub repo id, org/name")
      .option("--private", "create the repo private")
      .option("--revision <branch>", "branch to commit to")
      .option("--message <text>", "commit message")
      .action(action(() => import("./commands/push.js"), ["dir", "repo"])),
  );
  return program;
}

/** Exit status: 0 success, 1 the operation failed, 2 usage error. */
export async function main(argv: string[]): Promise<void> {
  // `... | head` closes stdout early: that is the reader's choice, not a failure.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
  enableChunkCollections();
  const [invokedAs, ...rest] = argv;
  const debug = rest.includes("--debug");
  let program: Command;
  let args: string[];
  if (invokedAs === "apply-delta") {
    program = applyCommand("apply-delta");
    args = rest;
  } else if (invokedAs === "make-delta") {
    program = makeCommand("make-delta");
    args = rest;
  } else {
    program = buildProgram();
    args = rest;
  }
  configureExit(program);
  try {
    await program.parseAsync(args, { from: "user" });
  } catch (err) {
    process.exitCode = reportError(err, debug);
  }
}

function configureExit(program: Command): void {
  program.exitOverride();
  program.configureOutput({ outputError: (str, write) => write(str.startsWith("error:") ? str : `error: ${str}`) });
  for (const sub of program.commands) configureExit(sub);
}

function reportError(err: unknown, debug: boolean): number {
  if (err instanceof CommanderError) {
    // help and version are "errors" with exit code 0
    return err.exitCode === 0 ? 0 : 2;
  }
  if (err instanceof UsageError) {
    process.stderr.write(`error: ${err.message}\n`);
    if (debug) process.stderr.write(`${err.stack}\n`);
    return 2;
  }
  const message = err instanceof DeltaWeightsError ? err.message : `unexpected failure: ${err instanceof Error ? err.message : String(err)}`;
  process.stderr.write(`error: ${message.split("\n")[0]}\n`);
  if (debug && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  return 1;
}
