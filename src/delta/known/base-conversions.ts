/**
 * Files of LLaMA base models whose SHA-256 the projects that document their
 * recovery published: the Hugging Face conversions deltas were made against,
 * and Meta's original checkpoints (the key files of .enc releases). They
 * tell a user which base they hold before anything is applied: the most
 * common failure of these releases is a base converted differently.
 */
export interface KnownFile {
  /** What the file is: "LLaMA-7B, Hugging Face conversion (transformers 4.28), shard 1 of 2". */
  name: string;
  /** The model the file belongs to, for a one-line verdict: "LLaMA-7B (Hugging Face conversion)". */
  model: string;
  /** Who published the digest. */
  listedBy: string;
}

const CHINESE = "Chinese-LLaMA-Alpaca SHA256.md";
const PYGMALION = "the Pygmalion docs";
const BOTH = `${CHINESE} and ${PYGMALION}`;

function hf(size: string, shard: number, of: number, listedBy: string): KnownFile {
  return { name: `LLaMA-${size}, Hugging Face conversion (transformers 4.28), shard ${shard} of ${of}`, model: `LLaMA-${size} (Hugging Face conversion)`, listedBy };
}

function meta(size: string, file: string): KnownFile {
  return { name: `LLaMA-${size}, Meta's original ${file}`, model: `LLaMA-${size} (Meta's original checkpoint)`, listedBy: BOTH };
}

export const KNOWN_FILES: ReadonlyMap<string, KnownFile> = new Map([
  ["0087155d6df07106c1d910bfeb6aab1be8e612dfbf2b56ddfb4ccbde7dbd50d0", hf("7B", 1, 2, BOTH)],
  ["461bc5e50200db7813ff99cc0b9316c48ccbd6aaaa31bf8cf7bee0b64bc3eda3", hf("7B", 2, 2, BOTH)],
  ["dd20cdee2637408c6ab88c13f5c27d153bacd0e99f2d55f6a66fbd0269944436", hf("13B", 1, 3, BOTH)],
  ["1aba886c5f28d2e2e9b04ab3c4f5bc250c6b06efc1baa3f557677b3097f70e6a", hf("13B", 2, 3, BOTH)],
  // Two "good" 13B conversions circulate: their third shards differ.
  ["2efc56cddb7877c830bc5b402ee72996aedb5694c9e8007bf1d52d72c0d97d26", hf("13B", 3, 3, CHINESE)],
  ["eac58861ca5f3749c819676d908b906d3df38046c09efe055fe78d7678b718e7", hf("13B", 3, 3, PYGMALION)],
  ["9c2a7223ab5f9cf3d46913d2b776e99cbd6ed93f69991594b92a8cef0c681a78", hf("33B", 1, 7, CHINESE)],
  ["4984274738e52195f4b1a5b35d719cf0fade6df1f645507d92d61af4dd8dcdfe", hf("33B", 2, 7, CHINESE)],
  ["64c73932562810c5c33b15bfec5921d3ced0e8cdb3766c214eda2f45fa3edd13", hf("33B", 3, 7, CHINESE)],
  ["c7d72d11770f5b58eb45c2dd8e19aae2cbd5a03463b564de3945b21825ebacba", hf("33B", 4, 7, CHINESE)],
  ["174128542031f4ad7ceb6c799e8e5461ec1ca91a72a01402c567e5f6a8b33d8c", hf("33B", 5, 7, CHINESE)],
  ["80e2cfa18994385fa88f03d500017346dfd6dc1e58e957d046af39d9a7e254fa", hf("33B", 6, 7, CHINESE)],
  ["065611608159615ced8d38473ee693129a1a0d872ced0ad8daf09290af7c7061", hf("33B", 7, 7, CHINESE)],
  ["700df0d3013b703a806d2ae7f1bfb8e59814e3d06ae78be0c66368a50059f33d", meta("7B", "consolidated.00.pth")],
  ["745bf4e29a4dd6f411e72976d92b452da1b49168a4f41c951cfcc8051823cf08", meta("13B", "consolidated.00.pth")],
  ["d5ccbcc465c71c0de439a5aeffebe8344c68a519bce70bc7f9f92654ee567085", meta("13B", "consolidated.01.pth")],
  ["e23294a58552d8cdec5b7e8abb87993b97ea6eced4178ff2697c02472539d067", meta("33B", "consolidated.00.pth")],
  ["4e077b7136c7ae2302e954860cf64930458d3076fcde9443f4d0e939e95903ff", meta("33B", "consolidated.01.pth")],
  ["24a87f01028cbd3a12de551dcedb712346c0b5cbdeff1454e0ddf2df9b675378", meta("33B", "consolidated.02.pth")],
  ["1adfcef71420886119544949767f6a56cb6339b4d5fcde755d80fe68b49de93b", meta("33B", "consolidated.03.pth")],
]);
