// Packed, cache-blocked single-precision GEMM (BLIS-style: A and B packed into MR x kc and kc x NR
// micro-panels, a 6x16 register-tiled micro-kernel, AVX2+FMA or portable C++, or 12x32 AVX-512, chosen at run time).
#pragma once
#include <string>
#include <cstdint>

namespace vgg {

/** Width of the micro-kernel's B panels: a BSource packs NR columns per micro-panel. */
constexpr int64_t kGemmNR = 16;
/** The deepest k block; gemm_k_step(k) cuts k into equal blocks of at most this many. */
constexpr int64_t kGemmKC = 384;
int64_t gemm_k_step(int64_t k);

/**
 * A producer of packed op(B): pack(ctx, dst, p0, j0, kc, nc) writes op(B)[p0:p0+kc, j0:j0+nc] as
 * NR-column micro-panels, each (kc, NR) row-major and zero-padded to NR columns, panel jr at dst + jr*kc.
 * Lets a convolution pack straight from the image (implicit im2col) instead of materialising cols.
 */
struct BSource {
  void (*pack)(const void* ctx, float* dst, int64_t p0, int64_t j0, int64_t kc, int64_t nc);
  const void* ctx;
  // Or op(B) already packed by pack_b_all (pack is then unused): the driver reads its panels in place,
  // those of column packed_j0 + j for the driver's column j; packed_n is the padded width it was packed at.
  const float* packed = nullptr;
  int64_t packed_n = 0, packed_j0 = 0;
};

/**
 * One B micro-panel from NR source rows: d[p * NR + j] = rows[j][p] for p < kc (a transpose, done in 8x8
 * AVX2 blocks when available); a null row packs zeros. For op(B) = X^T with X's rows contiguous.
 */
void pack_panel_from_rows(float* d, const float* const* rows, int64_t kc);

#if defined(__x86_64__) || defined(__i386__)
/**
 * out[q * out_stride + i] = rows[i][p + q] for i, q < 8, a null row reading zeros: one 8x8 transpose in AVX2
 * registers (call only where isa_at_least(Isa::Avx2Fma)). out 32-byte aligned, out_stride a multiple of 8.
 */
void transpose_8x8_avx2(float* out, int64_t out_stride, const float* const* rows, int64_t p);
#endif

/** Optional work fused into the GEMM's final store: C[i][j] += row_bias[i], then max(C, 0). */
struct GemmEpilogue {
  const float* row_bias = nullptr;  // row_bias is (m) or null
  bool relu = false;
};

// C = op(A) * op(B) + beta * C, then the epilogue. beta is 0 or 1.
// c is (m, n) with row stride ldc; op(A) is (m, k): a[i*lda + p], or a[p*lda + i] when trans_a;
// op(B) is (k, n): b[p*ldb + j], or b[j*ldb + p] when trans_b.
// sgemm_serial runs on the calling thread; sgemm splits the work over the thread pool.
void sgemm_serial(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m,
                  int64_t n, int64_t k, bool trans_a, bool trans_b, float beta, GemmEpilogue ep = {});
// The same with op(B) supplied by a BSource (k, n).
void sgemm_serial_source(float* c, int64_t ldc, const float* a, int64_t lda, bool trans_a, BSource b, int64_t m,
                         int64_t n, int64_t k, float beta, GemmEpilogue ep = {});
// op(A) (m, k) packed once into the layout the driver reads, for many GEMMs sharing the same A (Winograd's
// transformed weights): packed_a_size floats, filled by pack_a_all, consumed by sgemm_serial_packed_a.
int64_t packed_a_size(int64_t m, int64_t k);
/** Where pack_a_all puts op(A)[i][p] of an (m, k) matrix: row panels of mr (6, or 12 at avx512) per k block. */
struct PackedALayout {
  int64_t m_padded, k, k_step, mr;
  int64_t offset(int64_t i, int64_t p) const {
    const int64_t pc = p / k_step * k_step, kc = k - pc < k_step ? k - pc : k_step;
    return pc * m_padded + (i - i % mr) * kc + (p - pc) * mr + i % mr;
  }
};
PackedALayout packed_a_layout(int64_t m, int64_t k);
void pack_a_all(float* dst, const float* a, int64_t lda, bool trans_a, int64_t m, int64_t k);
// c (m, n) = packed_a (m, k) x b (k, n) row stride ldb + beta * c.
void sgemm_serial_packed_a(float* c, int64_t ldc, const float* packed_a, const float* b, int64_t ldb, int64_t m,
                           int64_t n, int64_t k, float beta);
// op(B) (k, n) packed once into the layout the driver reads (each k block in turn, cut into NR-column
// panels), for many GEMMs with the same B, e.g. an inference layer's weights: packed_b_size floats, which
// must be 32-byte aligned; pack_b_all runs on the thread pool. sgemm_packed_b computes
// c (m, n) = a (m, k) row stride lda x packed B + beta * c, bit for bit what sgemm gives with the B it was
// packed from (above the GEMV rows, i.e. for m > 4), on the sparse path too (sparse_gemm.h).
int64_t packed_b_size(int64_t n, int64_t k);
void pack_b_all(float* dst, const float* b, int64_t ldb, bool trans_b, int64_t n, int64_t k);
void sgemm_packed_b(float* c, int64_t ldc, const float* a, int64_t lda, const float* packed_b, int64_t m, int64_t n,
                    int64_t k, float beta);
void sgemm(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m, int64_t n,
           int64_t k, bool trans_a, bool trans_b, float beta, GemmEpilogue ep = {});

/** The dense micro-kernel in use, for `vgg info` (e.g. "6x16 avx2+fma"). */
std::string gemm_kernel_name();

}  // namespace vgg
