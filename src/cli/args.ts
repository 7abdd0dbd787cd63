import type { Outtype } from "../gguf/llama.js";
import type { OutputFormatName } from "../model/output-formats.js";

/** Each command's arguments, typed: what main.ts makes of the command line, what the command module receives. */

export interface ApplyArgs {
  base: string;
  delta: string;
  /** --delta given again: LoRA adapters merged after the first, in order. */
  chained?: string[];
  target: string;
  checksums?: string;
  convention?: string;
  expectSum?: number;
  force: boolean;
  /** false: --no-cache-delta. */
  cacheDelta: boolean;
  format?: OutputFormatName;
  byteorderRecord?: boolean;
  outtype?: Outtype;
  numShards?: number;
}

export interface MakeArgs {
  base: string;
  target: string;
  delta: string;
  codec: "add" | "xor";
  maxShardBytes?: number;
  pushToHub?: string;
  private: boolean;
  force: boolean;
}

export interface VerifyArgs {
  dir: string;
  manifest?: string;
  checksums?: string;
}

export interface InspectArgs {
  src: string;
}

export interface IdentifyArgs {
  src: string;
}

export interface ConvertArgs {
  src: string;
  out: string;
  maxShardBytes?: number;
  force: boolean;
  format?: OutputFormatName;
  byteorderRecord?: boolean;
  outtype?: Outtype;
  numShards?: number;
}

export interface PushArgs {
  dir: string;
  repo: string;
  private: boolean;
  revision?: string;
  message?: string;
  allowNonDelta: boolean;
}
