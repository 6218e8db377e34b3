// bfloat16 for mixed-precision training: float32 -> bf16 rounding as PyTorch does it, and a GEMM whose
// operands are rounded to bf16 while the products are summed in float32.
//
// bf16 is float32's upper 16 bits (sign, 8 exponent bits, 7 mantissa bits). Rounding is to nearest, ties
// to even, on the bit pattern: bits + 0x7fff + ((bits >> 16) & 1), then the low half dropped; every NaN
// becomes the quiet NaN 0x7fc0; infinities stay infinite, finite values past bf16's largest become
// infinite, denormals round like any other value (PyTorch's c10::BFloat16 round_to_nearest_even).
#pragma once
#include <cstdint>

#include "conv2d.h"

namespace vgg {

/** The bf16 bit pattern of x, rounded to nearest even (NaN -> 0x7fc0); branch-free, so loops of it vectorise. */
inline uint16_t bf16_bits(float x) {
  uint32_t u;
  __builtin_memcpy(&u, &x, 4);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : rounded);
}

/** The pair word of two values, the layout VDPBF16PS and TDPBF16PS read: bf16(even) | bf16(odd) << 16. */
inline uint32_t pair_word(float even, float odd) {
  return static_cast<uint32_t>(bf16_bits(even)) | static_cast<uint32_t>(bf16_bits(odd)) << 16;
}

/** The float32 whose upper half is `bits` (exact: every bf16 is a float32). */
inline float bf16_to_float(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float x;
  __builtin_memcpy(&x, &u, 4);
  return x;
}

/** How the bf16 GEMM multiplies: AMX tiles (TDPBF16PS), VDPBF16PS (AVX512-BF16) or the portable emulation. */
enum class Bf16Path { Emulation, Avx512Bf16, Amx };

/**
 * Chosen once: AMX at the amx ISA level (isa.h: AMX-TILE and AMX-BF16, tile data granted by Linux), else
 * AVX512-BF16 where the CPU has the feature and the avx512 level is active, else the emulation;
 * VGG_BF16=emulate forces the emulation and VGG_BF16=avx512bf16 the VDPBF16PS path where it runs (tests
 * compare them).
 */
Bf16Path bf16_path();
const char* bf16_path_name(Bf16Path path);

/** y[i] = bf16(x[i]) held as float32 (the low 16 bits zero); y may be x. Threaded for long arrays. */
void round_to_bf16(float* y, const float* x, int64_t n);

// C = op(A) op(B) + beta * C, beta 0 or 1, with every element of op(A) and op(B) rounded to bf16 and the
// products (exact in float32) summed in float32, k in fixed blocks, so a value does not depend on the
// thread count. Layouts as sgemm's (gemm.h): c is (m, n) with row stride ldc; op(A) is (m, k): a[i*lda + p],
// or a[p*lda + i] when trans_a; op(B) is (k, n): b[p*ldb + j], or b[j*ldb + p] when trans_b.
// Runs on the thread pool, over rows or columns of C.
void bf16_gemm(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m,
               int64_t n, int64_t k, bool trans_a, bool trans_b, float beta);

/**
 * op(B), the (k, n) operand of bf16_gemm_source, given by a function instead of memory (an implicit
 * im2col): exactly one of the two functions is set. column writes out[i] = op(B)[p0 + i][j] for i < len (a
 * run along k at one n); row_words writes pair words already rounded, out[i] = bf16_bits(op(B)[2kp][j0 +
 * i]) | bf16_bits(op(B)[2kp + 1][j0 + i]) << 16 (zero in the upper half past an odd k), a run along n at
 * one pair of k. Called on the threads that pack, so they must be safe to call concurrently.
 */
struct Bf16Source {
  void (*column)(const void* ctx, float* out, int64_t j, int64_t p0, int64_t len) = nullptr;
  void (*row_words)(const void* ctx, uint32_t* out, int64_t kp, int64_t j0, int64_t len) = nullptr;
  const void* ctx = nullptr;
};

/**
 * op(A), the (m, k) operand of bf16_gemm_rows, given by a function: row_words(ctx, out, i, kp0, len) writes
 * out[t] = bf16_bits(op(A)[i][2(kp0 + t)]) | bf16_bits(op(A)[i][2(kp0 + t) + 1]) << 16 for t < len (zero in
 * the upper half past an odd k). Called concurrently on the threads that pack.
 */
struct Bf16RowSource {
  void (*row_words)(const void* ctx, uint32_t* out, int64_t i, int64_t kp0, int64_t len) = nullptr;
  const void* ctx = nullptr;
};

/**
 * For AMX kernels outside the GEMM (bf16_path() == Amx only): amx_tiles_begin loads the configuration every
 * bf16 kernel uses (tiles 0-7, 16 rows of 64 bytes) on the calling thread; amx_tiles_end releases it.
 */
void amx_tiles_begin();
void amx_tiles_end();

/** bf16_gemm with op(A) from `a`; on the calling thread alone unless `threaded`. */
void bf16_gemm_rows(float* c, int64_t ldc, const Bf16RowSource& a, const float* b, int64_t ldb, bool trans_b,
                    int64_t m, int64_t n, int64_t k, float beta, bool threaded);

/** bf16_gemm with op(B) from `b`; on the calling thread alone unless `threaded`. */
void bf16_gemm_source(float* c, int64_t ldc, const float* a, int64_t lda, bool trans_a, const Bf16Source& b,
                      int64_t m, int64_t n, int64_t k, float beta, bool threaded);

// Convolutions under bf16 (native/bf16_conv.cc): conv2d.h's forward, input gradient and weight gradient with
// x, w and dy rounded to bf16 and float32 sums, as implicit GEMMs on bf16_gemm's kernels. Each returns
// false, writing nothing, where it does not apply (a bf16 path other than AMX; cIn * kh * kw, or for the
// input gradient cOut * kh * kw, below 32; a strided input gradient; an output size other than the geometry
// gives): the caller then runs the float32 kernels on rounded inputs.
bool conv2d_forward_bf16(float* y, const float* x, const float* w, const float* bias, const ConvShape& s, bool relu);
// conv2d_relu_pool_forward's pooled output (conv2d.h) from the bf16 forward, pooled as it is stored.
bool conv2d_relu_pool_forward_bf16(float* y, int32_t* argmax, const float* x, const float* w, const float* bias,
                                   const ConvShape& s);
bool conv2d_backward_input_bf16(float* dx, const float* dy, const float* w, const float* relu_x, const ConvShape& s);
bool conv2d_backward_weight_bf16(float* dw, float* db, const float* dy, const float* x, const ConvShape& s);

}  // namespace vgg
