/**
 * Every bound the tool enforces, in one place, each with the threat it stops.
 * All are checked before the allocation they guard.
 */

/** A safetensors header larger than this is refused (the reference
 * implementation's cap): a forged length must not make us allocate gigabytes. */
export const MAX_SAFETENSORS_HEADER_BYTES = 100_000_000;

/** JSON nesting deeper than this is refused before `JSON.parse`, which would
 * otherwise overflow the stack on `[[[[...` (a crash, not an error). */
export const MAX_JSON_DEPTH = 64;

/** Bytes of tensor data moved per read: memory is bounded by a small multiple
 * of this, never by tensor or model size. */
export const CHUNK_BYTES = 4 * 1024 * 1024;

/** A model index (model.safetensors.index.json) or config file larger than this
 * is refused: these are small JSON files, a huge one is an attack or a mistake. */
export const MAX_INDEX_BYTES = 64 * 1024 * 1024;

/** delta.json holds headers and hashes of every tensor: large for 70B models but
 * never near this. */
export const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;

/** Pickle streams of a state dict are small (metadata only; tensor bytes live
 * in separate zip entries). A larger data.pkl is refused before it is read. */
export const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

/** Pickle memo / stack entries: bounds the unpickler's memory on hostile input. */
export const MAX_PICKLE_STACK = 10_000_000;

/** Tensor rank: real models use <= 5 dimensions; a huge rank is a forged header. */
export const MAX_RANK = 64;

/** Entries in a PyTorch checkpoint's zip: one per storage plus a few; a forged
 * count must not make us allocate or loop without end. */
export const MAX_ZIP_ENTRIES = 1_000_000;

/** A zip central directory is ~100 bytes per entry; a larger one is refused
 * before it is read. */
export const MAX_ZIP_DIRECTORY_BYTES = 128 * 1024 * 1024;

/** Bytes of one pickled integer (LONG1/LONG4): shapes and offsets need 8; a
 * huge one would make BigInt parsing quadratic. */
export const MAX_PICKLE_LONG_BYTES = 64;

/** Entries in one Hub repo listing: a hostile or broken server must not make
 * us collect an endless tree. Real model repos have tens of files. */
export const MAX_HUB_LISTING_ENTRIES = 100_000;

/** Simultaneous HTTP connections of one download: a huge count from a flag
 * would open thousands of sockets against the Hub and get us rate-limited. */
export const MAX_DOWNLOAD_CONNECTIONS = 64;

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
