/**
 * The real safetensors files written by Hugging Face's serializer, kept
 * outside the repository (../shared/realdata), with the facts their
 * PROVENANCE.md records for each: size, sha256, header length, tensor count,
 * dtypes, metadata and the first tensor in file order.
 */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const REALDATA = resolve(REPO_ROOT, "../shared/realdata");
export const hasRealdata = existsSync(join(REALDATA, "PROVENANCE.md"));

export function realPath(rel: string): string {
  return join(REALDATA, rel);
}

export interface RealFile {
  path: string;
  size: number;
  sha256: string;
  headerLength: number;
  tensors: number;
  dtypes: Record<string, number>;
  metadata: Record<string, string> | null;
  first: { name: string; dtype: string; shape: number[] };
}

export const REAL_FILES: RealFile[] = [
  { path: "tiny-llama-bf16/model.safetensors", size: 318168, sha256: "4283865dec19eb74bec24f08a991378ec58b36aced0cac486d3bb1e28ccb2bbd", headerLength: 2128, tensors: 21, dtypes: {BF16: 21}, metadata: null, first: { name: "lm_head.weight", dtype: "BF16", shape: [512, 64] } },
  { path: "tiny-llama-bf16/sharded/model-00001-of-00002.safetensors", size: 176744, sha256: "8dcfce13ded72d84680985fbcd0979f921cb01a640f899118f77b392f5fa7d2c", headerLength: 480, tensors: 5, dtypes: {BF16: 5}, metadata: null, first: { name: "lm_head.weight", dtype: "BF16", shape: [512, 64] } },
  { path: "tiny-llama-bf16/sharded/model-00002-of-00002.safetensors", size: 141416, sha256: "8f3e9b5240d211746becb5356968ca2bd3e7e51329ed48207a83f1976c24f32d", headerLength: 1632, tensors: 16, dtypes: {BF16: 16}, metadata: null, first: { name: "model.layers.0.mlp.up_proj.weight", dtype: "BF16", shape: [176, 64] } },
  { path: "tiny-qwen2-bf16/model.safetensors", size: 278488, sha256: "25eaf9b78523fff10649c30ab35baf2d9ee1373a01fd6a323a067de17b3c6e7f", headerLength: 2640, tensors: 26, dtypes: {BF16: 26}, metadata: null, first: { name: "model.embed_tokens.weight", dtype: "BF16", shape: [512, 64] } },
  { path: "torchtune-gemma-f16/gemma_hf_checkpoint.safetensors", size: 133072, sha256: "931ab45b7e962cc66afb330e6448260500b881397f13a3f9f45054854fb26af0", headerLength: 1096, tensors: 11, dtypes: {F16: 11}, metadata: null, first: { name: "model.embed_tokens.weight", dtype: "F16", shape: [100, 64] } },
  { path: "safetensors-jl-dtypes/non_sharded/model.safetensors", size: 6841, sha256: "efc377724e5d7f424e73cd6a64a6d9c9808945cfb95992cb692b012a82724374", headerLength: 2528, tensors: 36, dtypes: {BF16: 3, BOOL: 3, F16: 3, F32: 3, F64: 3, F8_E4M3: 3, F8_E5M2: 3, I16: 3, I32: 3, I64: 3, I8: 3, U8: 3}, metadata: null, first: { name: "int64_3", dtype: "I64", shape: [3] } },
  { path: "safetensors-jl-dtypes/non_sharded/model.with_metadata.safetensors", size: 6889, sha256: "a1e35851164f0f45011b677f0b8dc0be3f3fe7f842c538d7139bc801d6a52971", headerLength: 2576, tensors: 36, dtypes: {BF16: 3, BOOL: 3, F16: 3, F32: 3, F64: 3, F8_E4M3: 3, F8_E5M2: 3, I16: 3, I32: 3, I64: 3, I8: 3, U8: 3}, metadata: {"test": "metadata", "version": "2.2"}, first: { name: "int64_3", dtype: "I64", shape: [3] } },
  { path: "safetensors-jl-dtypes/non_sharded/model.numpy.safetensors", size: 5661, sha256: "f20154d5d1657697f814461358cf0812ba96e9907880b3379128ebebaf4c15cc", headerLength: 1840, tensors: 27, dtypes: {BOOL: 3, F16: 3, F32: 3, F64: 3, I16: 3, I32: 3, I64: 3, I8: 3, U8: 3}, metadata: null, first: { name: "int64_3", dtype: "I64", shape: [3] } },
  { path: "safetensors-jl-dtypes/sharded/model-00001-of-00006.safetensors", size: 2048, sha256: "85770d682b1580553b5ad7d0954d33a162cbe70a10b8ad6f719e5c304fac2d13", headerLength: 1272, tensors: 19, dtypes: {BOOL: 2, F16: 3, F32: 2, F64: 2, I16: 2, I32: 2, I64: 2, I8: 2, U8: 2}, metadata: {"format": "pt"}, first: { name: "int64_3", dtype: "I64", shape: [3] } },
  { path: "safetensors-jl-dtypes/sharded/model-00002-of-00006.safetensors", size: 532, sha256: "6e9053708e92ffdc0151e81efc0c3621430ba4900040b37f2c0cb1f534006d69", headerLength: 104, tensors: 1, dtypes: {F32: 1}, metadata: {"format": "pt"}, first: { name: "float32_357", dtype: "F32", shape: [3, 5, 7] } },
  { path: "safetensors-jl-dtypes/sharded/model-00003-of-00006.safetensors", size: 1129, sha256: "954877392543d799ed0aafd4115817356664b03e3074c88d29ad1648f7c6c3ff", headerLength: 176, tensors: 2, dtypes: {BOOL: 1, F64: 1}, metadata: {"format": "pt"}, first: { name: "float64_357", dtype: "F64", shape: [3, 5, 7] } },
  { path: "safetensors-jl-dtypes/sharded/model-00004-of-00006.safetensors", size: 1152, sha256: "a0747d9bd2ac942a2681ef1933d5936c1f18cbe8b86d9951b1cc77ce28654675", headerLength: 304, tensors: 4, dtypes: {I16: 1, I32: 1, I8: 1, U8: 1}, metadata: {"format": "pt"}, first: { name: "int32_357", dtype: "I32", shape: [3, 5, 7] } },
  { path: "safetensors-jl-dtypes/sharded/model-00005-of-00006.safetensors", size: 1464, sha256: "5eaa9d263a402862107335e7606f224c9fe3a66124452ee879248575be3f7f0c", headerLength: 544, tensors: 7, dtypes: {BF16: 2, F8_E4M3: 2, F8_E5M2: 2, I64: 1}, metadata: {"format": "pt"}, first: { name: "int64_357", dtype: "I64", shape: [3, 5, 7] } },
  { path: "safetensors-jl-dtypes/sharded/model-00006-of-00006.safetensors", size: 692, sha256: "e036da5100d340d9b2ae0fcb949dde7ac830d2219e09aabccf507dadf5c9c34f", headerLength: 264, tensors: 3, dtypes: {BF16: 1, F8_E4M3: 1, F8_E5M2: 1}, metadata: {"format": "pt"}, first: { name: "bfloat16_357", dtype: "BF16", shape: [3, 5, 7] } },
  { path: "candle-encodec/jfk-codes.safetensors", size: 13328, sha256: "858546558211e073f8389ce674c89422fd30b675f406e82eac395e577e8d3480", headerLength: 72, tensors: 1, dtypes: {I64: 1}, metadata: null, first: { name: "codes", dtype: "I64", shape: [1, 2, 828] } },
  { path: "coffeevampir3-mlp/model.safetensors", size: 2048, sha256: "810df85aba0cd4e8f5666f626bf43f17168de90d57be9491ba0574c2ba5df943", headerLength: 320, tensors: 4, dtypes: {F32: 4}, metadata: {"version": "1.0", "git_tag": "v1.45"}, first: { name: "fc1.bias", dtype: "F32", shape: [20] } },
  { path: "campello-tiny-llama-f32/model.safetensors", size: 3512, sha256: "ad3c279c688c2283f6c2b07b38c9a3bec76e953a0681ad10c9317f27ff90351f", headerLength: 1104, tensors: 12, dtypes: {F32: 12}, metadata: null, first: { name: "lm_head.weight", dtype: "F32", shape: [9, 8] } },
  { path: "campello-tiny-llama-f32/test_tensors.safetensors", size: 343, sha256: "b64b2ca47496412600a258958e169e66ff1e317dce409dd952cda908b2a184bc", headerLength: 288, tensors: 4, dtypes: {F16: 1, F32: 1, I32: 1, U8: 1}, metadata: {"format": "campello_llm_test"}, first: { name: "weight", dtype: "F32", shape: [2, 3] } },
  { path: "peft-lora-gemma2b-f16/adapter_model.safetensors", size: 3695920, sha256: "09b6922131c12c0b9dfa98871ddda4cd4849f9fc1678a5e44905a001aabb999b", headerLength: 9512, tensors: 72, dtypes: {F16: 72}, metadata: {"format": "pt"}, first: { name: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", dtype: "F16", shape: [16, 2048] } },
];

/** First elements of tensors, decoded little-endian (PROVENANCE.md "Reference values"). */
export const REFERENCE_VALUES: { path: string; tensor: string; dtype: string; shape: number[]; first: number[] }[] = [
  { path: "tiny-llama-bf16/model.safetensors", tensor: "model.embed_tokens.weight", dtype: "BF16", shape: [512, 64], first: [-0.0205078125, -0.0021209716796875, 0.029052734375, -0.00640869140625] },
  { path: "tiny-llama-bf16/model.safetensors", tensor: "model.norm.weight", dtype: "BF16", shape: [64], first: [1, 1, 1, 1] },
  { path: "tiny-llama-bf16/model.safetensors", tensor: "lm_head.weight", dtype: "BF16", shape: [512, 64], first: [0.0194091796875, -0.015869140625, -0.00135040283203125, 0.01251220703125] },
  { path: "tiny-qwen2-bf16/model.safetensors", tensor: "model.embed_tokens.weight", dtype: "BF16", shape: [512, 64], first: [0.0167236328125, 0.00116729736328125, 0.000659942626953125, -0.018798828125] },
  { path: "tiny-qwen2-bf16/model.safetensors", tensor: "model.layers.0.self_attn.q_proj.bias", dtype: "BF16", shape: [96], first: [0.298828125, 0.6015625, -0.1015625, -0.52734375] },
  { path: "tiny-qwen2-bf16/model.safetensors", tensor: "model.norm.weight", dtype: "BF16", shape: [64], first: [1, 1, 1, 1] },
  { path: "torchtune-gemma-f16/gemma_hf_checkpoint.safetensors", tensor: "model.embed_tokens.weight", dtype: "F16", shape: [100, 64], first: [0.263427734375, -0.9912109375, -0.21337890625, -0.080810546875] },
  { path: "torchtune-gemma-f16/gemma_hf_checkpoint.safetensors", tensor: "model.norm.weight", dtype: "F16", shape: [64], first: [0.69970703125, -1.357421875, -0.62060546875, 0.41796875] },
  { path: "campello-tiny-llama-f32/model.safetensors", tensor: "model.embed_tokens.weight", dtype: "F32", shape: [9, 8], first: [-0.19782426953315735, -0.07355733215808868, 0.2575850486755371, 0.03879488259553909] },
  { path: "campello-tiny-llama-f32/model.safetensors", tensor: "model.norm.weight", dtype: "F32", shape: [8], first: [1, 1, 1, 1] },
  { path: "campello-tiny-llama-f32/test_tensors.safetensors", tensor: "weight", dtype: "F32", shape: [2, 3], first: [1, 2, 3, 4] },
  { path: "campello-tiny-llama-f32/test_tensors.safetensors", tensor: "bias", dtype: "F16", shape: [2], first: [0.5, -0.5] },
  { path: "campello-tiny-llama-f32/test_tensors.safetensors", tensor: "ids", dtype: "I32", shape: [4], first: [1, 2, 3, 4] },
  { path: "campello-tiny-llama-f32/test_tensors.safetensors", tensor: "flags", dtype: "U8", shape: [3], first: [1, 0, 1] },
  { path: "candle-encodec/jfk-codes.safetensors", tensor: "codes", dtype: "I64", shape: [1, 2, 828], first: [865, 62, 408, 408] },
  { path: "coffeevampir3-mlp/model.safetensors", tensor: "fc1.bias", dtype: "F32", shape: [20], first: [-0.21289686858654022, 0.0528571754693985, -0.24906551837921143, -0.043041668832302094] },
  { path: "safetensors-jl-dtypes/non_sharded/model.numpy.safetensors", tensor: "int64_357", dtype: "I64", shape: [3, 5, 7], first: [0, 1, 2, 3] },
  { path: "safetensors-jl-dtypes/non_sharded/model.numpy.safetensors", tensor: "float64_35", dtype: "F64", shape: [3, 5], first: [0, 1, 2, 3] },
  { path: "safetensors-jl-dtypes/non_sharded/model.numpy.safetensors", tensor: "bool_3", dtype: "BOOL", shape: [3], first: [0, 1, 0] },
  { path: "safetensors-jl-dtypes/non_sharded/model.safetensors", tensor: "bfloat16_3", dtype: "BF16", shape: [3], first: [-0.82421875, -0.373046875, 0.84375] },
  { path: "safetensors-jl-dtypes/non_sharded/model.safetensors", tensor: "int64_3", dtype: "I64", shape: [3], first: [64, 64, 30] },
];
