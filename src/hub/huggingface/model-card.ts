import { VERSION } from "../../version.js";
import type { ModelCardInput } from "../backend.js";
import { hubRepoOf } from "./repo-id.js";

export type { CardManifest, ModelCardInput } from "../backend.js";

/**
 * The model card (README.md) pushed with a delta. Pure: it takes the parsed
 * delta.json (or nothing, for a plain folder) and returns Markdown with the
 * Hub's YAML front matter.
 */

interface FileSum {
  size: number;
  sha256: string;
}

export function makeModelCard({ repo, manifest }: ModelCardInput): string {
  const baseSource = typeof manifest?.base?.source === "string" ? manifest.base.source : undefined;
  const targetSource = typeof manifest?.target?.source === "string" ? manifest.target.source : undefined;
  const baseRepo = baseSource !== undefined ? hubRepoOf(baseSource) : undefined;
  const codec = manifest?.codec === "xor" ? "xor" : "add";

  const front = ["---"];
  if (baseRepo !== undefined) front.push(`base_model: ${baseRepo}`);
  front.push("license: other", "tags:", "- delta-weights", "---", "");

  const name = repo.split("/").pop() ?? repo;
  if (manifest === undefined) {
    return [...front, `# ${name}`, "", `Uploaded with delta-weights ${VERSION}.`, ""].join("\n");
  }

  // A base given as a Hub id is printed as given (with its revision); a local one cannot be.
  const baseArg = baseSource !== undefined && baseRepo !== undefined ? baseSource.replace(/^hf:\/\//, "") : "<path-or-repo-of-the-base-model>";
  const how = codec === "xor"
    ? "the bitwise XOR of the target's and the base's tensor bytes"
    : "the element-wise difference target - base (FastChat-compatible), with exact fix-ups wherever rounding would otherwise lose bits";
  const lines = [
    ...front,
    `# ${name}`,
    "",
    `Delta weights: this repository holds ${how}. It is not a usable model on its own: ` +
      `add it to the base model${baseSource !== undefined ? ` \`${inline(baseSource)}\`` : ""} to recover the fine-tuned model` +
      `${targetSource !== undefined ? ` \`${inline(targetSource)}\`` : ""}, bit for bit.`,
    "",
    "## Recover the model",
    "",
    installLine(madeWith(manifest.tool)),
    "",
    "```bash",
    "npm ci    # the dependencies its package-lock.json pins by integrity hash; builds the tool",
    `node bin/apply-delta --base ${baseArg} --delta ${repo} --target ./model`,
    "```",
    "",
    "Every recovered file is checked against the SHA-256 sums below (recorded in `delta.json`) before it gets its name, " +
      "and every base tensor against the base the delta was made from: a base that does not match stops the run, naming the first tensor that differs, " +
      "and no file that fails its check is ever left under its final name.",
    "",
  ];
  const targetFiles = fileSums(manifest.target?.files);
  if (targetFiles.length > 0) {
    lines.push("## Target files", "", "| file | size (bytes) | sha256 |", "|---|---:|---|");
    for (const [path, sum] of targetFiles) lines.push(`| ${cell(path)} | ${sum.size} | \`${sum.sha256}\` |`);
    lines.push("");
  }
  return lines.join("\n");
}

/**
 * How to get the tool. delta-weights is not on the npm registry, so no
 * registry name is given to install or `npx`: today that fails for
 * everyone, and later it would run whatever someone published under the
 * name. The card names the version that made the delta and says to get
 * the tool's own source at it; its package-lock.json pins every dependency
 * by integrity hash.
 */
function installLine(version: string): string {
  return `This delta was made with delta-weights ${version}. delta-weights is not published on the npm registry: ` +
    "do not install or `npx` a package of that name from it, as anyone may publish one. " +
    `Get the delta-weights source at version ${version} and, in its folder, with Node.js 22, 24 or 26:`;
}

/** The version in delta.json's `tool` ("delta-weights 0.1.0"), or this tool's own when that says nothing usable. */
function madeWith(tool: unknown): string {
  const match = typeof tool === "string" ? /^delta-weights (\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)$/.exec(tool) : null;
  return match?.[1] ?? VERSION;
}

function fileSums(files: Record<string, unknown> | undefined): [string, FileSum][] {
  if (files === undefined || files === null || typeof files !== "object") return [];
  return Object.entries(files)
    .filter((entry): entry is [string, FileSum] => {
      const v = entry[1] as Partial<FileSum> | null;
      return v !== null && typeof v === "object" && Number.isSafeInteger(v.size) && typeof v.sha256 === "string" && /^[0-9a-f]{64}$/.test(v.sha256);
    })
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Text from delta.json inside a Markdown table cell: no pipes or line breaks may escape it. */
function cell(text: string): string {
  return text.replace(/[\r\n]+/g, " ").replace(/\\/g, "\\\\").replace(/\|/g, "\\|");
}

function inline(text: string): string {
  return text.replace(/[\r\n`]+/g, " ");
}
