// SGEMM: loops jc (NC columns of B) > pc (KC deep) > ic (MC rows of A) > jr (NR) > ir (MR) around a
// 6x16 micro-kernel (AVX2 or portable), or at the avx512 level a 12x32 one (gemm_avx512.cc) over A panels
// of 12 rows and two of the same 16-column B panels. The packed B block (KC x NC) stays in L3/L2, an A
// block (MC x KC) in L2, and one B micro-panel (KC x 16 or 32) in L1/L2 while the kernel sweeps the A
// micro-panels.
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "gemm_avx512.h"
#include "isa.h"
#include "sparse_gemm.h"
#include "threadpool.h"
#include "workspace.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VGG_X86 1
#endif

namespace vgg {
namespace {

constexpr int64_t MR = 6, NR = kGemmNR;
constexpr int64_t kMaxMR = MR > kAvx512MR ? MR : kAvx512MR;

// Rows of the packed A panels at the active level.
int64_t gemm_mr() { return isa_at_least(Isa::Avx512) ? kAvx512MR : MR; }
// Columns a thread's slice of C is a multiple of: the widest tile, so slices end in full tiles.
int64_t split_cols() { return isa_at_least(Isa::Avx512) ? NR * kAvx512Panels : NR; }
constexpr int64_t KC = kGemmKC, MC = 240, NC = 3072;

// The micro-kernel: c (MR, NR) row stride ldc = pa (kc, MR) packed x pb (kc, NR) packed, added to c when
// `accumulate`, then bias (MR) and ReLU when given.
using MicroKernel = void (*)(float* c, int64_t ldc, const float* pa, const float* pb, int64_t kc, bool accumulate,
                             const float* bias, bool relu);

void micro_portable(float* c, int64_t ldc, const float* pa, const float* pb, int64_t kc, bool accumulate,
                    const float* bias, bool relu) {
  float acc[MR][NR] = {};
  for (int64_t p = 0; p < kc; p++) {
    const float* bp = pb + p * NR;
    for (int64_t r = 0; r < MR; r++) {
      const float a = pa[p * MR + r];
      for (int64_t j = 0; j < NR; j++) acc[r][j] += a * bp[j];
    }
  }
  for (int64_t r = 0; r < MR; r++) {
    float* cr = c + r * ldc;
    const float bv = bias ? bias[r] : 0.0f;
    for (int64_t j = 0; j < NR; j++) {
      float v = acc[r][j] + (accumulate ? cr[j] : 0.0f) + bv;
      cr[j] = relu && v < 0.0f ? 0.0f : v;
    }
  }
}

#ifdef VGG_X86
// One row of a micro-tile's 16 results to C: plus C when `accumulate`, plus *bias when given, then ReLU.
__attribute__((target("avx2,fma"), always_inline)) inline void store_row_avx2(float* cr, __m256 v0, __m256 v1,
                                                                             bool accumulate, const float* bias,
                                                                             bool relu) {
  if (accumulate) v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cr)), v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cr + 8));
  if (bias) {
    const __m256 bv = _mm256_set1_ps(*bias);
    v0 = _mm256_add_ps(v0, bv), v1 = _mm256_add_ps(v1, bv);
  }
  // max(0, v) returns v when v is NaN (like the reference's `v < 0 ? 0 : v`).
  const __m256 zero = _mm256_setzero_ps();
  if (relu) v0 = _mm256_max_ps(zero, v0), v1 = _mm256_max_ps(zero, v1);
  _mm256_storeu_ps(cr, v0), _mm256_storeu_ps(cr + 8, v1);
}

__attribute__((target("avx2,fma"))) void micro_avx2(float* c, int64_t ldc, const float* pa, const float* pb,
                                                    int64_t kc, bool accumulate, const float* bias, bool relu) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps();
  __m256 c11 = _mm256_setzero_ps(), c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c40 = _mm256_setzero_ps();
  __m256 c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  // Touch the C tile early so its cache lines arrive while the k loop runs.
  for (int r = 0; r < MR; r++) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0),
                               _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 15), _MM_HINT_T0);
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; p++) {
    _mm_prefetch(reinterpret_cast<const char*>(pb + 8 * NR), _MM_HINT_T0);
    const __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8);
    __m256 a = _mm256_broadcast_ss(pa + 0);
    c00 = _mm256_fmadd_ps(a, b0, c00), c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(pa + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10), c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(pa + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20), c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(pa + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30), c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(pa + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40), c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(pa + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50), c51 = _mm256_fmadd_ps(a, b1, c51);
    pa += MR;
    pb += NR;
  }
  const __m256 rows[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int r = 0; r < MR; r++) store_row_avx2(c + r * ldc, rows[r][0], rows[r][1], accumulate, bias ? bias + r : nullptr, relu);
}

// The micro-kernel for the last rows < MR of a block (a batch of 128 ends in a 2-row tile): the same sums
// in the same order as micro_avx2 for those rows, without the FMAs of the padding rows.
template <int Rows>
__attribute__((target("avx2,fma"))) void micro_avx2_rows(float* c, int64_t ldc, const float* pa, const float* pb,
                                                         int64_t kc, bool accumulate, const float* bias, bool relu) {
  __m256 acc[Rows][2];
#pragma GCC unroll 6
  for (int r = 0; r < Rows; r++) acc[r][0] = _mm256_setzero_ps(), acc[r][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8);
#pragma GCC unroll 6
    for (int r = 0; r < Rows; r++) {
      const __m256 a = _mm256_broadcast_ss(pa + r);
      acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]), acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
    }
    pa += MR;
    pb += NR;
  }
#pragma GCC unroll 6
  for (int r = 0; r < Rows; r++) store_row_avx2(c + r * ldc, acc[r][0], acc[r][1], accumulate, bias ? bias + r : nullptr, relu);
}
#endif

// The kernel for a full-width tile of `rows` < MR rows, or null where the edge path below serves.
MicroKernel micro_kernel_rows(int64_t rows) {
#ifdef VGG_X86
  if (isa_at_least(Isa::Avx2Fma)) {
    static constexpr MicroKernel kernels[MR] = {nullptr, micro_avx2_rows<1>, micro_avx2_rows<2>,
                                                micro_avx2_rows<3>, micro_avx2_rows<4>, micro_avx2_rows<5>};
    return kernels[rows];
  }
#endif
  (void)rows;
  return nullptr;
}

MicroKernel micro_kernel() {
#ifdef VGG_X86
  if (isa_at_least(Isa::Avx2Fma)) return micro_avx2;
#endif
  return micro_portable;
}

// Packs op(A)[i0:i0+mc, p0:p0+kc] into mr-row micro-panels, each (kc, mr), zero-padded to mr rows.
void pack_a(float* dst, const float* a, int64_t lda, bool trans_a, int64_t i0, int64_t p0, int64_t mc, int64_t kc,
            int64_t mr) {
  for (int64_t ir = 0; ir < mc; ir += mr) {
    const int64_t rows = std::min(mr, mc - ir);
    float* d = dst + ir * kc;
    if (trans_a) {
      for (int64_t p = 0; p < kc; p++) {
        const float* src = a + (p0 + p) * lda + i0 + ir;
        for (int64_t r = 0; r < rows; r++) d[p * mr + r] = src[r];
        for (int64_t r = rows; r < mr; r++) d[p * mr + r] = 0.0f;
      }
    } else {
      for (int64_t r = 0; r < mr; r++) {
        if (r < rows) {
          const float* src = a + (i0 + ir + r) * lda + p0;
          for (int64_t p = 0; p < kc; p++) d[p * mr + r] = src[p];
        } else {
          for (int64_t p = 0; p < kc; p++) d[p * mr + r] = 0.0f;
        }
      }
    }
  }
}

void pack_panel_rows_portable(float* d, const float* const* rows, int64_t p_begin, int64_t kc) {
  for (int64_t j = 0; j < NR; j++) {
    const float* src = rows[j];
    if (src) {
      for (int64_t p = p_begin; p < kc; p++) d[p * NR + j] = src[p];
    } else {
      for (int64_t p = p_begin; p < kc; p++) d[p * NR + j] = 0.0f;
    }
  }
}

#ifdef VGG_X86
}  // namespace

__attribute__((target("avx2"))) void transpose_8x8_avx2(float* out, int64_t out_stride, const float* const* rows,
                                                        int64_t p) {
  alignas(32) static const float zeros[8] = {};
  __m256 r[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(rows[i] ? rows[i] + p : zeros);
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_store_ps(out + 0 * out_stride, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_store_ps(out + 1 * out_stride, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_store_ps(out + 2 * out_stride, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_store_ps(out + 3 * out_stride, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_store_ps(out + 4 * out_stride, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_store_ps(out + 5 * out_stride, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_store_ps(out + 6 * out_stride, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_store_ps(out + 7 * out_stride, _mm256_permute2f128_ps(s3, s7, 0x31));
}

namespace {

// 8x8 transposes: rows j (two halves of 8) x columns p (blocks of 8) -> d rows p of 16.
__attribute__((target("avx2,fma"))) void pack_panel_rows_avx2(float* d, const float* const* rows, int64_t kc) {
  int64_t p = 0;
  for (; p + 8 <= kc; p += 8) {
    transpose_8x8_avx2(d + p * NR, NR, rows, p);
    transpose_8x8_avx2(d + p * NR + 8, NR, rows + 8, p);
  }
  pack_panel_rows_portable(d, rows, p, kc);
}
#endif

// Packs op(B)[p0:p0+kc, j0:j0+nc] into NR-column micro-panels, each (kc, NR), zero-padded to NR columns.
void pack_b(float* dst, const float* b, int64_t ldb, bool trans_b, int64_t p0, int64_t j0, int64_t kc, int64_t nc) {
  if (!trans_b) {
    // Row by row: each row of the block is read once, front to back, and dealt out NR floats to each panel.
    // (Panel by panel read NR floats per row at a stride of ldb: one cache line per row and page, which the
    // prefetcher does not follow; 128x4096x4096 with this B took 31.2 ms against 28.9 with B transposed.)
    const int64_t full = nc / NR * NR, cols = nc - full;
    for (int64_t p = 0; p < kc; p++) {
      const float* src = b + (p0 + p) * ldb + j0;
      float* d = dst + p * NR;
      for (int64_t jr = 0; jr < full; jr += NR) std::memcpy(d + jr * kc, src + jr, NR * sizeof(float));
      if (cols > 0) {
        float* t = d + full * kc;
        for (int64_t j = 0; j < cols; j++) t[j] = src[full + j];
        for (int64_t j = cols; j < NR; j++) t[j] = 0.0f;
      }
    }
    return;
  }
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t cols = std::min(NR, nc - jr);
    const float* rows[NR];
    for (int64_t j = 0; j < NR; j++) rows[j] = j < cols ? b + (j0 + jr + j) * ldb + p0 : nullptr;
    pack_panel_from_rows(dst + jr * kc, rows, kc);
  }
}

}  // namespace

void pack_panel_from_rows(float* d, const float* const* rows, int64_t kc) {
#ifdef VGG_X86
  // The aligned stores need d 32-byte aligned: panels start at multiples of kc * NR floats of a 64-byte buffer.
  if (isa_at_least(Isa::Avx2Fma) && (reinterpret_cast<uintptr_t>(d) & 31) == 0) return pack_panel_rows_avx2(d, rows, kc);
#endif
  pack_panel_rows_portable(d, rows, 0, kc);
}

namespace {

// Per-thread packing buffers, allocated once and reused by every later call on that thread.
struct PackBuffers {
  float* a = nullptr;
  float* b = nullptr;
  PackBuffers() {
    a = static_cast<float*>(workspace_alloc(MC * KC * sizeof(float)));
    b = static_cast<float*>(workspace_alloc(KC * NC * sizeof(float)));
  }
  ~PackBuffers() {
    std::free(a);
    std::free(b);
  }
};

PackBuffers& pack_buffers() {
  static thread_local PackBuffers buffers;
  return buffers;
}

// c (m, n) = beta * c, then the epilogue: the k = 0 case, where the product is empty.
void scale_and_epilogue(float* c, int64_t ldc, int64_t m, int64_t n, float beta, GemmEpilogue ep) {
  for (int64_t i = 0; i < m; i++) {
    float* ci = c + i * ldc;
    const float bv = ep.row_bias ? ep.row_bias[i] : 0.0f;
    for (int64_t j = 0; j < n; j++) {
      float v = (beta == 0.0f ? 0.0f : ci[j]) + bv;
      ci[j] = ep.relu && v < 0.0f ? 0.0f : v;
    }
  }
}

}  // namespace

namespace {

// k is cut into equal blocks of at most KC (400 = 200 + 200, not 384 + 16: a thin block wastes C traffic).
int64_t k_step_of(int64_t k) {
  if (k <= 0) return 1;
  const int64_t blocks = (k + KC - 1) / KC;
  return (k + blocks - 1) / blocks;
}

}  // namespace

int64_t gemm_k_step(int64_t k) { return k_step_of(k); }

namespace {

// The blocked driver. A is packed here per block, or read from `packed_a` (pack_a_all's layout).
void drive(float* c, int64_t ldc, const float* a, int64_t lda, bool trans_a, const float* packed_a, BSource b,
           int64_t m, int64_t n, int64_t k, float beta, GemmEpilogue ep) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) return scale_and_epilogue(c, ldc, m, n, beta, ep);
  const bool avx512 = isa_at_least(Isa::Avx512);
  const int64_t mr = gemm_mr(), mc_max = MC / mr * mr, max_panels = avx512 ? kAvx512Panels : 1;
  // The kernel for a tile of `rows` rows and `panels` full B panels, or null where the edge path serves.
  const MicroKernel full = micro_kernel(), rows_kernel = micro_kernel_rows(m % MR);
  auto tile_kernel = [&](int64_t rows, int64_t panels) -> MicroKernel {
    if (avx512) return avx512_micro_kernel(rows, panels);
    return rows == MR ? full : rows_kernel;
  };
  const MicroKernel edge_kernel = tile_kernel(mr, 1);
  PackBuffers& buf = pack_buffers();
  alignas(64) float edge[kMaxMR * NR];
  const int64_t k_step = k_step_of(k), m_padded = (m + mr - 1) / mr * mr;
  const int64_t nc_max = KC * NC / k_step / NR * NR;  // the packed B block always fits KC x NC floats
  for (int64_t jc = 0; jc < n; jc += nc_max) {
    const int64_t nc = std::min(nc_max, n - jc);
    for (int64_t pc = 0; pc < k; pc += k_step) {
      const int64_t kc = std::min(k_step, k - pc);
      const bool accumulate = pc > 0 || beta != 0.0f;
      const bool last = pc + kc >= k;
      const float* block_b = buf.b;
      if (b.packed)
        block_b = b.packed + pc * b.packed_n + (b.packed_j0 + jc) * kc;
      else
        b.pack(b.ctx, buf.b, pc, jc, kc, nc);
      for (int64_t ic = 0; ic < m; ic += mc_max) {
        const int64_t mc = std::min(mc_max, m - ic);
        const float* block_a = packed_a ? packed_a + pc * m_padded + ic * kc : buf.a;
        if (!packed_a) pack_a(buf.a, a, lda, trans_a, ic, pc, mc, kc, mr);
        for (int64_t jr = 0, panels; jr < nc; jr += panels * NR) {
          // As many full panels as the kernel takes, else one (the last, partial) panel.
          panels = std::max<int64_t>(1, std::min(max_panels, (nc - jr) / NR));
          const int64_t cols = std::min(panels * NR, nc - jr);
          const float* pb = block_b + jr * kc;
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int64_t rows = std::min(mr, mc - ir);
            const float* pa = block_a + ir * kc;
            float* ct = c + (ic + ir) * ldc + jc + jr;
            const float* bias = last && ep.row_bias ? ep.row_bias + ic + ir : nullptr;
            const bool relu = last && ep.relu;
            const MicroKernel kernel = cols == panels * NR ? tile_kernel(rows, panels) : nullptr;
            if (kernel) {
              kernel(ct, ldc, pa, pb, kc, accumulate, bias, relu);
              continue;
            }
            // Edge tile: compute the full mr x 16 tile into a scratch buffer, then store only the valid part.
            edge_kernel(edge, NR, pa, pb, kc, false, nullptr, false);
            for (int64_t r = 0; r < rows; r++) {
              float* cr = ct + r * ldc;
              const float bv = bias ? bias[r] : 0.0f;
              for (int64_t j = 0; j < cols; j++) {
                float v = edge[r * NR + j] + (accumulate ? cr[j] : 0.0f) + bv;
                cr[j] = relu && v < 0.0f ? 0.0f : v;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace

void sgemm_serial_source(float* c, int64_t ldc, const float* a, int64_t lda, bool trans_a, BSource b, int64_t m,
                         int64_t n, int64_t k, float beta, GemmEpilogue ep) {
  drive(c, ldc, a, lda, trans_a, nullptr, b, m, n, k, beta, ep);
}

namespace {
struct MatrixB {
  const float* b;
  int64_t ldb;
  bool trans_b;
};
void pack_matrix_b(const void* ctx, float* dst, int64_t p0, int64_t j0, int64_t kc, int64_t nc) {
  const MatrixB* mb = static_cast<const MatrixB*>(ctx);
  pack_b(dst, mb->b, mb->ldb, mb->trans_b, p0, j0, kc, nc);
}
}  // namespace

void sgemm_serial(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m,
                  int64_t n, int64_t k, bool trans_a, bool trans_b, float beta, GemmEpilogue ep) {
  const MatrixB mb{b, ldb, trans_b};
  sgemm_serial_source(c, ldc, a, lda, trans_a, BSource{pack_matrix_b, &mb}, m, n, k, beta, ep);
}

int64_t packed_a_size(int64_t m, int64_t k) {
  const int64_t mr = gemm_mr();
  return (m + mr - 1) / mr * mr * k;
}

PackedALayout packed_a_layout(int64_t m, int64_t k) {
  const int64_t mr = gemm_mr();
  return PackedALayout{(m + mr - 1) / mr * mr, k, k_step_of(k), mr};
}

void pack_a_all(float* dst, const float* a, int64_t lda, bool trans_a, int64_t m, int64_t k) {
  const int64_t mr = gemm_mr(), k_step = k_step_of(k), m_padded = (m + mr - 1) / mr * mr;
  for (int64_t pc = 0; pc < k; pc += k_step)
    pack_a(dst + pc * m_padded, a, lda, trans_a, 0, pc, m, std::min(k_step, k - pc), mr);
}

void sgemm_serial_packed_a(float* c, int64_t ldc, const float* packed_a, const float* b, int64_t ldb, int64_t m,
                           int64_t n, int64_t k, float beta) {
  const MatrixB mb{b, ldb, false};
  drive(c, ldc, nullptr, 0, false, packed_a, BSource{pack_matrix_b, &mb}, m, n, k, beta, {});
}

namespace {

constexpr int64_t kGemvMaxRows = 4;

// Rows of C for a few rows of A against B^T (a linear layer at batch <= 4): each row of B is streamed once
// and dotted with every row of A, no packing. c[i][j] (+)= dot(a_i, b_j) for j in [j0, j1).
void gemv_rows_portable(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m,
                        int64_t j0, int64_t j1, int64_t k, float beta) {
  for (int64_t j = j0; j < j1; j++) {
    const float* bj = b + j * ldb;
    for (int64_t i = 0; i < m; i++) {
      const float* ai = a + i * lda;
      float lanes[8] = {};  // eight partial sums, so the loop vectorises without reassociation flags
      int64_t p = 0;
      for (; p + 8 <= k; p += 8)
        for (int l = 0; l < 8; l++) lanes[l] += ai[p + l] * bj[p + l];
      float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
      for (; p < k; p++) sum += ai[p] * bj[p];
      c[i * ldc + j] = sum + (beta != 0.0f ? c[i * ldc + j] : 0.0f);
    }
  }
}

#ifdef VGG_X86
// J rows of B at once, each dotted with the M rows of A: M * J independent accumulator chains hide the FMA
// latency and J streams of B keep the memory system busy (this is bandwidth-bound: every weight is read
// once). Each c[i][j] is summed in the same lane order whatever J is, so results do not depend on the
// grouping (or on how the columns are split over threads).
template <int M, int J>
__attribute__((target("avx2,fma"), always_inline)) inline void gemv_block_avx2(float* c, int64_t ldc, const float* a,
                                                                               int64_t lda, const float* b,
                                                                               int64_t ldb, int64_t j, int64_t k,
                                                                               float beta) {
  __m256 acc[M][J];
  for (int i = 0; i < M; i++)
    for (int r = 0; r < J; r++) acc[i][r] = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) {
    __m256 bv[J];
    for (int r = 0; r < J; r++) bv[r] = _mm256_loadu_ps(b + (j + r) * ldb + p);
    for (int i = 0; i < M; i++) {
      const __m256 av = _mm256_loadu_ps(a + i * lda + p);
      for (int r = 0; r < J; r++) acc[i][r] = _mm256_fmadd_ps(av, bv[r], acc[i][r]);
    }
  }
  for (int i = 0; i < M; i++)
    for (int r = 0; r < J; r++) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, acc[i][r]);
      float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
      const float* bj = b + (j + r) * ldb;
      for (int64_t q = p; q < k; q++) sum += a[i * lda + q] * bj[q];
      float* cij = c + i * ldc + j + r;
      *cij = sum + (beta != 0.0f ? *cij : 0.0f);
    }
}

template <int M>
__attribute__((target("avx2,fma"))) void gemv_rows_m_avx2(float* c, int64_t ldc, const float* a, int64_t lda,
                                                          const float* b, int64_t ldb, int64_t j0, int64_t j1,
                                                          int64_t k, float beta) {
  constexpr int J = M == 1 ? 8 : M == 2 ? 4 : 2;
  int64_t j = j0;
  for (; j + J <= j1; j += J) gemv_block_avx2<M, J>(c, ldc, a, lda, b, ldb, j, k, beta);
  for (; j < j1; j++) gemv_block_avx2<M, 1>(c, ldc, a, lda, b, ldb, j, k, beta);
}

void gemv_rows_avx2(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m,
                    int64_t j0, int64_t j1, int64_t k, float beta) {
  switch (m) {
    case 1: return gemv_rows_m_avx2<1>(c, ldc, a, lda, b, ldb, j0, j1, k, beta);
    case 2: return gemv_rows_m_avx2<2>(c, ldc, a, lda, b, ldb, j0, j1, k, beta);
    case 3: return gemv_rows_m_avx2<3>(c, ldc, a, lda, b, ldb, j0, j1, k, beta);
    default: return gemv_rows_m_avx2<4>(c, ldc, a, lda, b, ldb, j0, j1, k, beta);
  }
}
#endif

void gemv_rows(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m, int64_t j0,
               int64_t j1, int64_t k, float beta) {
#ifdef VGG_X86
  if (isa_at_least(Isa::Avx2Fma)) return gemv_rows_avx2(c, ldc, a, lda, b, ldb, m, j0, j1, k, beta);
#endif
  gemv_rows_portable(c, ldc, a, lda, b, ldb, m, j0, j1, k, beta);
}

}  // namespace

void sgemm(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m, int64_t n,
           int64_t k, bool trans_a, bool trans_b, float beta, GemmEpilogue ep) {
  if (m > 0 && m <= kGemvMaxRows && !trans_a && trans_b && !ep.row_bias && !ep.relu && k > 0) {
    // Blocks of 64 columns handed out first come, first served: a thread that starts late (a worker waking
    // from sleep) takes fewer, instead of the others waiting for its fixed share. Each column is summed
    // by one thread in the same order either way.
    constexpr int64_t kBlock = 64;
    std::atomic<int64_t> next{0};
    parallel_run(
        [&](int, int) {
          for (int64_t j0 = next.fetch_add(kBlock); j0 < n; j0 = next.fetch_add(kBlock))
            gemv_rows(c, ldc, a, lda, b, ldb, m, j0, std::min(n, j0 + kBlock), k, beta);
        },
        static_cast<double>(n) * static_cast<double>(k) < 1e5 ? 1 : (n + kBlock - 1) / kBlock);
    return;
  }
  if (!ep.row_bias && !ep.relu && (beta == 0.0f || beta == 1.0f) &&
      sgemm_sparse_a(c, ldc, a, lda, b, ldb, m, n, k, trans_a, trans_b, beta))
    return;
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (num_threads() == 1 || flops < 2e6) return sgemm_serial(c, ldc, a, lda, b, ldb, m, n, k, trans_a, trans_b, beta, ep);
  // Split the larger output dimension into disjoint slices (multiples of the tile size, so slices of C
  // start on their own cache lines when C is aligned); each thread packs its own panels.
  const bool split_n = n >= m;
  const int64_t total = split_n ? n : m;
  const int64_t align = split_n ? split_cols() : gemm_mr();
  parallel_run(
      [&](int ith, int nth) {
        int64_t begin, end;
        split_range(total, ith, nth, align, &begin, &end);
        if (begin >= end) return;
        if (split_n) {
          const float* bj = trans_b ? b + begin * ldb : b + begin;
          sgemm_serial(c + begin, ldc, a, lda, bj, ldb, m, end - begin, k, trans_a, trans_b, beta, ep);
        } else {
          const float* ai = trans_a ? a + begin : a + begin * lda;
          GemmEpilogue sub = ep;
          if (sub.row_bias) sub.row_bias += begin;
          sgemm_serial(c + begin * ldc, ldc, ai, lda, b, ldb, end - begin, n, k, trans_a, trans_b, beta, sub);
        }
      },
      (total + align - 1) / align);
}

int64_t packed_b_size(int64_t n, int64_t k) { return (n + NR - 1) / NR * NR * k; }

void pack_b_all(float* dst, const float* b, int64_t ldb, bool trans_b, int64_t n, int64_t k) {
  if (n <= 0 || k <= 0) return;
  const int64_t k_step = k_step_of(k), panels = (n + NR - 1) / NR, blocks = (k + k_step - 1) / k_step;
  const int64_t n_padded = panels * NR;
  // One task per (k block, panel), handed out first come, first served; each writes its own panel.
  std::atomic<int64_t> next{0};
  parallel_run(
      [&](int, int) {
        for (int64_t t = next.fetch_add(1); t < blocks * panels; t = next.fetch_add(1)) {
          const int64_t pc = t / panels * k_step, j = t % panels * NR;
          const int64_t kc = std::min(k_step, k - pc);
          pack_b(dst + pc * n_padded + j * kc, b, ldb, trans_b, pc, j, kc, std::min(NR, n - j));
        }
      },
      static_cast<double>(n) * static_cast<double>(k) < 1e5 ? 1 : blocks * panels);
}

void sgemm_packed_b(float* c, int64_t ldc, const float* a, int64_t lda, const float* packed_b, int64_t m, int64_t n,
                    int64_t k, float beta) {
  if (sgemm_sparse_a_packed_b(c, ldc, a, lda, packed_b, m, n, k, beta)) return;
  const int64_t n_padded = (n + NR - 1) / NR * NR;
  auto run = [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    BSource src{nullptr, nullptr, packed_b, n_padded, j0};
    sgemm_serial_source(c + i0 * ldc + j0, ldc, a + i0 * lda, lda, false, src, i1 - i0, j1 - j0, k, beta);
  };
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (num_threads() == 1 || flops < 2e6) return run(0, m, 0, n);
  // The same split as sgemm's: disjoint slices of the larger output dimension, in multiples of the tile.
  const bool split_n = n >= m;
  const int64_t total = split_n ? n : m, align = split_n ? split_cols() : gemm_mr();
  parallel_run(
      [&](int ith, int nth) {
        int64_t begin, end;
        split_range(total, ith, nth, align, &begin, &end);
        if (begin >= end) return;
        if (split_n)
          run(0, m, begin, end);
        else
          run(begin, end, 0, n);
      },
      (total + align - 1) / align);
}

std::string gemm_kernel_name() {
  if (isa_at_least(Isa::Avx512))
    return std::to_string(kAvx512MR) + "x" + std::to_string(NR * kAvx512Panels) + " avx512";
  return isa_at_least(Isa::Avx2Fma) ? "6x16 avx2+fma" : "6x16 portable C++";
}

}  // namespace vgg
