/**
 * The SHA-256 of Chinese-LLaMA-Alpaca's adapter_model.bin files, as the
 * project printed them in its SHA256.md (ymcui/Chinese-LLaMA-Alpaca),
 * copied digit for digit. A merge cannot be checked against the project's
 * digests of merged models (those are of the Meta-layout .pth files its
 * script writes with torch.save), but which adapter the user holds, and in
 * which order, is the most common mistake with these releases, and its
 * digest says so.
 */
export const CHINESE_LLAMA_ALPACA_ADAPTERS: ReadonlyMap<string, string> = new Map([
  ["2a2c24d096f5d509f24946fdbd8c25e1ce4a0acb955902f7436d74c0c0379d86", "Chinese-LLaMA-7B"],
  ["8c928db86b2a0cf73f019832f921eb7e1e069ca21441b4bfa12c4381c6cc46be", "Chinese-LLaMA-Plus-7B"],
  ["6a4ce789d219bde122f8d9a20371937f2aa2ee86a2311d9f5e303df2e774f9fc", "Chinese-LLaMA-13B"],
  ["784fcff9c4bdf4e77d442a01158e121caf8fcce0f97ffb32396fe7a3617ee7e8", "Chinese-LLaMA-Plus-13B"],
  ["93a449bafb71ff1bb74a4a21e64e102e5078e5c3898eb40d013790072a0fa3de", "Chinese-LLaMA-33B"],
  ["16f2544f4b5be9840dbb1a8071a9bc42627ed4232be3b0b600b43f7b4b5f08a7", "Chinese-LLaMA-Plus-33B"],
  ["0d9b6ed8e4a7d1ae590a16c89a452a488d66ff07e45487972f61c2b6e46e36de", "Chinese-Alpaca-7B"],
  ["4ee0bf805c312a9a771624d481fbdb4485e1b0a70cd2a8da9f96137f177b795d", "Chinese-Alpaca-Plus-7B"],
  ["3cd2776908c3f5efe68bf6cf0248cb0e80fb7c55a52b8406325c9f0ca37b8594", "Chinese-Alpaca-Pro-7B"],
  ["cb8dda3c005f3343a0740dcd7237fbb600cb14b6bff9b6f3d488c086a2f08ada", "Chinese-Alpaca-13B"],
  ["a1fcdcb6d7e1068f925fb36ec78632c76058ba12ba352bed4d44060b8e6f4706", "Chinese-Alpaca-Plus-13B"],
  ["f076b20fc2390ddbc35fd56d580d46ea834b33bbae34a4bb3cb7b571e60602e0", "Chinese-Alpaca-Pro-13B"],
  ["6b39da4c682e715a9de30b247b7e9b812d2d54f7d320ec9b452000a5cd4d178d", "Chinese-Alpaca-33B"],
  ["411f5b9351abcc33c13a82bdd97ddcff81ad7993a8ddb83085b7ea97fad92fc7", "Chinese-Alpaca-Plus-33B"],
  ["0e7ba4951f605d2c0a7f0bcb983d7f6ed075c8dd23fbbcbc8a8c9643247212a3", "Chinese-Alpaca-Pro-33B"],
]);

/** The SHA-256 of the two tokenizer.model files the same SHA256.md lists. */
export const CHINESE_LLAMA_ALPACA_TOKENIZERS: ReadonlyMap<string, string> = new Map([
  ["e2676d4ca29ca1750f6ff203328d73b189321dc5776ceede037cbd36541d70c0", "the Chinese-LLaMA tokenizer"],
  ["2d967e855b1213a439df6c8ce2791f869c84b4f3b6cfacf22b86440b8192a2f8", "the Chinese-Alpaca tokenizer"],
]);
