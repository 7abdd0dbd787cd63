/**
 * Every bound the tool enforces, in one place, each with the threat it stops.
 * All are checked before the allocation they guard.
 */

/** A safetensors header larger than this is refused before it is read.
 * Lower than the reference implementation's 100 MB on purpose: the header is
 * read whole, decoded to a string (up to two bytes a character) and kept
 * for the manifest, so a valid 99 MB header cost 465 MB to inspect; at 25 MB
 * the worst costs under 190 MB. 25 MB is the cap of Hugging Face's own JS
 * reader (huggingface.js `parse-safetensors-metadata`, MAX_HEADER_LENGTH),
 * which the Hub uses on every safetensors file, and a header needs about
 * 150 bytes a tensor: MAX_TENSORS_PER_FILE tensors take about 1.2 MB. */
export const MAX_SAFETENSORS_HEADER_BYTES = 25_000_000;

/** Tensors in one weight file (safetensors header or PyTorch state dict).
 * Each costs the tools several KB (header entry, reader and model tables,
 * pickle objects, manifest and report rows: make-delta on one file of 16,384
 * tensors peaked at 232 MB), so the count must be bounded for memory to be;
 * a 21 MB header of 360,000 zero-size tensors took 530 MB. Real files hold
 * under 2,000 (a LLaMA-70B shard a few hundred; MoE models reach tens of
 * thousands per model, but sharded, a few thousand a file at most). The
 * writer refuses to write more, so nothing this tool writes is refused. */
export const MAX_TENSORS_PER_FILE = 8_192;

/** `__metadata__` entries in one safetensors header. Real files carry a
 * handful ("format": "pt"), training tools a few hundred at most; 6.6 million
 * tiny entries (98 MB) took 2.7 GB to read and report. */
export const MAX_METADATA_ENTRIES = 4_096;

/** JSON nesting deeper than this is refused before `JSON.parse`, which would
 * otherwise overflow the stack on `[[[[...` (a crash, not an error). */
export const MAX_JSON_DEPTH = 64;

/** Bytes of tensor data moved per read: memory is bounded by a small multiple
 * of this, never by tensor or model size. */
export const CHUNK_BYTES = 4 * 1024 * 1024;

/** A model index (model.safetensors.index.json), config or checksum list
 * larger than this is refused before it is read: these are small JSON or
 * text files (an index needs about 100 bytes a tensor: 9 MB for the
 * 91,000 tensors of DeepSeek-V3), a huge one is an attack or a mistake. An
 * index is read whole and its text kept for delta.json, which has the same
 * cap: a 58 MB index took 320 MB before it was refused. */
export const MAX_INDEX_BYTES = 32 * 1024 * 1024;

/** A checksum list (sha256sum or md5sum form) needs about 100 bytes a file:
 * a model's list is a few KB. It is read whole and split into lines, and an
 * empty line costs far more than its one byte: 33 MB of newlines took
 * 1.2 GB. */
export const MAX_CHECKSUM_LIST_BYTES = 1024 * 1024;

/** delta.json holds about 600 bytes a tensor (two entries with their
 * sha256, and the tensor's line in its file's header): 0.5 MB for LLaMA-70B,
 * 11 MB for an 18,000-tensor mixture of experts (Qwen3-30B-A3B). It is read
 * whole and kept while apply-delta runs, and each header in it is decoded,
 * encoded and checked again as its file is written: a hostile 54 MB one
 * took 280 MB to refuse, a valid delta of one 25 MB header 315 MB to apply.
 * At 16 MB the worst of either stays under 230 MB. make-delta refuses,
 * before any work, a target whose delta.json would be larger (a model of
 * more than about 25,000 tensors, or headers of that size), so everything
 * it makes can be applied. */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

/** Tensors in one model: entries of an index's weight_map, and of each table
 * of delta.json (tensors, files, dropped names). Each costs a few hundred
 * bytes once read, and a list of short names costs more than its text: an
 * index of 5 million two-character names (64 MB) took 630 MB. The largest
 * open models hold about 91,000 tensors (DeepSeek-V3); dense LLaMA-family
 * models a few hundred to about a thousand. */
export const MAX_TENSORS_PER_MODEL = 131_072;

/** data.pkl is read whole, so its size is memory: a state dict's pickle is
 * metadata only (about 150 bytes a tensor; LLaMA-70B's is a few hundred KB),
 * the tensor bytes live in their own zip entries. A larger one is refused
 * before it is read: a forged pickle carrying a large non-tensor value (a
 * 150 MB bytes object) must not fill the memory budget by its size alone. */
export const MAX_PICKLE_BYTES = 32 * 1024 * 1024;

/** Estimated bytes of objects one pickle may make the unpickler build,
 * counted cumulatively (every value, container, item, stack slot, mark and
 * memo entry; the costs are in unpickler.ts). A pickle is a program: 6 MB of
 * EMPTY_DICT APPEND builds 3 million dicts, about 700 MB. A torch.save state
 * dict is charged about 2.7 KB a tensor (3.6 KB as Parameters): LLaMA-70B's
 * 723 tensors use 3 % of this, MAX_TENSORS_PER_FILE Parameters under half.
 * Spent in full, it costs at most about 80 MB of RSS. */
export const MAX_PICKLE_ALLOCATION_BYTES = 64 * 1024 * 1024;

/** Tensor rank: real models use <= 5 dimensions; a huge rank is a forged header. */
export const MAX_RANK = 64;

/** Entries in a PyTorch checkpoint's zip: torch.save writes one per storage
 * (at most one per tensor) plus a few (data.pkl, version, byteorder, ...),
 * under 2,000 for a real checkpoint file; this leaves room for a training
 * checkpoint's optimizer storages (several per parameter) too. Each entry
 * costs a few hundred bytes to list: 500,000 empty entries (a 54 MB file)
 * took 259 MB. */
export const MAX_ZIP_ENTRIES = 65_536;

/** The zip central directory is read whole. torch.save writes about 70 bytes
 * an entry (100 with ZIP64 fields), so MAX_ZIP_ENTRIES fit in a quarter of
 * this; a larger one is refused before it is read. */
export const MAX_ZIP_DIRECTORY_BYTES = 16 * 1024 * 1024;

/** Bytes of one pickled integer (LONG1/LONG4): shapes and offsets need 8; a
 * huge one would make BigInt parsing quadratic. */
export const MAX_PICKLE_LONG_BYTES = 64;

/** Entries in one Hub repo listing: a hostile or broken server must not make
 * us collect an endless tree. Real model repos have tens of files. */
export const MAX_HUB_LISTING_ENTRIES = 100_000;

/** Simultaneous HTTP connections of one download: a huge count from a flag
 * would open thousands of sockets against the Hub and get us rate-limited. */
export const MAX_DOWNLOAD_CONNECTIONS = 64;

/** Connections a download opens by default: a single connection to the Hub's CDN is capped far below most links, and 16 fill a 400 MB/s link capped at 40 MB/s per connection with room to spare. */
export const DEFAULT_DOWNLOAD_CONNECTIONS = 16;

/** Files uploaded to the Hub at once: one upload rarely fills a link (S3
 * paces each connection), and a few more overlap their requests' round trips;
 * many more would only compete for the same link. */
export const UPLOAD_FILES_AT_ONCE = 4;

/** Parts of one multipart LFS upload sent at once (each streams from disk, so
 * memory does not grow with the part size). */
export const UPLOAD_PARTS_AT_ONCE = 4;

/** A file the Hub wants inside the commit request (base64 in its body, not
 * through LFS): the Hub asks that only of small text files, so a server that
 * asks it of a large one must not make us read the file into memory. */
export const UPLOAD_INLINE_MAX_BYTES = 64 * 1024 * 1024;

/** Files hashed for an upload on the hash workers from this size on (smaller
 * ones on the calling thread: a worker round trip costs more than the hash). */
export const UPLOAD_HASH_ON_WORKERS_BYTES = 16 * 1024 * 1024;

/** The smallest byte range requested from the Hub (except a file's last bytes):
 * smaller ranges would spend more time on requests than on bytes. */
export const MIN_DOWNLOAD_RANGE_BYTES = 256 * 1024;

/** Redirects followed by one download request (the Hub sends one, to its CDN):
 * a redirect loop must end. */
export const MAX_DOWNLOAD_REDIRECTS = 10;

/** The longest `Retry-After` we wait for: a server asking for more is not
 * waited on for hours; the download stops and says to run again later. */
export const MAX_RETRY_AFTER_MS = 5 * 60 * 1000;

/** The sidecar that records a download's finished byte ranges is read before
 * it is trusted: a larger one is damage, not ours (ours hold a few ranges). */
export const MAX_RANGES_SIDECAR_BYTES = 1024 * 1024;

/**
 * A LoRA merge holds both factors of one tensor's update as float32 (rank x
 * (rows + columns) elements): 64 MiB is rank 256 on a 65,536-row embedding.
 * Stops an adapter whose rank or shapes would make that a giant allocation.
 */
export const MAX_LORA_FACTOR_BYTES = 64 * 1024 * 1024;

/** The non-tensor bytes of one .bin checkpoint make-delta records as its
 * skeleton (zip headers, the pickle, version and byteorder records): a real
 * shard's are a few hundred bytes a tensor, so this is far beyond any
 * release; a checkpoint with more is not recorded. */
export const MAX_SKELETON_BYTES = 4 * 1024 * 1024;

/** pytorch-checkpoints.json, the delta's record of a release's .bin
 * skeletons, is read whole: a real release's is a few hundred KB. */
export const MAX_CHECKPOINTS_FILE_BYTES = 32 * 1024 * 1024;

/** An EasyLM (flax msgpack) record's key path: EasyLM's are a handful of
 * short names (transformer/h/0/attention/wq/kernel); more, or longer, is a
 * forged header. */
export const MAX_EASYLM_KEY_PARTS = 32;
export const MAX_EASYLM_KEY_PART_BYTES = 256;

/** A SentencePiece tokenizer.model is read whole to count its pieces:
 * LLaMA's is 500 KB, Chinese-LLaMA-Alpaca's grown one 760 KB. */
export const MAX_SENTENCEPIECE_MODEL_BYTES = 64 * 1024 * 1024;
