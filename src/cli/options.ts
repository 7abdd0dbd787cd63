import { UsageError } from "../errors.js";

/**
 * The value of a required flag given under its own name or its FastChat
 * alias (`--base` or `--base-model-path`); both at once must agree.
 */
export function requiredOption(args: Record<string, unknown>, name: string, alias: string): string {
  const value = args[name];
  const aliased = args[alias];
  const flag = `--${name}`;
  if (value !== undefined && aliased !== undefined && value !== aliased) {
    throw new UsageError(`${flag} and its alias --${kebab(alias)} disagree`);
  }
  const chosen = value ?? aliased;
  if (typeof chosen !== "string" || chosen === "") throw new UsageError(`missing required option ${flag}`);
  return chosen;
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
