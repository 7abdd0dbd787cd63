import type { FloatDType } from "../../dtypes.js";
import { DeltaError } from "../../errors.js";
import { JsonCursor, JsonSyntaxError } from "../../json.js";
import { MAX_JSON_DEPTH } from "../../limits.js";

/** What the tensors an output holds say its config.json must say. */
export interface TensorFacts {
  /** Rows of the written model.embed_tokens.weight, when it is written. */
  vocabRows: number | undefined;
  /** The dtype of the written float weights, when there are any. */
  floatDtype: FloatDType | undefined;
}

/** transformers' names for torch dtypes, as `save_pretrained` writes `torch_dtype`. */
export const TORCH_DTYPE: Record<FloatDType, string> = { F16: "float16", BF16: "bfloat16", F32: "float32", F64: "float64" };

/**
 * config.json as an output must carry it, so that it never describes tensors
 * the output does not hold. Every publisher's script ends in
 * `save_pretrained`, which writes `torch_dtype` from the model's dtype and
 * `vocab_size` from its config, which resize_token_embeddings keeps equal to
 * the embedding rows; so a copied config gets the written tensors' dtype and
 * rows. Only those two members change, in place: the rest of the file stays
 * byte for byte as its publisher wrote it (a re-serialization would turn
 * Python's `1e-06` into `0.000001`). A config that disagrees with its own
 * model's rows is refused: transformers could not have loaded that model, so
 * the publisher's script stops there too.
 *
 * `ownRows` are the embedding rows of the model the config came with (the
 * base's or the delta's); `label` names that file in messages.
 */
export function fitConfig(text: string, facts: TensorFacts, own: { rows: number | undefined; label: string }): { text: string; changes: string[] } {
  const members = topLevelMembers(text, own.label);
  const member = (key: string) => members.spans.get(key);
  const changes: string[] = [];
  const edits: { key: string; value: string }[] = [];

  const vocab = member("vocab_size");
  const declared = vocab === undefined ? undefined : Number(text.slice(vocab.start, vocab.end));
  if (vocab !== undefined && !Number.isSafeInteger(declared)) throw new DeltaError(`${own.label}: vocab_size is ${text.slice(vocab.start, vocab.end).slice(0, 40)}, not a whole number`);
  if (declared !== undefined && own.rows !== undefined && declared !== own.rows) {
    throw new DeltaError(`${own.label} says vocab_size ${declared}, but the model it came with has ${own.rows} embedding rows: transformers cannot load that model (the publisher's script stops there too)`);
  }
  if (facts.vocabRows !== undefined && declared !== facts.vocabRows) {
    edits.push({ key: "vocab_size", value: String(facts.vocabRows) });
    changes.push(`vocab_size ${declared ?? "(absent)"} -> ${facts.vocabRows}`);
  }

  if (facts.floatDtype !== undefined) {
    const want = TORCH_DTYPE[facts.floatDtype];
    const dtype = member("torch_dtype");
    const stated = dtype === undefined ? undefined : (JSON.parse(text.slice(dtype.start, dtype.end)) as unknown);
    if (stated !== want) {
      edits.push({ key: "torch_dtype", value: JSON.stringify(want) });
      changes.push(`torch_dtype ${stated === undefined ? "(absent)" : JSON.stringify(stated)} -> ${JSON.stringify(want)}`);
    }
  }
  return { text: applyEdits(text, members, edits), changes };
}

interface Members {
  /** Each top-level member's value: where it lies in the text. */
  spans: Map<string, { start: number; end: number }>;
  /** Where the last member's value ends (just after the opening brace when there is none). */
  last: number;
  /** The whitespace before the first key: how a new member is indented. */
  indent: string;
}

function topLevelMembers(text: string, label: string): Members {
  const spans = new Map<string, { start: number; end: number }>();
  const cursor = new JsonCursor(text, MAX_JSON_DEPTH);
  let last = 0;
  try {
    if (cursor.peekKind() !== "object") cursor.fail("expected a JSON object");
    last = cursor.pos + 1;
    for (const key of cursor.objectKeys(1)) {
      if (spans.has(key)) cursor.fail(`duplicate key ${JSON.stringify(key.slice(0, 100))}`);
      cursor.skipWhitespace();
      const start = cursor.pos;
      cursor.skipValue(1);
      spans.set(key, { start, end: cursor.pos });
      last = cursor.pos;
    }
    cursor.expectEnd();
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new DeltaError(`${label} is not valid JSON: ${err.message}`, { cause: err });
    throw err;
  }
  return { spans, last, indent: /^\s*\{(\s*)"/.exec(text)?.[1] ?? "" };
}

/** The text with each edited member's value replaced in place, and absent ones appended after the last member in the file's indentation. */
function applyEdits(text: string, members: Members, edits: { key: string; value: string }[]): string {
  const changes = edits.filter((e) => members.spans.has(e.key)).map((e) => ({ ...members.spans.get(e.key)!, value: e.value }));
  const appended = edits.filter((e) => !members.spans.has(e.key));
  if (appended.length > 0) {
    const indent = members.indent === "" ? " " : members.indent;
    const empty = members.spans.size === 0;
    const added = appended.map((e, i) => `${i === 0 && empty ? "" : ","}${indent}${JSON.stringify(e.key)}: ${e.value}`).join("");
    // In an empty object the closing brace goes back to the line's start.
    changes.push({ start: members.last, end: members.last, value: empty ? `${added}${indent.replace(/[ \t]+$/, "")}` : added });
  }
  let out = text;
  for (const edit of changes.sort((a, b) => b.start - a.start)) out = out.slice(0, edit.start) + edit.value + out.slice(edit.end);
  return out;
}
