// One downloadSnapshot in a process of its own (the built library, dist/),
// for tests that kill it mid-download or race two of them. Argument: JSON
// { repo, options }. Prints one JSON line per event, then {done} or {error}.
import { downloadSnapshot } from "../../dist/hub/huggingface/download.js";

const { repo, options } = JSON.parse(process.argv[2] ?? "{}");
const say = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
try {
  const snapshot = await downloadSnapshot({ repo, revision: "main" }, { ...options, onEvent: (event) => say({ event }) });
  say({ done: snapshot });
} catch (err) {
  say({ error: err instanceof Error ? err.message : String(err) });
  process.exitCode = 1;
}
