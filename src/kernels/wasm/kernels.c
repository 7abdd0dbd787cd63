/*
 * Element-wise kernels in WebAssembly SIMD (128-bit): the fast path behind
 * src/kernels/fast.ts. Built by scripts/build-kernels-wasm.mjs into
 * src/kernels/wasm/kernels-wasm.ts (committed, so nothing here needs clang
 * except rebuilding). The scalar oracle is src/kernels/reference.ts; tests
 * check these against it and against PyTorch's outputs.
 *
 * JS copies a tile of each input into the static regions below, calls one
 * function with the element count, and copies the result out. Regions hold
 * whole vectors and a tile never exceeds one, so loops may run whole vectors
 * past n: the extra lanes hold garbage nobody reads.
 *
 * Fine-tune deltas are full of half subnormals. No float operation here
 * ever takes or makes a float32 subnormal: x86 handles those in slow
 * microcode (no flush-to-zero in WebAssembly), at up to a hundred times the
 * cost of a normal operation.
 */
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
#define TILE_BYTES (128 * 1024)

typedef v128_t V;

static uint8_t region_a[TILE_BYTES] __attribute__((aligned(16)));
static uint8_t region_b[TILE_BYTES] __attribute__((aligned(16)));
static uint8_t region_out[2 * TILE_BYTES] __attribute__((aligned(16)));
static uint32_t region_index[TILE_BYTES] __attribute__((aligned(16)));
static uint8_t region_xor[TILE_BYTES] __attribute__((aligned(16)));

EXPORT(tile_bytes) uint32_t tile_bytes(void) { return TILE_BYTES; }
EXPORT(a_ptr) uint8_t *a_ptr(void) { return region_a; }
EXPORT(b_ptr) uint8_t *b_ptr(void) { return region_b; }
EXPORT(out_ptr) uint8_t *out_ptr(void) { return region_out; }
EXPORT(index_ptr) uint32_t *index_ptr(void) { return region_index; }
EXPORT(xor_ptr) uint8_t *xor_ptr(void) { return region_xor; }

/* ---- half <-> float ------------------------------------------------------ */

/* Every exported function takes `zero` (always 0, from JS) and builds its
 * constants as C ^ zero. LLVM cannot see through that, so it keeps the signed
 * compares and conversions written here instead of "proving" values
 * non-negative and switching to unsigned forms, which WebAssembly SIMD on x64
 * emulates with several instructions (or, for conversions, scalarizes). */
#define K(c) wasm_i32x4_splat((int32_t)(c) ^ zero)
#define K16(c) wasm_i16x8_splat((int16_t)((c) ^ zero))

/* Four halves (sign-extended in i32 lanes) -> float32 bits, exact. A NaN keeps
 * sign and payload and comes out quiet when `quiet` (torch's .float(), x86 F16C). */
static inline V half_to_float(V h, int quiet, int32_t zero) {
  V magnitude = wasm_v128_and(h, K(0x7fff));
  V normal = wasm_i32x4_add(wasm_i32x4_shl(magnitude, 13), K(0x38000000));
  V inf_or_nan = wasm_i32x4_gt(magnitude, K(0x7bff));
  normal = wasm_i32x4_add(normal, wasm_v128_and(inf_or_nan, K(0x38000000)));
  if (quiet) normal = wasm_v128_or(normal, wasm_v128_and(wasm_i32x4_gt(magnitude, K(0x7c00)), K(0x00400000)));
  /* Subnormal halves: mantissa * 2^-24 from an integer, never a subnormal float
   * (x86 handles those in slow microcode, and fine-tune deltas are full of them). */
  V subnormal = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(magnitude), K(0x33800000) /* 2^-24 */);
  V bits = wasm_v128_bitselect(subnormal, normal, wasm_i32x4_lt(magnitude, K(0x0400)));
  return wasm_v128_or(bits, wasm_v128_and(h, K(0x80000000)));
}

/* Four float32 (bits) -> halves in i32 lanes, RNE, overflow to Inf, NaN ->
 * sign|0x7E00 (torch's c10::Half rule). Fabian Giesen's float_to_half_fast3_rtne,
 * with Inf folded into the normal path by clamping. */
static inline V float_to_half(V x, int32_t zero) {
  V magnitude = wasm_v128_and(x, K(0x7fffffff));
  V nan = wasm_v128_and(wasm_i32x4_gt(magnitude, K(0x7f800000)), K(0x0200));
  /* Clamped to 65536 (0x47800000), the normal path below rounds to Inf (0x7C00). */
  V clamped = wasm_i32x4_min(magnitude, K(0x47800000));
  V odd = wasm_v128_and(wasm_u32x4_shr(clamped, 13), K(1));
  V normal = wasm_u32x4_shr(wasm_i32x4_add(wasm_i32x4_add(clamped, K(0xc8000fff)), odd), 13);
  /* Below 2^-14 the half is subnormal: adding 0.5 rounds to a multiple of 2^-24 (RNE). */
  V small = wasm_i32x4_sub(wasm_f32x4_add(magnitude, K(0x3f000000) /* 0.5 */), K(0x3f000000));
  V result = wasm_v128_bitselect(small, normal, wasm_i32x4_lt(magnitude, K(0x38800000)));
  return wasm_v128_or(wasm_v128_or(result, nan), wasm_u32x4_shr(wasm_v128_andnot(x, magnitude), 16));
}

/* Four float32 (bits) -> bfloat16 in i32 lanes, RNE; any NaN -> 0xFFFF (torch's vectorized rule). */
static inline V float_to_bfloat(V x, int32_t zero) {
  V odd = wasm_v128_and(wasm_u32x4_shr(x, 16), K(1));
  V rounded = wasm_u32x4_shr(wasm_i32x4_add(wasm_i32x4_add(x, K(0x7fff)), odd), 16);
  V nan = wasm_i32x4_gt(wasm_v128_and(x, K(0x7fffffff)), K(0x7f800000));
  return wasm_v128_or(rounded, wasm_u32x4_shr(nan, 16));
}

static inline V bfloat_to_float(V h) { return wasm_i32x4_shl(h, 16); }

#define LOW(v) wasm_i32x4_extend_low_i16x8(v)
#define HIGH(v) wasm_i32x4_extend_high_i16x8(v)
/* Results are in 0..0xFFFF, which the unsigned saturating narrow keeps as they are. */
#define PACK(lo, hi) wasm_u16x8_narrow_i32x4(lo, hi)

/* The high halves of the 32-bit lanes of lo and hi, as 8 16-bit lanes. */
#define PACK_HIGH(lo, hi) wasm_i8x16_shuffle(lo, hi, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31)

/* ---- half arithmetic in a scaled float32 domain ---------------------------
 * A half's 15 magnitude bits shifted left by 13 are, as float32 bits, exactly
 * the half's value times 2^-112: normals land on float32 normals, half
 * subnormals on float32 subnormals, with nothing to convert. float32 add and
 * subtract commute with that power-of-two scaling (a result below 2^-14 is a
 * multiple of 2^-24 and exact either way), so rounding the scaled float32
 * result to half precision gives exactly round16(round32(a op b)). Only Inf
 * and NaN (half exponent 31) need their float32 exponent set to all ones.
 * Additions are the only float operations here. A subnormal operand costs
 * them little, but a subnormal result is made in slow microcode on x86: an
 * add of a weight and a delta gives a weight (normal, fast), a subtract of
 * two close weights often gives a value below 2^-14 (subnormal here, up to
 * 3x slower overall on fine-tune data), so subtraction works unscaled. */

/* Eight halves -> two scaled float32x4; `magnitude` is kept for the NaN tests. */
static inline void halves_to_scaled(V h, V *lo, V *hi, V *magnitude, int32_t zero) {
  V m = wasm_v128_and(h, K16(0x7fff));
  V inf_or_nan = wasm_i16x8_gt(m, K16(0x7bff));
  V high = wasm_v128_or(wasm_v128_or(wasm_u16x8_shr(m, 3), wasm_v128_and(inf_or_nan, K16(0x7f80))),
                        wasm_v128_and(h, K16(0x8000)));
  V low = wasm_i16x8_shl(m, 13);
  *lo = wasm_i8x16_shuffle(low, high, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
  *hi = wasm_i8x16_shuffle(low, high, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
  *magnitude = m;
}

/* Magnitude of four scaled float32 -> half bits in 32-bit lanes, RNE; clamped
 * at the scaled Inf (0x0F800000) so that overflow, Inf and NaN give 0x7C00. */
static inline V scaled_magnitude_to_half(V x, int32_t zero) {
  V clamped = wasm_i32x4_min(wasm_v128_and(x, K(0x7fffffff)), K(0x0f800000));
  V odd = wasm_v128_and(wasm_u32x4_shr(clamped, 13), K(1));
  return wasm_u32x4_shr(wasm_i32x4_add(wasm_i32x4_add(clamped, K(0x0fff)), odd), 13);
}

/* One vector (16 bytes) of a op b in the scaled domain. For a NaN half result
 * torch's sign is b's if b is NaN, else a's if a is NaN, else negative (Inf -
 * Inf: x86's default NaN). */
static inline V half_scaled_vector(V a, V b, int subtract, int32_t zero) {
  V a_lo, a_hi, a_magnitude, b_lo, b_hi, b_magnitude;
  halves_to_scaled(a, &a_lo, &a_hi, &a_magnitude, zero);
  halves_to_scaled(b, &b_lo, &b_hi, &b_magnitude, zero);
  V lo = subtract ? wasm_f32x4_sub(a_lo, b_lo) : wasm_f32x4_add(a_lo, b_lo);
  V hi = subtract ? wasm_f32x4_sub(a_hi, b_hi) : wasm_f32x4_add(a_hi, b_hi);
  V halves = wasm_v128_or(PACK(scaled_magnitude_to_half(lo, zero), scaled_magnitude_to_half(hi, zero)),
                          wasm_v128_and(PACK_HIGH(lo, hi), K16(0x8000)));
  V nan = wasm_i16x8_narrow_i32x4(wasm_f32x4_ne(lo, lo), wasm_f32x4_ne(hi, hi)); /* masks: -1 stays -1 */
  V a_nan = wasm_i16x8_gt(a_magnitude, K16(0x7c00));
  V b_nan = wasm_i16x8_gt(b_magnitude, K16(0x7c00));
  V source = wasm_v128_bitselect(b, wasm_v128_bitselect(a, K16(0x8000), a_nan), b_nan);
  V nan_bits = wasm_v128_or(wasm_v128_and(source, K16(0x8000)), K16(0x7e00));
  return wasm_v128_bitselect(nan_bits, halves, nan);
}

/* The same a op b on halves widened to float32 (exact; subnormal halves
 * through an integer conversion, never a subnormal float), rounded to float32
 * and then to half (RNE): round16(round32(a op b)) as in the scaled domain.
 * Every float32 here is 0, Inf, NaN or at least 2^-24 in magnitude (a sum or
 * difference of halves is a multiple of 2^-24), so nothing is subnormal. It
 * costs more instructions than the scaled domain, fewer cycles when results
 * would be subnormal there. */
static inline V half_wide_vector(V a, V b, int subtract, int32_t zero) {
  V a_lo = half_to_float(LOW(a), 0, zero), a_hi = half_to_float(HIGH(a), 0, zero);
  V b_lo = half_to_float(LOW(b), 0, zero), b_hi = half_to_float(HIGH(b), 0, zero);
  V lo = subtract ? wasm_f32x4_sub(a_lo, b_lo) : wasm_f32x4_add(a_lo, b_lo);
  V hi = subtract ? wasm_f32x4_sub(a_hi, b_hi) : wasm_f32x4_add(a_hi, b_hi);
  V halves = PACK(float_to_half(lo, zero), float_to_half(hi, zero));
  V nan = wasm_i16x8_narrow_i32x4(wasm_f32x4_ne(lo, lo), wasm_f32x4_ne(hi, hi)); /* masks: -1 stays -1 */
  V a_nan = wasm_i16x8_gt(wasm_v128_and(a, K16(0x7fff)), K16(0x7c00));
  V b_nan = wasm_i16x8_gt(wasm_v128_and(b, K16(0x7fff)), K16(0x7c00));
  V source = wasm_v128_bitselect(b, wasm_v128_bitselect(a, K16(0x8000), a_nan), b_nan);
  V nan_bits = wasm_v128_or(wasm_v128_and(source, K16(0x8000)), K16(0x7e00));
  return wasm_v128_bitselect(nan_bits, halves, nan);
}

/* The half sign bits of the float32 lanes of lo and hi, as 8 16-bit lanes. */
static inline V float_signs_to_half(V lo, V hi, int32_t zero) {
  return wasm_v128_and(wasm_i16x8_narrow_i32x4(wasm_i32x4_shr(lo, 31), wasm_i32x4_shr(hi, 31)), K16(0x8000));
}

/* Half a + b in the scaled domain (see above), the common case first: no
 * operand Inf, NaN or from 2^15 in magnitude up, so the sum stays within the
 * largest finite half (65504) and is no NaN. Any other vector takes
 * half_scaled_vector. Zeros and subnormals need nothing special here. */
static inline __attribute__((always_inline)) V half_sum(V a, V b, int32_t zero) {
  V largest = wasm_i16x8_max(wasm_v128_and(a, K16(0x7fff)), wasm_v128_and(b, K16(0x7fff)));
  if (wasm_v128_any_true(wasm_i16x8_gt(largest, K16(0x77ff)))) return half_scaled_vector(a, b, 0, zero);
  /* Scaled float32 bits: sign, then the 15 magnitude bits from bit 13 on. */
  V a_high = wasm_v128_and(wasm_i16x8_shr(a, 3), K16(0x8fff)), a_low = wasm_i16x8_shl(a, 13);
  V b_high = wasm_v128_and(wasm_i16x8_shr(b, 3), K16(0x8fff)), b_low = wasm_i16x8_shl(b, 13);
  V lo = wasm_f32x4_add(wasm_i8x16_shuffle(a_low, a_high, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23),
                        wasm_i8x16_shuffle(b_low, b_high, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23));
  V hi = wasm_f32x4_add(wasm_i8x16_shuffle(a_low, a_high, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31),
                        wasm_i8x16_shuffle(b_low, b_high, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31));
  V lo_magnitude = wasm_v128_and(lo, K(0x7fffffff)), hi_magnitude = wasm_v128_and(hi, K(0x7fffffff));
  V lo_half = wasm_u32x4_shr(wasm_i32x4_add(wasm_i32x4_add(lo_magnitude, K(0x0fff)), wasm_v128_and(wasm_u32x4_shr(lo_magnitude, 13), K(1))), 13);
  V hi_half = wasm_u32x4_shr(wasm_i32x4_add(wasm_i32x4_add(hi_magnitude, K(0x0fff)), wasm_v128_and(wasm_u32x4_shr(hi_magnitude, 13), K(1))), 13);
  return wasm_v128_or(PACK(lo_half, hi_half), float_signs_to_half(lo, hi, zero));
}

/* ---- half subtraction, the common case first ------------------------------
 * make-delta subtracts two weights: finite normal halves, nearly always well
 * inside the half range. Eight of those are widened by 16-bit integer steps
 * alone (no conversion, no select) and their differences are checked once
 * per vector; a vector with any other operand (zero, subnormal, |x| >= 2^15,
 * Inf, NaN) takes the general half_wide_vector. Below 2^15 in magnitude the
 * difference of two halves stays within the largest finite half (65504), so
 * nothing on the common path overflows or is NaN. */

/* The lanes where a or b is outside the common case, as a mask: magnitude below
 * 0x0400 (zero, subnormal) or from 0x7800 (2^15, Inf, NaN) up. The magnitude
 * plus 0x7C00 is, as a signed 16-bit lane, below -0x0C00 exactly for the
 * common range [0x0400, 0x7800). */
static inline V uncommon_halves(V a, V b, int32_t zero) {
  V a_key = wasm_i16x8_add(wasm_v128_and(a, K16(0x7fff)), K16(0x7c00));
  V b_key = wasm_i16x8_add(wasm_v128_and(b, K16(0x7fff)), K16(0x7c00));
  return wasm_i16x8_gt(wasm_i16x8_max(a_key, b_key), K16(-0x0c01));
}

/* Eight normal halves -> two float32x4, exact. A normal half's float32 bits
 * are its sign, its exponent + 112 and its mantissa, left-aligned: the high
 * 16 bits are (h >> 3 arithmetic, keeping the sign) & 0x8FFF, plus 0x3800 for
 * the exponent; the low 16 bits are h << 13. Interleaving the two (punpck{l,h}wd)
 * gives the float32 lanes. */
static inline void normal_halves_to_float(V h, V *lo, V *hi, int32_t zero) {
  V high = wasm_i16x8_add(wasm_v128_and(wasm_i16x8_shr(h, 3), K16(0x8fff)), K16(0x3800));
  V low = wasm_i16x8_shl(h, 13);
  *lo = wasm_i8x16_shuffle(low, high, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
  *hi = wasm_i8x16_shuffle(low, high, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
}

/* Magnitude bits (0x7FFFFFFF-masked) of four finite float32 of at most 65504,
 * each 0 or at least 2^-24 and below 2^-14 only as a multiple of 2^-24 (any
 * sum or difference of halves is), -> half magnitude bits, RNE. */
static inline V finite_magnitude_to_half(V magnitude, int32_t zero) {
  V odd = wasm_v128_and(wasm_u32x4_shr(magnitude, 13), K(1));
  V normal = wasm_u32x4_shr(wasm_i32x4_add(wasm_i32x4_add(magnitude, K(0xc8000fff)), odd), 13);
  /* Below 2^-14 the half is subnormal: adding 0.5 gives its bits exactly (see float_to_half). */
  V small = wasm_i32x4_sub(wasm_f32x4_add(magnitude, K(0x3f000000) /* 0.5 */), K(0x3f000000));
  return wasm_v128_bitselect(small, normal, wasm_i32x4_lt(magnitude, K(0x38800000)));
}

/* a - b, as half_wide_vector(a, b, 1) gives it. */
static inline __attribute__((always_inline)) V half_difference(V a, V b, int32_t zero) {
  if (wasm_v128_any_true(uncommon_halves(a, b, zero))) return half_wide_vector(a, b, 1, zero);
  V a_lo, a_hi, b_lo, b_hi;
  normal_halves_to_float(a, &a_lo, &a_hi, zero);
  normal_halves_to_float(b, &b_lo, &b_hi, zero);
  V lo = wasm_f32x4_sub(a_lo, b_lo), hi = wasm_f32x4_sub(a_hi, b_hi);
  V magnitudes = PACK(finite_magnitude_to_half(wasm_v128_and(lo, K(0x7fffffff)), zero),
                      finite_magnitude_to_half(wasm_v128_and(hi, K(0x7fffffff)), zero));
  return wasm_v128_or(magnitudes, float_signs_to_half(lo, hi, zero));
}

/* Magnitude bits of four float32 that are halves, as in
 * finite_magnitude_to_half, -> their half bits; `small` masks those below
 * 2^-14. A normal half's bits are the float32's shifted right by 13, less 112
 * in the exponent. A subnormal one (k * 2^-24) plus 2^-14 is a normal float32
 * whose bits are 2^-14's plus k << 13: shifted the same way that is 0x0400 + k,
 * so those lanes take 0x0400 off. */
static inline V exact_magnitude_to_half(V magnitude, V small, int32_t zero) {
  V raised = wasm_f32x4_add(magnitude, wasm_v128_and(small, K(0x38800000) /* 2^-14 */));
  return wasm_i32x4_add(wasm_i32x4_sub(wasm_u32x4_shr(raised, 13), K(0x1c000)), wasm_v128_and(small, K(-0x400)));
}

/* sub_fixups_f16's common case, eight elements at a time: target and base
 * finite normal halves below 2^15 in magnitude. d = target - base in float32
 * (exact halves, so d is round32 of the true difference, as torch computes
 * it). When d is itself a half (below 2^-14, a multiple of 2^-24 there; or
 * its low 13 bits zero), the delta is d exactly, and apply's round trip is
 * round16(round32(base + d)): where that float32 sum is the target's float32
 * bit for bit (the target is normal, so not -0), the half is the target and
 * there is no fix-up. Returns 0 when every lane is such, with the delta in
 * *delta; otherwise the caller takes the general path for the vector. */
static inline int half_difference_exact(V target, V base, V *delta, int32_t zero) {
  V t_lo, t_hi, b_lo, b_hi;
  normal_halves_to_float(target, &t_lo, &t_hi, zero);
  normal_halves_to_float(base, &b_lo, &b_hi, zero);
  V lo = wasm_f32x4_sub(t_lo, b_lo), hi = wasm_f32x4_sub(t_hi, b_hi);
  V lo_magnitude = wasm_v128_and(lo, K(0x7fffffff)), hi_magnitude = wasm_v128_and(hi, K(0x7fffffff));
  V lo_small = wasm_i32x4_lt(lo_magnitude, K(0x38800000)), hi_small = wasm_i32x4_lt(hi_magnitude, K(0x38800000));
  /* Nonzero bits in a lane of `fails` rule it out: the sum does not give the
   * target back, or d has bits below a half's (and is not small). */
  V fails = wasm_v128_or(wasm_v128_xor(wasm_f32x4_add(b_lo, lo), t_lo), wasm_v128_xor(wasm_f32x4_add(b_hi, hi), t_hi));
  fails = wasm_v128_or(fails, wasm_v128_andnot(wasm_v128_and(lo, K(0x1fff)), lo_small));
  fails = wasm_v128_or(fails, wasm_v128_andnot(wasm_v128_and(hi, K(0x1fff)), hi_small));
  /* The widening above holds only for the common case: the others are ruled out here. */
  fails = wasm_v128_or(fails, uncommon_halves(target, base, zero));
  if (wasm_v128_any_true(fails)) return 1;
  V lo_bits = exact_magnitude_to_half(lo_magnitude, lo_small, zero), hi_bits = exact_magnitude_to_half(hi_magnitude, hi_small, zero);
  *delta = wasm_v128_or(PACK(lo_bits, hi_bits), float_signs_to_half(lo, hi, zero));
  return 0;
}

/* 32-bit lanes whose high half is lane i of x and low half 0: bfloat16 -> float32 bits (punpck{l,h}wd). */
#define BF_LOW(x) wasm_i8x16_shuffle(wasm_i64x2_splat(0), x, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23)
#define BF_HIGH(x) wasm_i8x16_shuffle(wasm_i64x2_splat(0), x, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31)

/* float32 bits + 0x7FFF + (odd bit): the bfloat16 RNE result is the high half. */
static inline V bfloat_round_bias(V x, int32_t zero) {
  return wasm_i32x4_add(wasm_i32x4_add(x, K(0x7fff)), wasm_v128_and(wasm_u32x4_shr(x, 16), K(1)));
}

static inline V bfloat_vector(V a, V b, int subtract, int32_t zero) {
  V a_lo = BF_LOW(a), a_hi = BF_HIGH(a), b_lo = BF_LOW(b), b_hi = BF_HIGH(b);
  V lo = subtract ? wasm_f32x4_sub(a_lo, b_lo) : wasm_f32x4_add(a_lo, b_lo);
  V hi = subtract ? wasm_f32x4_sub(a_hi, b_hi) : wasm_f32x4_add(a_hi, b_hi);
  V rounded = PACK_HIGH(bfloat_round_bias(lo, zero), bfloat_round_bias(hi, zero));
  V nan = wasm_i16x8_narrow_i32x4(wasm_f32x4_ne(lo, lo), wasm_f32x4_ne(hi, hi)); /* masks: -1 stays -1 */
  return wasm_v128_or(rounded, nan); /* any NaN -> 0xFFFF, torch's vectorized rule */
}

/* A NaN result gets the bits torch's x86 code gives: b quieted if b is NaN,
 * else a quieted if a is NaN, else (Inf - Inf) the negative default NaN.
 * WebAssembly leaves NaN bits to the implementation, so they are set here. */
static inline V float_vector(V a, V b, int subtract, int32_t zero) {
  V r = subtract ? wasm_f32x4_sub(a, b) : wasm_f32x4_add(a, b);
  V source = wasm_v128_bitselect(b, wasm_v128_bitselect(a, K(0xffc00000), wasm_f32x4_ne(a, a)), wasm_f32x4_ne(b, b));
  return wasm_v128_bitselect(wasm_v128_or(source, K(0x00400000)), r, wasm_f32x4_ne(r, r));
}

#define K64(c) wasm_i64x2_splat((int64_t)(c) ^ (int64_t)zero)

static inline V double_vector(V a, V b, int subtract, int32_t zero) {
  V r = subtract ? wasm_f64x2_sub(a, b) : wasm_f64x2_add(a, b);
  V source = wasm_v128_bitselect(b, wasm_v128_bitselect(a, K64(0xfff8000000000000ull), wasm_f64x2_ne(a, a)), wasm_f64x2_ne(b, b));
  return wasm_v128_bitselect(wasm_v128_or(source, K64(0x0008000000000000ull)), r, wasm_f64x2_ne(r, r));
}

/* out = a op b over n elements of `bytes` each (whole vectors; padding lanes are garbage). */
#define BINARY(name, bytes, vector, subtract)                                          \
  EXPORT(name) void name(uint32_t n, int32_t zero) {                                 \
    for (uint32_t i = 0; i < n * bytes; i += 16) {                                   \
      V a = wasm_v128_load(region_a + i), b = wasm_v128_load(region_b + i);          \
      wasm_v128_store(region_out + i, vector(a, b, subtract, zero));                 \
    }                                                                                \
  }

/* Four vectors an iteration (clang unrolls): with the common-case test and
 * its branch in every vector, that measured 5-15 % faster than one. */
#define UNROLL _Pragma("clang loop unroll_count(4)")

EXPORT(add_f16) void add_f16(uint32_t n, int32_t zero) {
  UNROLL for (uint32_t i = 0; i < n * 2; i += 16) {
    wasm_v128_store(region_out + i, half_sum(wasm_v128_load(region_a + i), wasm_v128_load(region_b + i), zero));
  }
}

EXPORT(sub_f16) void sub_f16(uint32_t n, int32_t zero) {
  UNROLL for (uint32_t i = 0; i < n * 2; i += 16) {
    wasm_v128_store(region_out + i, half_difference(wasm_v128_load(region_a + i), wasm_v128_load(region_b + i), zero));
  }
}

BINARY(add_bf16, 2, bfloat_vector, 0)
BINARY(sub_bf16, 2, bfloat_vector, 1)
BINARY(add_f32, 4, float_vector, 0)
BINARY(sub_f32, 4, float_vector, 1)
BINARY(add_f64, 8, double_vector, 0)
BINARY(sub_f64, 8, double_vector, 1)

EXPORT(xor_bytes) void xor_bytes(uint32_t n) {
  for (uint32_t i = 0; i < n; i += 16) {
    wasm_v128_store(region_out + i, wasm_v128_xor(wasm_v128_load(region_a + i), wasm_v128_load(region_b + i)));
  }
}

/* Records the elements of the 16-byte block at byte i where `diff` (their XOR) is
 * not zero: index into region_index, the XOR bytes into region_xor. */
static inline uint32_t record_block(V diff, uint32_t i, uint32_t end, uint32_t size, uint32_t count) {
  uint8_t bytes[16];
  wasm_v128_store(bytes, diff);
  for (uint32_t k = 0; k < 16 && i + k < end; k += size) {
    uint32_t differs = 0;
    for (uint32_t j = 0; j < size; j++) differs |= bytes[k + j];
    if (!differs) continue;
    for (uint32_t j = 0; j < size; j++) region_xor[count * size + j] = bytes[k + j];
    region_index[count++] = (i + k) / size;
  }
  return count;
}

/* make-delta's codec `add` in one pass: delta = target - base (to region_out),
 * and every element where base + delta does not give the target back, with
 * (base + delta) XOR target (region_index, region_xor). Returns that count. */
#define SUB_WITH_FIXUPS(name, bytes, vector)                                            \
  EXPORT(name) uint32_t name(uint32_t n, int32_t zero) {                              \
    uint32_t count = 0, end = n * bytes;                                              \
    for (uint32_t i = 0; i < end; i += 16) {                                          \
      V target = wasm_v128_load(region_a + i), base = wasm_v128_load(region_b + i);   \
      V delta = vector(target, base, 1, zero);                                        \
      wasm_v128_store(region_out + i, delta);                                         \
      V diff = wasm_v128_xor(vector(base, delta, 0, zero), target);                   \
      if (wasm_v128_any_true(diff)) count = record_block(diff, i, end, bytes, count); \
    }                                                                                 \
    return count;                                                                     \
  }

/* SUB_WITH_FIXUPS for halves: the common case by half_difference_exact, every
 * other vector as SUB_WITH_FIXUPS computes it (half_difference and half_sum
 * give half_wide_vector's and half_scaled_vector's bits). */
EXPORT(sub_fixups_f16) uint32_t sub_fixups_f16(uint32_t n, int32_t zero) {
  uint32_t count = 0, end = n * 2;
  UNROLL for (uint32_t i = 0; i < end; i += 16) {
    V target = wasm_v128_load(region_a + i), base = wasm_v128_load(region_b + i), delta;
    if (half_difference_exact(target, base, &delta, zero)) {
      delta = half_difference(target, base, zero);
      V diff = wasm_v128_xor(half_sum(base, delta, zero), target);
      if (wasm_v128_any_true(diff)) count = record_block(diff, i, end, 2, count);
    }
    wasm_v128_store(region_out + i, delta);
  }
  return count;
}

SUB_WITH_FIXUPS(sub_fixups_bf16, 2, bfloat_vector)
SUB_WITH_FIXUPS(sub_fixups_f32, 4, float_vector)
SUB_WITH_FIXUPS(sub_fixups_f64, 8, double_vector)

/* ---- conversions (a -> out) ---------------------------------------------- */

EXPORT(f16_to_f32) void f16_to_f32(uint32_t n, int32_t zero) {
  for (uint32_t i = 0; i < n; i += 8) {
    V h = wasm_v128_load(region_a + 2 * i);
    wasm_v128_store(region_out + 4 * i, half_to_float(LOW(h), 1, zero));
    wasm_v128_store(region_out + 4 * i + 16, half_to_float(HIGH(h), 1, zero));
  }
}

EXPORT(bf16_to_f32) void bf16_to_f32(uint32_t n, int32_t zero) {
  (void)zero;
  for (uint32_t i = 0; i < n; i += 8) {
    V h = wasm_v128_load(region_a + 2 * i);
    wasm_v128_store(region_out + 4 * i, bfloat_to_float(LOW(h)));
    wasm_v128_store(region_out + 4 * i + 16, bfloat_to_float(HIGH(h)));
  }
}

EXPORT(f32_to_f16) void f32_to_f16(uint32_t n, int32_t zero) {
  for (uint32_t i = 0; i < n; i += 8) {
    V lo = float_to_half(wasm_v128_load(region_a + 4 * i), zero);
    V hi = float_to_half(wasm_v128_load(region_a + 4 * i + 16), zero);
    wasm_v128_store(region_out + 2 * i, PACK(lo, hi));
  }
}

EXPORT(f32_to_bf16) void f32_to_bf16(uint32_t n, int32_t zero) {
  for (uint32_t i = 0; i < n; i += 8) {
    V lo = float_to_bfloat(wasm_v128_load(region_a + 4 * i), zero);
    V hi = float_to_bfloat(wasm_v128_load(region_a + 4 * i + 16), zero);
    wasm_v128_store(region_out + 2 * i, PACK(lo, hi));
  }
}

/* torch converts half to bfloat16 with the scalar c10::BFloat16 constructor: NaN -> 0x7FC0. */
EXPORT(f16_to_bf16) void f16_to_bf16(uint32_t n, int32_t zero) {
  for (uint32_t i = 0; i < n; i += 8) {
    V h = wasm_v128_load(region_a + 2 * i);
    V lo = float_to_bfloat(half_to_float(LOW(h), 0, zero), zero);
    V hi = float_to_bfloat(half_to_float(HIGH(h), 0, zero), zero);
    V nan = wasm_i16x8_gt(wasm_v128_and(h, K16(0x7fff)), K16(0x7c00));
    wasm_v128_store(region_out + 2 * i, wasm_v128_bitselect(K16(0x7fc0), PACK(lo, hi), nan));
  }
}

EXPORT(bf16_to_f16) void bf16_to_f16(uint32_t n, int32_t zero) {
  for (uint32_t i = 0; i < n; i += 8) {
    V h = wasm_v128_load(region_a + 2 * i);
    V lo = float_to_half(bfloat_to_float(LOW(h)), zero);
    V hi = float_to_half(bfloat_to_float(HIGH(h)), zero);
    wasm_v128_store(region_out + 2 * i, PACK(lo, hi));
  }
}

/* ---- mismatches (a vs b) --------------------------------------------------- */

/* Every element (of `size` bytes) where a and b differ: index into region_index,
 * a XOR b into region_xor; returns the count. Whole 16-byte blocks are compared
 * first: the common case is no difference. */
EXPORT(find_mismatches) uint32_t find_mismatches(uint32_t size, uint32_t nbytes) {
  uint32_t count = 0;
  for (uint32_t i = 0; i < nbytes; i += 16) {
    V diff = wasm_v128_xor(wasm_v128_load(region_a + i), wasm_v128_load(region_b + i));
    if (wasm_v128_any_true(diff)) count = record_block(diff, i, nbytes, size, count);
  }
  return count;
}

/* ==== GGUF Q8_0 quantization ==============================================
 * Blocks of 32 values -> 34 bytes: float16 d, then 32 int8, bit for bit as
 * gguf-py's Q8_0.quantize_blocks computes them in numpy float32 (its
 * reference in TypeScript is quantizeQ8_0 in src/gguf/quantize.ts):
 *   d = max|x| / 127;  id = d == 0 ? 0 : 1 / d;  q = np_roundf(x * id)
 * where np_roundf rounds half away from zero: floor(|v|) + floor(2 * frac),
 * with v's sign. d is stored as float16 by numpy's rule (RNE).
 *
 * Four blocks at a time, so that their maxima, d, id and d's float16 each
 * take one vector. np_roundf is symmetric about zero, so |x| * id is rounded
 * and x's sign put on the quant after: |x * id| is |x| * id exactly.
 *
 * A block whose quants are not ordinary numbers is decided from its max
 * alone, so the arithmetic only ever sees |x * id| <= 127 (plus float32
 * rounding): a NaN anywhere makes d NaN and every quant 0 (a NaN cast to
 * int8), written as the quiet NaN 0x7E00; an infinite max makes d infinite,
 * id 0 and every quant 0 (finite * 0, or NaN); a max so small that 1 / d
 * overflows makes every x * id infinite or NaN, so every quant 0 too.
 *
 * Half magnitudes become float32 cheaply when every max of the four is at
 * least 2^-6: (m + 0x400) << 13 is, as float32 bits, |x| * 2^-111 for every
 * normal half (one more in the exponent than the plain shift), exact, and
 * multiplied by id * 2^111 gives |x| * id rounded once, as numpy does. A
 * half subnormal or zero lands on 2^-15 * (1 + m / 1024) * id < 2^-14 *
 * 8128.01 < 0.4961 instead of its true |x| * id, which is below that too:
 * both round to a quant of 0. No operand is a float32 subnormal either way
 * (see the top of this file). Other F16 blocks widen each half exactly.
 * Input in region_a (float16, bfloat16 or float32), output in region_out;
 * whole groups of four blocks are read and written (see the top of the file).
 */

enum { Q8_F16, Q8_F16_SHIFTED, Q8_BF16, Q8_F32 };

static inline void q8_0_zero_block(uint8_t *out, uint32_t d_half) {
  out[0] = (uint8_t)d_half;
  out[1] = (uint8_t)(d_half >> 8);
  for (int i = 0; i < 32; i++) out[2 + i] = 0;
}

/* np_roundf of four float32 known non-negative and below 128, as int32:
 * floor(y + 0.49999997) (the largest float32 below 0.5) equals it for every
 * float32 in [0, 128] (checked once, natively, for all 2^30 of them: the sum
 * rounds up to the next whole number exactly when frac >= 0.5), and a whole
 * number below 2^23 plus 2^23 holds it in its low mantissa bits. */
static inline V round_half_away_magnitude(V y, int32_t zero) {
  V whole = wasm_f32x4_floor(wasm_f32x4_add(y, K(0x3effffff)));
  return wasm_i32x4_sub(wasm_f32x4_add(whole, K(0x4b000000)), K(0x4b000000));
}

/* Four half magnitudes (finite, in i32 lanes) -> float32, exact, never a float32 subnormal. */
static inline V half_magnitude_to_float(V magnitude, int32_t zero) {
  V normal = wasm_i32x4_add(wasm_i32x4_shl(magnitude, 13), K(0x38000000));
  V subnormal = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(magnitude), K(0x33800000) /* 2^-24 */);
  return wasm_v128_bitselect(subnormal, normal, wasm_i32x4_lt(magnitude, K(0x0400)));
}

/* Quants p*8 .. p*8+7 of a block as int16 magnitudes, |x| * scale rounded;
 * their signs (0 or -1) into *sign. `how` says how |x| becomes float32. */
static inline __attribute__((always_inline)) V q8_0_eight(const uint8_t *block, int p, int how, V scale, V *sign, int32_t zero) {
  V lo, hi;
  if (how == Q8_F32) {
    V x0 = wasm_v128_load(block + 32 * p), x1 = wasm_v128_load(block + 32 * p + 16);
    *sign = wasm_i16x8_narrow_i32x4(wasm_i32x4_shr(x0, 31), wasm_i32x4_shr(x1, 31));
    lo = wasm_v128_and(x0, K(0x7fffffff));
    hi = wasm_v128_and(x1, K(0x7fffffff));
  } else {
    V h = wasm_v128_load(block + 16 * p);
    *sign = wasm_i16x8_shr(h, 15);
    V m = wasm_v128_and(h, K16(0x7fff));
    if (how == Q8_F16_SHIFTED) m = wasm_i16x8_add(m, K16(0x0400));
    lo = wasm_u32x4_extend_low_u16x8(m);
    hi = wasm_u32x4_extend_high_u16x8(m);
    if (how == Q8_F16) {
      /* The mask again, with its constant hidden from LLVM: seeing a widened 16-bit value, it would scalarize the conversion. */
      lo = half_magnitude_to_float(wasm_v128_and(lo, K(0x7fff)), zero);
      hi = half_magnitude_to_float(wasm_v128_and(hi, K(0x7fff)), zero);
    } else {
      int shift = how == Q8_BF16 ? 16 : 13;
      lo = wasm_i32x4_shl(lo, shift);
      hi = wasm_i32x4_shl(hi, shift);
    }
  }
  return wasm_i16x8_narrow_i32x4(round_half_away_magnitude(wasm_f32x4_mul(lo, scale), zero),
                                 round_half_away_magnitude(wasm_f32x4_mul(hi, scale), zero));
}

/* One block: d's float16 bits, then its quants from |x| * scale. Magnitudes
 * are at most 127: the saturating narrows keep them, and -q fits int8. */
static inline __attribute__((always_inline)) void q8_0_block(const uint8_t *block, uint8_t *out, int how, V scale, uint32_t d_half, int32_t zero) {
  V q16[4], s16[4];
  for (int p = 0; p < 4; p++) q16[p] = q8_0_eight(block, p, how, scale, &s16[p], zero);
  out[0] = (uint8_t)d_half;
  out[1] = (uint8_t)(d_half >> 8);
  for (int j = 0; j < 2; j++) {
    V q = wasm_i8x16_narrow_i16x8(q16[2 * j], q16[2 * j + 1]);
    V sign = wasm_i8x16_narrow_i16x8(s16[2 * j], s16[2 * j + 1]);
    wasm_v128_store(out + 2 + 16 * j, wasm_i8x16_sub(wasm_v128_xor(q, sign), sign));
  }
}

/* The largest |x| of each of four blocks (lane k: block k), as float32 bits
 * (for floats without their sign, integer order is value order, and every
 * NaN is above +Inf); for halves, *max16 gets the half magnitudes. */
static inline __attribute__((always_inline)) V q8_0_group_max(const uint8_t *in, int kind, V *max16, int32_t zero) {
  int wide = kind == Q8_F32;
  V m[4];
  for (int k = 0; k < 4; k++) {
    V v[8];
    for (int i = 0; i < 8; i++) {
      if (wide) v[i] = wasm_v128_and(wasm_v128_load(in + 128 * k + 16 * i), K(0x7fffffff));
      else if (i < 4) v[i] = wasm_v128_and(wasm_v128_load(in + 64 * k + 16 * i), K16(0x7fff));
    }
    if (wide) {
      for (int i = 0; i < 4; i++) v[i] = wasm_i32x4_max(v[i], v[i + 4]);
      m[k] = wasm_i32x4_max(wasm_i32x4_max(v[0], v[1]), wasm_i32x4_max(v[2], v[3]));
    } else {
      m[k] = wasm_i16x8_max(wasm_i16x8_max(v[0], v[1]), wasm_i16x8_max(v[2], v[3]));
    }
  }
  /* Transpose-and-max: lane k ends up with block k's 32-bit lanes combined. */
#define MAX_LANES(a, b) (wide ? wasm_i32x4_max(a, b) : wasm_i16x8_max(a, b))
  V ab = MAX_LANES(wasm_i32x4_shuffle(m[0], m[1], 0, 1, 4, 5), wasm_i32x4_shuffle(m[0], m[1], 2, 3, 6, 7));
  V cd = MAX_LANES(wasm_i32x4_shuffle(m[2], m[3], 0, 1, 4, 5), wasm_i32x4_shuffle(m[2], m[3], 2, 3, 6, 7));
  V all = MAX_LANES(wasm_i32x4_shuffle(ab, cd, 0, 2, 4, 6), wasm_i32x4_shuffle(ab, cd, 1, 3, 5, 7));
#undef MAX_LANES
  if (wide) return all;
  /* Halves: the two 16-bit lanes of each 32-bit lane. */
  all = wasm_i16x8_max(all, wasm_i16x8_shuffle(all, all, 1, 0, 3, 2, 5, 4, 7, 6));
  *max16 = wasm_v128_and(all, K(0xffff));
  if (kind == Q8_BF16) return wasm_i32x4_shl(*max16, 16);
  /* float16 -> float32 bits for the max: Inf and NaN by hand (half_magnitude_to_float is for finite halves). */
  V inf_or_nan = wasm_i32x4_gt(*max16, K(0x7bff));
  V special = wasm_v128_or(K(0x7f800000), wasm_v128_and(wasm_i32x4_gt(*max16, K(0x7c00)), K(0x00400000)));
  return wasm_v128_bitselect(special, half_magnitude_to_float(*max16, zero), inf_or_nan);
}

static inline __attribute__((always_inline)) void q8_0_from(uint32_t blocks, int kind, int32_t zero) {
  uint32_t block_bytes = kind == Q8_F32 ? 128 : 64;
  for (uint32_t b = 0; b < blocks; b += 4) {
    const uint8_t *in = region_a + block_bytes * b;
    uint8_t *out = region_out + 34 * b;
    V max16 = K(0);
    V amax = q8_0_group_max(in, kind, &max16, zero);
    V d = wasm_f32x4_div(amax, K(0x42fe0000) /* 127.0f */);
    V id = wasm_v128_and(wasm_f32x4_div(K(0x3f800000) /* 1.0f */, d), wasm_f32x4_ne(d, K(0)));
    V nan = wasm_i32x4_gt(amax, K(0x7f800000));
    V d_half = wasm_v128_bitselect(K(0x7e00), float_to_half(d, zero), nan);
    /* An infinite or NaN max, or an infinite 1 / d: quants of 0. */
    V zeros = wasm_v128_or(wasm_i32x4_gt(amax, K(0x7f7fffff)), wasm_i32x4_eq(id, K(0x7f800000)));
    uint32_t dh[4], zeroed[4];
    wasm_v128_store(dh, d_half);
    if (kind == Q8_F16 && !wasm_v128_any_true(wasm_i32x4_lt(max16, K(0x2400))) && !wasm_v128_any_true(zeros)) {
      /* Every max in 2^-6 .. 65504: the shifted widening (see above). A loop of its own, so
       * that each loop's q8_0_block is compiled for one constant `how`, with no branch inside. */
      float scale[4];
      wasm_v128_store(scale, wasm_f32x4_mul(id, K(0x77000000) /* 2^111 */));
      for (int k = 0; k < 4; k++) q8_0_block(in + 64 * k, out + 34 * k, Q8_F16_SHIFTED, wasm_f32x4_splat(scale[k]), dh[k], zero);
      continue;
    }
    float scale[4];
    wasm_v128_store(scale, id);
    wasm_v128_store(zeroed, zeros);
    for (int k = 0; k < 4; k++) {
      if (zeroed[k]) q8_0_zero_block(out + 34 * k, dh[k]);
      else q8_0_block(in + block_bytes * k, out + 34 * k, kind, wasm_f32x4_splat(scale[k]), dh[k], zero);
    }
  }
}

EXPORT(q8_0_from_f16) void q8_0_from_f16(uint32_t blocks, int32_t zero) { q8_0_from(blocks, Q8_F16, zero); }
EXPORT(q8_0_from_bf16) void q8_0_from_bf16(uint32_t blocks, int32_t zero) { q8_0_from(blocks, Q8_BF16, zero); }
EXPORT(q8_0_from_f32) void q8_0_from_f32(uint32_t blocks, int32_t zero) { q8_0_from(blocks, Q8_F32, zero); }

/* ==== LoRA merge: the low-rank product B @ A in torch's order ==============
 * One block of W's rows through a whole merge step, in one pass
 * (src/kernels/fast-low-rank.ts drives it):
 *   u = float32(B @ A) * scale, each element summed as torch's CPU gemm sums
 *       it: acc = +0; for l = 0 .. rank-1 in order, acc += round32(B[i][l] *
 *       A[l][j]), a product rounded to float32 and then added (never a fused
 *       multiply-add, never a sum split over l). Vectors run along j (output
 *       columns) only, so each lane is one element with its own sum in order.
 *   u = round_through(delta kind, u)   (PEFT casts the update back)
 *   w = w + u, or w = u without `accumulate`   (torch's add, NaN rule below)
 *   w = round_through(out kind, w)     (the in-place add stores in W's dtype)
 * W is read in its stored dtype (float16, bfloat16 or float32: `in` kind,
 * converted as convertInto converts) and written in the `store` kind (W's
 * dtype, or float32 between two adapters' steps), so no float32 copy of W
 * is ever made; w_in and w_out may be the same memory.
 *
 * Operands, all in this module's memory (JS places them past __heap_base):
 * A is rank x a_stride floats (a_stride a multiple of 4, the padding lanes
 * zero: they are computed and never stored), packed in strips: columns
 * j .. j+15 (while 16 fit, then 4 at a time) are rank rows of 16 (or 4)
 * floats at a + j * rank, so a strip is contiguous and stays in the L1
 * cache (a row-major A with thousands of columns would put each of a
 * strip's rows in another page and the same cache set); element (i, l) of B is
 * b[i * b_row + l * b_l] (a block of B's rows, or for a transposed update
 * the columns of lora_A read in place); W is rows x cols elements.
 *
 * NaN: WebAssembly leaves NaN bits to the engine, so every element whose
 * product is NaN is recomputed by a scalar walk that sets the bits as torch
 * does on x86 (measured by scripts/make-lora-fixtures.py): the product takes
 * A's NaN before B's, the sum the product's before the accumulator's (both
 * the other way round when the product has one column, torch's gemv; the
 * caller says which, by `mode`), and an invalid operation gives the default
 * NaN 0xFFC00000. */

extern unsigned char __heap_base;
/* Where JS may place the operands: the module's own data ends here. */
EXPORT(lr_heap_base) uint32_t lr_heap_base(void) { return (uint32_t)(uintptr_t)&__heap_base; }

/* `mode` bits, as fast-low-rank.ts sets them. Kinds: 0 float32, 1 float16, 2 bfloat16. */
#define LR_DELTA_KIND(mode) ((mode) & 3u)
#define LR_OUT_KIND(mode) (((mode) >> 2) & 3u)
#define LR_IN_KIND(mode) (((mode) >> 4) & 3u)
#define LR_STORE_KIND(mode) (((mode) >> 6) & 3u)
#define LR_ACCUMULATE 256u
#define LR_NAN_B_FIRST 512u /* a product keeps B's NaN before A's */
#define LR_NAN_ACCUMULATOR_FIRST 1024u /* a sum keeps the accumulator's NaN before the product's */

typedef struct {
  const float *a; uint32_t a_stride;
  const float *b; uint32_t b_row, b_l;
  const uint8_t *w_in; uint8_t *w_out;
  uint32_t cols, rank, mode;
  float scale;
  int32_t zero;
} lr_args;

static inline uint32_t lr_bits(float x) { uint32_t u; __builtin_memcpy(&u, &x, 4); return u; }
static inline float lr_float(uint32_t u) { float x; __builtin_memcpy(&x, &u, 4); return x; }
static inline int lr_is_nan(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }
#define LR_DEFAULT_NAN 0xffc00000u

/* torch's x86 result of x op y when either is NaN, or the arithmetic result:
 * the first NaN operand quieted, the default NaN for an invalid operation. */
static inline uint32_t lr_nan_rule(uint32_t first, uint32_t second, float result) {
  if (lr_is_nan(first)) return first | 0x00400000u;
  if (lr_is_nan(second)) return second | 0x00400000u;
  uint32_t r = lr_bits(result);
  return lr_is_nan(r) ? LR_DEFAULT_NAN : r;
}

/* The first column of the strip of A holding column j, and the strip's width (see above). */
static inline uint32_t lr_strip_width(uint32_t a_stride, uint32_t j) { return j < a_stride / 16 * 16 ? 16 : 4; }
static inline uint32_t lr_strip(uint32_t a_stride, uint32_t j) { return j / lr_strip_width(a_stride, j) * lr_strip_width(a_stride, j); }

/* The bits of one element of u whose result is NaN, by torch's rule (see above). */
static __attribute__((noinline)) uint32_t lr_nan_element(const lr_args *p, uint32_t i, uint32_t j) {
  int b_first = (p->mode & LR_NAN_B_FIRST) != 0, accumulator_first = (p->mode & LR_NAN_ACCUMULATOR_FIRST) != 0;
  uint32_t acc = 0;
  for (uint32_t l = 0; l < p->rank; l++) {
    uint32_t a = lr_bits(p->a[lr_strip(p->a_stride, j) * p->rank + l * lr_strip_width(p->a_stride, j) + j - lr_strip(p->a_stride, j)]), b = lr_bits(p->b[i * p->b_row + l * p->b_l]);
    float product = lr_float(a) * lr_float(b);
    uint32_t q = b_first ? lr_nan_rule(b, a, product) : lr_nan_rule(a, b, product);
    float sum = lr_float(q) + lr_float(acc);
    acc = accumulator_first ? lr_nan_rule(acc, q, sum) : lr_nan_rule(q, acc, sum);
  }
  return lr_nan_rule(acc, lr_bits(p->scale), lr_float(acc) * p->scale);
}

/* Float32 -> a kind -> float32, as convertInto there and back (f32_to_f16, f16_to_f32). */
static inline V lr_round_through(V x, uint32_t kind, int32_t zero) {
  if (kind == 1) {
    V h = float_to_half(x, zero);
    return half_to_float(wasm_i32x4_shr(wasm_i32x4_shl(h, 16), 16), 1, zero); /* sign-extended */
  }
  if (kind == 2) return bfloat_to_float(float_to_bfloat(x, zero));
  return x;
}

static inline V lr_load_vector(const uint8_t *at, uint32_t kind, int32_t zero) {
  if (kind == 0) return wasm_v128_load(at);
  if (kind == 1) return half_to_float(wasm_i32x4_load16x4(at), 1, zero); /* sign-extended, as convertInto */
  return bfloat_to_float(wasm_u32x4_load16x4(at));
}

/* The last elements of a row (fewer than 4), the rest read as zero: out of the hot loop. */
static __attribute__((noinline)) V lr_load_partial(const uint8_t *at, uint32_t kind, uint32_t valid, int32_t zero) {
  uint8_t lanes[16] __attribute__((aligned(16))) = {0};
  uint32_t size = kind == 0 ? 4 : 2;
  for (uint32_t e = 0; e < valid * size; e++) lanes[e] = at[e];
  return lr_load_vector(lanes, kind, zero);
}

/* Four elements of W at element k, `valid` of them real (the rest read as zero). */
static inline V lr_load_w(const lr_args *p, uint32_t k, uint32_t valid) {
  uint32_t kind = LR_IN_KIND(p->mode);
  uint32_t size = kind == 0 ? 4 : 2;
  const uint8_t *at = p->w_in + k * size;
  if (valid < 4) return lr_load_partial(at, kind, valid, p->zero);
  return lr_load_vector(at, kind, p->zero);
}

static inline void lr_store_vector(uint8_t *to, uint32_t kind, uint32_t out_kind, V w, int32_t zero) {
  if (kind == 0) {
    wasm_v128_store(to, lr_round_through(w, out_kind, zero));
  } else {
    /* A value rounded to W's dtype converts to it exactly: rounding once here is the same. */
    V h = kind == 1 ? float_to_half(w, zero) : float_to_bfloat(w, zero);
    wasm_v128_store64_lane(to, wasm_u16x8_narrow_i32x4(h, h), 0);
  }
}

/* The last elements of a row (fewer than 4): out of the hot loop. */
static __attribute__((noinline)) void lr_store_partial(uint8_t *at, uint32_t kind, uint32_t out_kind, uint32_t valid, V w, int32_t zero) {
  uint8_t lanes[16] __attribute__((aligned(16)));
  lr_store_vector(lanes, kind, out_kind, w, zero);
  uint32_t size = kind == 0 ? 4 : 2;
  for (uint32_t e = 0; e < valid * size; e++) at[e] = lanes[e];
}

/* Stores four elements of w at element k in the store kind (`valid` of them). */
static inline void lr_store_w(const lr_args *p, uint32_t k, uint32_t valid, V w) {
  uint32_t kind = LR_STORE_KIND(p->mode);
  uint8_t *at = p->w_out + k * (kind == 0 ? 4 : 2);
  if (valid < 4) lr_store_partial(at, kind, LR_OUT_KIND(p->mode), valid, w, p->zero);
  else lr_store_vector(at, kind, LR_OUT_KIND(p->mode), w, p->zero);
}

/* u with each NaN lane set by torch's rule: out of the hot loop. */
static __attribute__((noinline)) V lr_fix_nan(const lr_args *p, V u, uint32_t row, uint32_t column) {
  float lanes[4] __attribute__((aligned(16)));
  wasm_v128_store(lanes, u);
  for (uint32_t e = 0; e < 4; e++) {
    if (lr_is_nan(lr_bits(lanes[e]))) lanes[e] = lr_float(lr_nan_element(p, row, column + e));
  }
  return wasm_v128_load(lanes);
}

/* R rows x NV vectors of the block at (row, column j): the sums in order over
 * l, scaled, then each element's step finished into W. */
static inline __attribute__((always_inline)) void lr_block(const lr_args *p, uint32_t row, uint32_t j, const int R, const int NV) {
  V acc[4][4];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) acc[r][v] = wasm_f32x4_const_splat(0.0f);
  const float *a = p->a + j * p->rank; /* the strip: rank rows of 4 * NV floats */
  const float *b = p->b + row * p->b_row;
  const uint32_t b_row = p->b_row, b_l = p->b_l;
  for (uint32_t l = 0; l < p->rank; l++, a += 4 * NV, b += b_l) {
    V av[4];
    for (int v = 0; v < NV; v++) av[v] = wasm_v128_load(a + 4 * v);
    for (int r = 0; r < R; r++) {
      V bs = wasm_v128_load32_splat(b + r * b_row);
      /* Two instructions: the product is rounded to float32 before the add. */
      for (int v = 0; v < NV; v++) acc[r][v] = wasm_f32x4_add(acc[r][v], wasm_f32x4_mul(bs, av[v]));
    }
  }
  V scale = wasm_f32x4_splat(p->scale);
  for (int r = 0; r < R; r++) {
    for (int v = 0; v < NV; v++) {
      uint32_t column = j + 4 * v;
      if (column >= p->cols) continue; /* padding lanes only */
      uint32_t valid = p->cols - column < 4 ? p->cols - column : 4;
      V u = wasm_f32x4_mul(acc[r][v], scale);
      if (wasm_v128_any_true(wasm_f32x4_ne(u, u))) u = lr_fix_nan(p, u, row + r, column);
      u = lr_round_through(u, LR_DELTA_KIND(p->mode), p->zero);
      uint32_t k = (row + r) * p->cols + column;
      V w = (p->mode & LR_ACCUMULATE) ? float_vector(lr_load_w(p, k, valid), u, 0, p->zero) : u;
      lr_store_w(p, k, valid, w);
    }
  }
}

EXPORT(low_rank_merge) void low_rank_merge(const float *a, uint32_t a_stride, const float *b, uint32_t b_row, uint32_t b_l,
                                           const uint8_t *w_in, uint8_t *w_out, uint32_t rows, uint32_t cols, uint32_t rank,
                                           float scale, uint32_t mode, int32_t zero) {
  lr_args p = { a, a_stride, b, b_row, b_l, w_in, w_out, cols, rank, mode, scale, zero };
  /* A strip of 16 (or 4) of A's columns stays in the L1 cache while every row of B passes over it. */
  uint32_t j = 0;
  for (; j + 16 <= a_stride; j += 16) {
    uint32_t i = 0;
    for (; i + 2 <= rows; i += 2) lr_block(&p, i, j, 2, 4);
    if (i < rows) lr_block(&p, i, j, 1, 4);
  }
  for (; j < a_stride; j += 4) {
    uint32_t i = 0;
    for (; i + 4 <= rows; i += 4) lr_block(&p, i, j, 4, 1);
    for (; i < rows; i++) lr_block(&p, i, j, 1, 1);
  }
}
