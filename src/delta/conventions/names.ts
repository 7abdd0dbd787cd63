/**
 * The names --convention accepts, in the order the registry tries them. Kept
 * apart from the registry so the CLI can list them without loading any
 * convention (or the kernels they use).
 */
export const CONVENTION_NAMES = ["enc", "xor", "koala", "delta-weights", "chinese-llama-alpaca", "lora", "lora-base-dtype", "llava", "ziya", "fastchat-v0", "alpaca", "fastchat"] as const;

export type ConventionName = (typeof CONVENTION_NAMES)[number];
