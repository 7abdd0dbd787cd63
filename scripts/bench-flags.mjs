// The benches' command lines: `--name N` options, each a positive number.

/** A reader of `--name N` from `args`; a missing option gives `fallback`, a bad value prints `usage` and exits 2. */
export function numberFlags(args, usage) {
  return (name, fallback) => {
    const i = args.indexOf(name);
    if (i === -1) return fallback;
    const value = Number(args[i + 1]);
    if (!Number.isFinite(value) || value <= 0) {
      console.error(`usage: ${usage}\n${name} needs a positive number`);
      process.exit(2);
    }
    return value;
  };
}
