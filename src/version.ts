import { readFileSync } from "node:fs";

/**
 * The package's version, from package.json: the one place it is written.
 * delta.json records it (which tool made a delta) and --version prints it.
 * The path is the same from src/ (tests) and dist/ (the installed package).
 */
export const VERSION: string = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;
