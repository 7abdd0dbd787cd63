import { DeltaError } from "../../errors.js";
import type { DeltaView } from "../conventions/types.js";

/**
 * Where a delta's tokenizer records the tokens added to its vocabulary, and
 * the one reading of them. Each transformers generation keeps them somewhere
 * else: a slow tokenizer saves `added_tokens.json` ({token: id}); a fast one
 * lists every added token in `tokenizer.json` (`added_tokens`, with ids);
 * since 4.34 `tokenizer_config.json` has `added_tokens_decoder` ({id: token});
 * and `special_tokens_map.json` names the pad token (no id). A fast tokenizer
 * that was loaded without its sentencepiece file saves no added_tokens.json
 * at all, so every file is read, and where two give ids they must agree.
 */
export interface AddedTokens {
  /** token -> its id and the files that place it there. */
  readonly placed: ReadonlyMap<string, { id: number; files: string[] }>;
  /** special_tokens_map.json's pad_token (or tokenizer_config.json's), when it names one. */
  readonly padToken: string | undefined;
  /** The other special tokens the files name (bos, eos, unk): tokens of the base's own vocabulary. */
  readonly specials: ReadonlySet<string>;
}

/**
 * Reads each of added_tokens.json, tokenizer.json, tokenizer_config.json and
 * special_tokens_map.json the delta has; refuses, naming both files, where
 * two place a token differently.
 */
export async function readAddedTokens(view: DeltaView): Promise<AddedTokens> {
  const placed = new Map<string, { id: number; files: string[] }>();
  const byId = new Map<number, string>();
  const place = (file: string, token: unknown, id: unknown, where: string) => {
    if (typeof token !== "string") throw new DeltaError(`${view.source}: ${file} ${where} has no token text`);
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) throw new DeltaError(`${view.source}: ${file} ${where} has no token id (${JSON.stringify(id)})`);
    const known = placed.get(token);
    if (known !== undefined && known.id !== id) {
      throw new DeltaError(`${view.source}: its tokenizer files disagree: ${known.files.join(", ")} put ${JSON.stringify(token)} at id ${known.id}, ${file} at id ${id}`);
    }
    const other = byId.get(id);
    if (other !== undefined && other !== token) {
      throw new DeltaError(`${view.source}: its tokenizer files disagree on id ${id}: ${placed.get(other)!.files.join(", ")} say ${JSON.stringify(other)}, ${file} says ${JSON.stringify(token)}`);
    }
    if (known === undefined) placed.set(token, { id, files: [file] });
    else if (!known.files.includes(file)) known.files.push(file);
    byId.set(id, token);
  };

  const addedJson = asObject(await view.json("added_tokens.json"), view, "added_tokens.json");
  for (const [token, id] of Object.entries(addedJson ?? {})) place("added_tokens.json", token, id, `entry ${JSON.stringify(token)}`);

  // tokenizer.json holds the whole vocabulary and merges; only this member is read.
  const list = await view.jsonMember("tokenizer.json", "added_tokens");
  if (list !== undefined && list !== null) {
    if (!Array.isArray(list)) throw new DeltaError(`${view.source}: tokenizer.json's added_tokens is not a list`);
    list.forEach((entry: unknown, i) => {
      const e = asObject(entry, view, `tokenizer.json added_tokens[${i}]`) ?? {};
      place("tokenizer.json", e.content, e.id, `added_tokens[${i}]`);
    });
  }

  const config = asObject(await view.json("tokenizer_config.json"), view, "tokenizer_config.json");
  const decoder = config === undefined ? undefined : asObject(field(config, "added_tokens_decoder"), view, "tokenizer_config.json added_tokens_decoder");
  for (const [key, entry] of Object.entries(decoder ?? {})) {
    const id = /^(0|[1-9][0-9]*)$/.test(key) ? Number(key) : NaN;
    place("tokenizer_config.json", tokenText(entry), id, `added_tokens_decoder[${JSON.stringify(key)}]`);
  }

  const map = asObject(await view.json("special_tokens_map.json"), view, "special_tokens_map.json");
  const specials = new Set<string>();
  for (const source of [map, config]) {
    for (const role of ["bos_token", "eos_token", "unk_token"]) {
      const name = source === undefined ? undefined : tokenText(field(source, role));
      if (name !== undefined) specials.add(name);
    }
  }
  const padToken = tokenText(map === undefined ? undefined : field(map, "pad_token")) ?? tokenText(config === undefined ? undefined : field(config, "pad_token"));
  return { placed, padToken, specials };
}

/**
 * The token the tokenizer files place at `row`, and which files say so. With
 * no file placing one there, a pad token that no file places and that is not
 * one of the base's specials is the token at the first new row when exactly
 * one row is new: `add_special_tokens({"pad_token": ...})` appends it at
 * len(tokenizer), which is where every publisher that grows by one row
 * (FastChat v0, Alpaca) put `[PAD]`.
 */
export function tokenAtRow(tokens: AddedTokens, row: number, newRows: number): { token: string; from: string } | undefined {
  for (const [token, { id, files }] of tokens.placed) if (id === row) return { token, from: files.join(", ") };
  const pad = tokens.padToken;
  if (newRows === 1 && pad !== undefined && !tokens.placed.has(pad) && !tokens.specials.has(pad)) {
    return { token: pad, from: "special_tokens_map.json's pad_token, added at the first new row" };
  }
  return undefined;
}

/** A token as the files write it: a string, or an AddedToken object ({"content": ...}, with "__type" in older files). */
function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null && !Array.isArray(value) && Object.hasOwn(value, "content")) {
    const content = (value as { content: unknown }).content;
    return typeof content === "string" ? content : undefined;
  }
  return undefined;
}

function field(object: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(object, key) ? object[key] : undefined;
}

function asObject(value: unknown, view: DeltaView, what: string): Record<string, unknown> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) throw new DeltaError(`${view.source}: ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}
