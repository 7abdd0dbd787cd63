import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { ModelError } from "../errors.js";

export interface ResolveOptions {
  /** Hugging Face token (the CLI reads --token, HF_TOKEN, $HF_HOME/token). */
  token?: string;
  /** Hub endpoint (default: HF_ENDPOINT or https://huggingface.co). */
  hubUrl?: string;
  fetch?: typeof fetch;
}

export interface ResolvedSource {
  /** Local file or directory. */
  path: string;
  /** What the user named, for messages and delta.json. */
  source: string;
}

/**
 * Turns a SRC (local path, `org/name[@rev]`, `hf://org/name@rev`) into a local
 * path. An existing local path always wins.
 */
export async function resolveSource(src: string, _options: ResolveOptions = {}): Promise<ResolvedSource> {
  if (!src.startsWith("hf://") && existsSync(src)) return { path: resolve(src), source: src };
  throw new ModelError(`Failed to open ${src}: no such file or directory`);
}
