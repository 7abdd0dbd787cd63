/**
 * The checksum lists publishers of byte-codec releases printed on their
 * model cards and READMEs, copied digit for digit, each with where it was
 * printed. Pure data and a matcher: nothing here reads a file.
 *
 * A list is picked only on evidence that names the release: the delta's Hub
 * repo id (or its directory's name, as `git clone` or the Hugging Face cache
 * names it), or the sha256 of a weight file carried in an .enc file's name.
 * Small plain files (added_tokens.json, config.json) are not evidence:
 * sibling releases share them (OA's sft-6, sft-7 and rlhf-2 ship the same
 * added tokens), and the wrong list would refuse a good model.
 */
import type { HashAlgorithm } from "../../hash/hash-pool.js";
import { namesRepo, type ReleaseEvidence } from "../conventions/release-evidence.js";

export interface PublishedList {
  /** The release, as its publisher names it. */
  release: string;
  /** Hub repos (org/name) that publish this release's payload, any revision. */
  repos: readonly string[];
  /** Where the digests were printed, for the summary: "the md5 list on the model card of ...". */
  printedIn: string;
  algorithm: HashAlgorithm;
  /** Digest of each output file, by its path in the recovered model. */
  outputs: Readonly<Record<string, string>>;
  /** Digest of each file of the base conversion, when the publisher listed them (XOR releases). */
  base?: Readonly<Record<string, string>>;
  /** How the publisher says the base must be made: the wrong-base message repeats it. */
  baseHint?: string;
  /** Digest of each published payload file (point-alpaca lists its .enc files): names a damaged download. */
  payload?: Readonly<Record<string, string>>;
  /** sha256 of weight outputs as the .enc names carry them: evidence that a delta is this release. */
  fingerprints?: Readonly<Record<string, string>>;
}

/** A key file the .enc releases are made with. */
export interface KnownKey {
  name: string;
  size: number;
  sha256: string;
}

/**
 * Meta's LLaMA-7B `consolidated.00.pth`, the key of point-alpaca and of the
 * BELLE and lawyer-llama releases that copy its scripts. sha256 as listed by
 * Chinese-LLaMA-Alpaca (SHA256.md) and the Pygmalion docs; the size as Meta's
 * download served it (Content-Length) and as the IPFS mirrors list it.
 */
export const META_LLAMA_7B_KEY: KnownKey = {
  name: "Meta's LLaMA-7B consolidated.00.pth",
  size: 13_476_939_516,
  sha256: "700df0d3013b703a806d2ae7f1bfb8e59814e3d06ae78be0c66368a50059f33d",
};

const OA_BASE_HINT =
  "Meta's LLaMA-30B converted with transformers commit d04ec99bec8a0b432fc03ed60cea9a1a20ebaf3c, torch 1.13.1, accelerate 0.18.0, sentencepiece 0.1.98, protobuf 3.20.1, Python 3.10 (see the model card)";

const PYGMALION_BASE_HINT =
  "Meta's LLaMA converted to Hugging Face format as the Pygmalion docs describe (transformers commit d04ec99b..., torch 1.13.1; decapoda-research's conversion does not work)";

export const PUBLISHED_LISTS: readonly PublishedList[] = [
  {
    release: "Open-Assistant oasst-sft-6-llama-30b",
    repos: ["OpenAssistant/oasst-sft-6-llama-30b-xor"],
    printedIn: "the md5 list on the model card of OpenAssistant/oasst-sft-6-llama-30b-xor",
    algorithm: "md5",
    outputs: {
      "pytorch_model-00001-of-00007.bin": "ff6e4cf43ddf02fb5d3960f850af1220",
      "pytorch_model-00002-of-00007.bin": "ae48c4c68e4e171d502dd0896aa19a84",
      "pytorch_model-00003-of-00007.bin": "659fcb7598dcd22e7d008189ecb2bb42",
      "pytorch_model-00004-of-00007.bin": "f7aefb4c63be2ac512fd905b45295235",
      "pytorch_model-00005-of-00007.bin": "740c324ae65b1ec25976643cda79e479",
      "pytorch_model-00006-of-00007.bin": "369df2f0e38bda0d9629a12a77c10dfc",
      "pytorch_model-00007-of-00007.bin": "970e99665d66ba3fad6fdf9b4910acc5",
      "pytorch_model.bin.index.json": "76d47e4f51a8df1d703c6f594981fcab",
      "config.json": "cc9dbf56b68b68a585cc7367696e06a7",
      "generation_config.json": "2917a1cafb895cf57e746cfd7696bfe5",
      "tokenizer.model": "eeec4125e9c7560836b4873b6f8e3025",
      "tokenizer_config.json": "fd9452959d711be29ccf04a97598e8d1",
      "special_tokens_map.json": "785905630a0fe583122a8446a5abe287",
      "added_tokens.json": "27b0dc092f99aa2efaf467b2d8026c3f",
    },
    base: {
      "pytorch_model-00001-of-00007.bin": "9cffb1aeba11b16da84b56abb773d099",
      "pytorch_model-00002-of-00007.bin": "5cfcb78b908ffa02e681cce69dbe4303",
      "pytorch_model-00003-of-00007.bin": "e1dc8c48a65279fb1fbccff14562e6a3",
      "pytorch_model-00004-of-00007.bin": "3eddc6fc02c0172d38727e5826181adb",
      "pytorch_model-00005-of-00007.bin": "92754d6c6f291819ffc3dfcaf470f541",
      "pytorch_model-00006-of-00007.bin": "99762d59efa6b96599e863893cf2da02",
      "pytorch_model-00007-of-00007.bin": "462a2d07f65776f27c0facfa2affb9f9",
      "pytorch_model.bin.index.json": "fecfda4fba7bfd911e187a85db5fa2ef",
      "config.json": "598538f18fed1877b41f77de034c0c8a",
      "generation_config.json": "aee09e21813368c49baaece120125ae3",
      "tokenizer.model": "eeec4125e9c7560836b4873b6f8e3025",
      "tokenizer.json": "fdb311c39b8659a5d5c1991339bafc09",
      "tokenizer_config.json": "edd1a5897748864768b1fab645b31491",
      "special_tokens_map.json": "6b2e0a735969660e720c27061ef3f3d3",
    },
    baseHint: OA_BASE_HINT,
  },
  {
    release: "PygmalionAI Pygmalion-7B",
    repos: ["PygmalionAI/pygmalion-7b"],
    printedIn: "the sha256 list in the Pygmalion docs (7B file hashes)",
    algorithm: "sha256",
    outputs: {
      "config.json": "e6e95f80203ae4d3925d420e9eeb31fc11fa4d9a49b40d8c6499838365e3f5a8",
      "generation_config.json": "062a37a6d986c38231880f5cce4fa9a0145aeefcf8be9ab23ddf7d600c037aea",
      "pytorch_model-00001-of-00002.bin": "61bcb043c3c4dc4d567ffea91b3074c70d54089eb3f1872b945d7a4e32677edf",
      "pytorch_model-00002-of-00002.bin": "41ebe6971edc8f04b0784ef8ed54216fcd36f8a4d51faf415851c9b824769ba2",
      "pytorch_model.bin.index.json": "aca3c1facc89d12311a667c32e85ac86e625990992ea8a189e3b036ba371b931",
      "special_tokens_map.json": "ff3b4a612c4e447acb02d40071bddd989fe0da87eb5b7fe0dbadfc4f74de7531",
      "tokenizer_config.json": "9e7aa7d0f67f207036d981d7bbabfbf4b521c4c089c0280fcc08ef9c732634b5",
      "tokenizer.json": "f9ffc4aede0845ab65324ce5dccb823dca2427f9a0710981e5bc2398d73d8162",
      "tokenizer.model": "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347",
    },
    base: {
      "config.json": "e4c3dea29aefc16c0e63825f9ae097dbf5cb5d7c320843a84257e11be3b452c8",
      "generation_config.json": "fd7ff399e5568cc21a0a8414f43df88ef7c424995b9b97a90563165d2cf79efd",
      "pytorch_model-00001-of-00002.bin": "0087155d6df07106c1d910bfeb6aab1be8e612dfbf2b56ddfb4ccbde7dbd50d0",
      "pytorch_model-00002-of-00002.bin": "461bc5e50200db7813ff99cc0b9316c48ccbd6aaaa31bf8cf7bee0b64bc3eda3",
      "pytorch_model.bin.index.json": "aca3c1facc89d12311a667c32e85ac86e625990992ea8a189e3b036ba371b931",
      "special_tokens_map.json": "ff3b4a612c4e447acb02d40071bddd989fe0da87eb5b7fe0dbadfc4f74de7531",
      "tokenizer_config.json": "380608719f3af6ef2b343e2ed53bf55556678609337e88a14f58cc49177b9e18",
      "tokenizer.json": "f9ffc4aede0845ab65324ce5dccb823dca2427f9a0710981e5bc2398d73d8162",
      "tokenizer.model": "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347",
    },
    baseHint: `${PYGMALION_BASE_HINT.replace("Meta's LLaMA", "Meta's LLaMA-7B")}`,
  },
  {
    release: "PygmalionAI Metharme-13B",
    repos: ["PygmalionAI/metharme-13b"],
    printedIn: "the sha256 list in the Pygmalion docs (13B file hashes)",
    algorithm: "sha256",
    outputs: {
      "config.json": "be2c276865d1b0759257c0934275f05e02ee520657c2d8ebe3f2a2db1562949a",
      "generation_config.json": "a23652fc622a27b8863c39f524707796967095b2a85f334561b11422f71445a2",
      "pytorch_model-00001-of-00003.bin": "07727e130b7e4ec66162920b4e090554e6c58e87d25b433ab8123eb3a55fd5e7",
      "pytorch_model-00002-of-00003.bin": "26b6f7e020c94347280d8952b054275fe2293267f9a0e99e1c2bf4df724d99d9",
      "pytorch_model-00003-of-00003.bin": "5d00548d2c28ced08ec7b4123749f20e9ca4af2a821724f9ec47a1c5cf0f66d4",
      "pytorch_model.bin.index.json": "72e91e29282dae48ea5562fcf4d6ca0d5a9c2a30ebc8d67174a19e192552a20b",
      "tokenizer_config.json": "bd87e244d21d45c358e5d822aeb2efd4e4d60127e43b648ed3efe7823fd35060",
      "tokenizer.json": "f9ffc4aede0845ab65324ce5dccb823dca2427f9a0710981e5bc2398d73d8162",
      "tokenizer.model": "68147850c080987172d24ad27a9ba2c65c71b46e248e8ee0f0c4eda90e2ca558",
    },
    base: {
      "config.json": "ad440bbb8f4af8f499a905f13b073ce3abbc3d4c43d5570ba2583eb296b74727",
      "generation_config.json": "fd7ff399e5568cc21a0a8414f43df88ef7c424995b9b97a90563165d2cf79efd",
      "pytorch_model-00001-of-00003.bin": "dd20cdee2637408c6ab88c13f5c27d153bacd0e99f2d55f6a66fbd0269944436",
      "pytorch_model-00002-of-00003.bin": "1aba886c5f28d2e2e9b04ab3c4f5bc250c6b06efc1baa3f557677b3097f70e6a",
      "pytorch_model-00003-of-00003.bin": "eac58861ca5f3749c819676d908b906d3df38046c09efe055fe78d7678b718e7",
      "pytorch_model.bin.index.json": "92c31ad5e853e9a6660e248871f9bd0cd273518de7ec12ca893e1b1078c10898",
      "tokenizer_config.json": "380608719f3af6ef2b343e2ed53bf55556678609337e88a14f58cc49177b9e18",
      "tokenizer.json": "f9ffc4aede0845ab65324ce5dccb823dca2427f9a0710981e5bc2398d73d8162",
      "tokenizer.model": "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347",
    },
    baseHint: `${PYGMALION_BASE_HINT.replace("Meta's LLaMA", "Meta's LLaMA-13B")}`,
  },
  {
    release: "point-alpaca 7B",
    // Published as files on the publisher's own storage (filelist.txt), not on the Hub.
    repos: [],
    printedIn: "the md5 list in pointnetwork/point-alpaca's README",
    algorithm: "md5",
    outputs: {
      "added_tokens.json": "880c59f7618832454595e9820960c360",
      "config.json": "d39ed682be60de38e12c5d1974c45620",
      "generation_config.json": "5300908d1f82b0bc7a4bc79ea00dad66",
      "pytorch_model-00001-of-00003.bin": "5d17f8837f9f15538acd65b7d37add2c",
      "pytorch_model-00002-of-00003.bin": "834b0748527482d60236bc1ec0c71750",
      "pytorch_model-00003-of-00003.bin": "03dda8d1057b06632fecf399020353b4",
      "pytorch_model.bin.index.json": "82559775d42e04199b5a8be8df974b36",
      "special_tokens_map.json": "40df8792c753f0d3f5786829efdd2954",
      "tokenizer.model": "eeec4125e9c7560836b4873b6f8e3025",
      "tokenizer_config.json": "f2da7d9c67a3b7d2e60a17c540055b85",
      "trainer_state.json": "883795093c1f18baa9b111880b800bf1",
      "training_args.bin": "f07e553d22ebe37908bc996953f1bb11",
    },
    payload: {
      "added_tokens.json.75e3ca5df2973756aa612cb17246ef6020a68ff8d94671508987d373642f7a36.enc": "4b8622230b59b3f3bcad791c8c1bae51",
      "config.json.caf9cac32580e31af8254f66c5a070741d70b15a651721748189180325b7d5a8.enc": "876376085d79041818bb7a41bced7819",
      "generation_config.json.c5c8961ed243834883fb4e45e8850d3873d6100fde97817f59d275a90eba269d.enc": "44b1feec4c0d1b7c87da24b81c8b8b9e",
      "pytorch_model-00001-of-00003.bin.90d2ab95a32aeb9362814d8b86db2af5454baab8ea3aa8230c271d6962abb9db.enc": "d127aabb6ad5375bfa97c6ac529c166d",
      "pytorch_model-00002-of-00003.bin.f3c10a4f5c8beafc6667d34557b64ba479e4dde6ef10672287857b329b7e3229.enc": "e4b12501e99cf6a30a244af20f5c20ec",
      "pytorch_model-00003-of-00003.bin.72bf4c96aa6b0c7b56b0336791960da9c75de324ea1131ea4bfc20fde41115c8.enc": "d212294c06feeb0f14672b68417dbc9e",
      "pytorch_model.bin.index.json.07ca8edea996b6c3274395fdb2b6c9108f2ffdd610ae55e35c126c21a9d535b1.enc": "e813854dede95a03e5f5b459c7fb32b2",
      "special_tokens_map.json.4ad09c72922c015ba04f09eabebe38fb34ecb721ca712922c62038eaf2d0bc61.enc": "62503bbf4e91f2b50bf9834757d555d3",
      "tokenizer.model.9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347.enc": "39ec1b33fbf9a0934a8ae0f9a24c7163",
      "tokenizer_config.json.a5f5efb2240276709a923b1404e08d93cc896fd1bd31fbe173e1e2789ea210ef.enc": "2c34a03919b6b2b299ad6f77713d0ba0",
      "trainer_state.json.43964ae247e74f4055fe1cf99a7a16efc3114402a1cd918b3cd9e2ebf2858ca9.enc": "560ecf526666cbd485b81f0f16bb9972",
      "training_args.bin.02f8c3ba14e3c48c05f76880975d7385c878b0e5a0863e352c82f331150d2bd4.enc": "fe8b25ba7c8dd66d57ce1d3d60f13abd",
    },
    // The shards' sha256, as the .enc names in the README and filelist.txt carry them.
    fingerprints: {
      "pytorch_model-00001-of-00003.bin": "90d2ab95a32aeb9362814d8b86db2af5454baab8ea3aa8230c271d6962abb9db",
      "pytorch_model-00002-of-00003.bin": "f3c10a4f5c8beafc6667d34557b64ba479e4dde6ef10672287857b329b7e3229",
      "pytorch_model-00003-of-00003.bin": "72bf4c96aa6b0c7b56b0336791960da9c75de324ea1131ea4bfc20fde41115c8",
    },
  },
];

export interface MatchedList {
  list: PublishedList;
  /** How it was picked, in words for the summary. */
  by: string;
}

/** The published list that `evidence` names, if any. */
export function findPublishedList(evidence: ReleaseEvidence, lists: readonly PublishedList[] = PUBLISHED_LISTS): MatchedList | undefined {
  for (const list of lists) {
    for (const r of list.repos) {
      const by = namesRepo(evidence, r);
      if (by !== undefined) return { list, by };
    }
    for (const [path, sha256] of Object.entries(list.fingerprints ?? {})) {
      if (evidence.sha256?.get(path) === sha256) return { list, by: `the sha256 of ${path} in its .enc file's name` };
    }
  }
  return undefined;
}
