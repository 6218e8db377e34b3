// Sparse-times-dense GEMM. op(A)'s nonzeros are listed row by row (index, value); B is packed block by
// block into 64-column slices (or read in place from the dense GEMM's prepacked panels); each nonzero
// a[i][p] adds a[i][p] * B[p][j:j+64] to eight AVX2 accumulators: one broadcast and eight FMAs reading B
// from L1/L2, near the dense micro-kernel's rate per FMA, for only density * k of the k terms.
#include "sparse_gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include "gemm.h"
#include "isa.h"
#include "threadpool.h"
#include "workspace.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VGG_X86 1
#define VGG_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,popcnt")))
#endif

namespace vgg {
namespace {

constexpr int64_t kSub = 64;              // columns per slice and kernel call: eight 8-float accumulators
constexpr int64_t kBlockN = 512;          // columns of B per packed block
constexpr double kMaxDensity = 0.4;       // above this the dense GEMM is as fast (measured: README)
constexpr double kMinFlops = 4e6;         // below this the listing costs more than it saves
constexpr int64_t kMinColumns = 512;      // and below this: each row's listing serves too few columns

std::atomic<int64_t> calls{0};

bool enabled() {
  static const bool on = [] {
    const char* v = std::getenv("VGG_SPARSE_GEMM");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return on;
}

inline float element(const float* a, int64_t lda, bool trans_a, int64_t i, int64_t p) {
  return trans_a ? a[p * lda + i] : a[i * lda + p];
}

// The fraction of nonzeros among up to 4096 elements of op(A) spread over the whole matrix.
double sampled_density(const float* a, int64_t lda, bool trans_a, int64_t m, int64_t k) {
  const uint64_t total = static_cast<uint64_t>(m) * static_cast<uint64_t>(k);
  const uint64_t samples = std::min<uint64_t>(total, 4096);
  uint64_t nonzero = 0;
  for (uint64_t s = 0; s < samples; s++) {
    const uint64_t e = (s * total / samples + (s * 2654435761u) % (total / samples)) % total;
    nonzero += element(a, lda, trans_a, static_cast<int64_t>(e / k), static_cast<int64_t>(e % k)) != 0.0f;
  }
  return static_cast<double>(nonzero) / static_cast<double>(samples);
}

// The nonzeros of src[p_begin:k] appended to idx/val (index, value) in ascending index; returns how many
// (NaN counts).
// Without branches: every element is stored at the next free slot, which moves on only past a nonzero.
int32_t list_row_portable(int32_t* idx, float* val, const float* src, int64_t p_begin, int64_t k) {
  int32_t c = 0;
  for (int64_t p = p_begin; p < k; p++) {
    const float v = src[p];
    idx[c] = static_cast<int32_t>(p);
    val[c] = v;
    c += v != 0.0f;
  }
  return c;
}

#ifdef VGG_X86
// For each 8-bit mask, the lanes whose bit is set, moved to the front (a left-pack permutation).
struct LeftPack {
  alignas(32) int32_t perm[256][8];
  LeftPack() {
    for (int mask = 0; mask < 256; mask++) {
      int n = 0;
      for (int lane = 0; lane < 8; lane++)
        if (mask >> lane & 1) perm[mask][n++] = lane;
      while (n < 8) perm[mask][n++] = 0;
    }
  }
};

// Eight elements at a time: compare with zero, left-pack values and indices, store all eight and move on by
// the number of nonzeros (the stores never pass the row: the slot is never ahead of the element).
__attribute__((target("avx2,popcnt"))) int32_t list_row_avx2(int32_t* idx, float* val, const float* src, int64_t k) {
  static const LeftPack table;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int32_t c = 0;
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) {
    const __m256 v = _mm256_loadu_ps(src + p);
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_UQ));
    const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(table.perm[mask]));
    _mm256_storeu_ps(val + c, _mm256_permutevar8x32_ps(v, perm));
    const __m256i at = _mm256_add_epi32(lanes, _mm256_set1_epi32(static_cast<int32_t>(p)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + c), _mm256_permutevar8x32_epi32(at, perm));
    c += __builtin_popcount(static_cast<unsigned>(mask));
  }
  return c + list_row_portable(idx + c, val + c, src, p, k);
}
#endif

#ifdef VGG_X86
// Sixteen at a time with AVX-512's compress into a register (a compress straight to memory is microcoded
// and slow on Zen 4), then a whole-vector store, as list_row_avx2 does.
VGG_AVX512 int32_t list_row_avx512(int32_t* idx, float* val, const float* src, int64_t k) {
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int32_t c = 0;
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    const __m512 v = _mm512_loadu_ps(src + p);
    const __mmask16 mask = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    _mm512_storeu_ps(val + c, _mm512_maskz_compress_ps(mask, v));
    const __m512i at = _mm512_add_epi32(lanes, _mm512_set1_epi32(static_cast<int32_t>(p)));
    _mm512_storeu_si512(idx + c, _mm512_maskz_compress_epi32(mask, at));
    c += __builtin_popcount(static_cast<unsigned>(mask));
  }
  return c + list_row_portable(idx + c, val + c, src, p, k);
}
#endif

int32_t list_row(int32_t* idx, float* val, const float* src, int64_t k) {
#ifdef VGG_X86
  if (isa_at_least(Isa::Avx512)) return list_row_avx512(idx, val, src, k);
  if (isa_at_least(Isa::Avx2Fma)) return list_row_avx2(idx, val, src, k);
#endif
  return list_row_portable(idx, val, src, 0, k);
}

// Rows [i0, i1) of op(A) listed: row i's nonzeros at idx/val[(i - i0) * k ...], count[i - i0] of them. For
// op(A) = A^T, eight rows at a time are first gathered from A's columns into a contiguous tile.
// tile holds 8 * k floats.
void list_rows(int32_t* idx, float* val, int32_t* count, float* tile, const float* a, int64_t lda, bool trans_a,
               int64_t i0, int64_t i1, int64_t k) {
  if (!trans_a) {
    for (int64_t r = 0; r < i1 - i0; r++) count[r] = list_row(idx + r * k, val + r * k, a + (i0 + r) * lda, k);
    return;
  }
  for (int64_t r0 = 0; r0 < i1 - i0; r0 += 8) {
    const int64_t rows = std::min<int64_t>(8, i1 - i0 - r0);
    for (int64_t p = 0; p < k; p++) {
      const float* src = a + p * lda + i0 + r0;
      for (int64_t r = 0; r < rows; r++) tile[r * k + p] = src[r];
    }
    for (int64_t r = 0; r < rows; r++)
      count[r0 + r] = list_row(idx + (r0 + r) * k, val + (r0 + r) * k, &tile[r * k], k);
  }
}

// Packs op(B)[p0:p0+kb, j0:j0+nc] as 64-column slices, each (kb, 64) row-major and zero-padded to 64
// columns: slice s at dst + s * kb * 64. A nonzero's eight loads are then four whole cache lines.
void pack_slices_portable(float* dst, const float* b, int64_t ldb, bool trans_b, int64_t p0, int64_t j0, int64_t kb,
                          int64_t nc) {
  // Row by row, so each row of the stored B is read front to back once (a row of B, or a column of B^T).
  for (int64_t p = 0; p < kb; p++)
    for (int64_t s = 0; s < nc; s += kSub) {
      const int64_t cols = std::min(kSub, nc - s);
      float* dp = dst + s * kb + p * kSub;
      if (trans_b) {
        for (int64_t j = 0; j < cols; j++) dp[j] = b[(j0 + s + j) * ldb + p0 + p];
      } else {
        std::memcpy(dp, b + (p0 + p) * ldb + j0 + s, static_cast<size_t>(cols) * sizeof(float));
      }
      for (int64_t j = cols; j < kSub; j++) dp[j] = 0.0f;
    }
}

#ifdef VGG_X86
// The transposed case in 8x8 blocks: eight rows of the stored B (eight columns of op(B)) by eight p.
__attribute__((target("avx2"))) void pack_slices_transposed_avx2(float* dst, const float* b, int64_t ldb,
                                                                 int64_t p0, int64_t j0, int64_t kb, int64_t nc) {
  const int64_t kb8 = kb / 8 * 8;
  for (int64_t s = 0; s < nc; s += kSub) {
    float* d = dst + s * kb;
    for (int64_t g = 0; g < kSub; g += 8) {
      const float* rows[8];
      for (int r = 0; r < 8; r++) {
        const int64_t j = s + g + r;
        rows[r] = j < nc ? b + (j0 + j) * ldb + p0 : nullptr;
      }
      for (int64_t p = 0; p < kb8; p += 8) transpose_8x8_avx2(d + p * kSub + g, kSub, rows, p);
      for (int64_t p = kb8; p < kb; p++)
        for (int r = 0; r < 8; r++) d[p * kSub + g + r] = rows[r] ? rows[r][p] : 0.0f;
    }
  }
}
#endif

void pack_slices(float* dst, const float* b, int64_t ldb, bool trans_b, int64_t p0, int64_t j0, int64_t kb,
                 int64_t nc) {
#ifdef VGG_X86
  if (trans_b && isa_at_least(Isa::Avx2Fma)) return pack_slices_transposed_avx2(dst, b, ldb, p0, j0, kb, nc);
#endif
  pack_slices_portable(dst, b, ldb, trans_b, p0, j0, kb, nc);
}

// Where a block of B's rows lie: row p (from p0) at rows + (p - p0) * row_stride, its 16-column panels
// panel_stride apart. A 64-column slice (pack_slices): 64 and 16; the GEMM's own packed B: 16 and kc * 16.
struct RowsView {
  const float* rows;
  int64_t p0, row_stride, panel_stride;
  const float* row(int32_t p) const { return rows + (static_cast<int64_t>(p) - p0) * row_stride; }
};

// c[0:cols] (+)= sum over t < nnz of val[t] * B[idx[t]][0:cols] (cols <= 64), the terms in order, each
// column alone: the same arithmetic for a column whatever the kernel and layout, so the results do not
// depend on which of the two sparse entry points ran.
using RowKernel = void (*)(float* c, RowsView b, const int32_t* idx, const float* val, int64_t nnz, bool accumulate,
                           int64_t cols);

void row_portable(float* c, RowsView b, const int32_t* idx, const float* val, int64_t nnz, bool accumulate,
                  int64_t cols) {
  float acc[kSub] = {};
  const int64_t panels = (cols + 15) / 16;
  for (int64_t t = 0; t < nnz; t++) {
    const float v = val[t];
    const float* row = b.row(idx[t]);
    for (int64_t q = 0; q < panels; q++)
      for (int64_t j = 0; j < 16; j++) acc[q * 16 + j] += v * row[q * b.panel_stride + j];
  }
  for (int64_t j = 0; j < cols; j++) c[j] = accumulate ? c[j] + acc[j] : acc[j];
}

#ifdef VGG_X86
// A whole slice in eight named accumulators, written out so that the compiler keeps them in registers
// (an array of them was stored to the stack on every iteration).
__attribute__((target("avx2,fma"))) void row_avx2(float* c, RowsView b, const int32_t* idx, const float* val,
                                                  int64_t nnz, bool accumulate, int64_t) {
  __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  const int64_t ps = b.panel_stride;
  for (int64_t t = 0; t < nnz; t++) {
    const __m256 v = _mm256_broadcast_ss(val + t);
    const float* row = b.row(idx[t]);
    c0 = _mm256_fmadd_ps(v, _mm256_load_ps(row), c0);
    c1 = _mm256_fmadd_ps(v, _mm256_load_ps(row + 8), c1);
    c2 = _mm256_fmadd_ps(v, _mm256_load_ps(row + ps), c2);
    c3 = _mm256_fmadd_ps(v, _mm256_load_ps(row + ps + 8), c3);
    c4 = _mm256_fmadd_ps(v, _mm256_load_ps(row + 2 * ps), c4);
    c5 = _mm256_fmadd_ps(v, _mm256_load_ps(row + 2 * ps + 8), c5);
    c6 = _mm256_fmadd_ps(v, _mm256_load_ps(row + 3 * ps), c6);
    c7 = _mm256_fmadd_ps(v, _mm256_load_ps(row + 3 * ps + 8), c7);
  }
  if (accumulate) {
    c0 = _mm256_add_ps(_mm256_loadu_ps(c), c0);
    c1 = _mm256_add_ps(_mm256_loadu_ps(c + 8), c1);
    c2 = _mm256_add_ps(_mm256_loadu_ps(c + 16), c2);
    c3 = _mm256_add_ps(_mm256_loadu_ps(c + 24), c3);
    c4 = _mm256_add_ps(_mm256_loadu_ps(c + 32), c4);
    c5 = _mm256_add_ps(_mm256_loadu_ps(c + 40), c5);
    c6 = _mm256_add_ps(_mm256_loadu_ps(c + 48), c6);
    c7 = _mm256_add_ps(_mm256_loadu_ps(c + 56), c7);
  }
  _mm256_storeu_ps(c, c0);
  _mm256_storeu_ps(c + 8, c1);
  _mm256_storeu_ps(c + 16, c2);
  _mm256_storeu_ps(c + 24, c3);
  _mm256_storeu_ps(c + 32, c4);
  _mm256_storeu_ps(c + 40, c5);
  _mm256_storeu_ps(c + 48, c6);
  _mm256_storeu_ps(c + 56, c7);
}

// The last slice of a width that is not a multiple of 64: only its panels are read (the GEMM's packed B
// has no more), with the same FMAs per column as row_avx2.
__attribute__((target("avx2,fma"))) void row_avx2_edge(float* c, RowsView b, const int32_t* idx, const float* val,
                                                       int64_t nnz, bool accumulate, int64_t cols) {
  __m256 acc[8];
  for (int q = 0; q < 8; q++) acc[q] = _mm256_setzero_ps();
  const int64_t halves = (cols + 15) / 16 * 2;
  for (int64_t t = 0; t < nnz; t++) {
    const __m256 v = _mm256_broadcast_ss(val + t);
    const float* row = b.row(idx[t]);
    for (int64_t h = 0; h < halves; h++)
      acc[h] = _mm256_fmadd_ps(v, _mm256_load_ps(row + h / 2 * b.panel_stride + h % 2 * 8), acc[h]);
  }
  alignas(32) float tmp[kSub];
  for (int q = 0; q < 8; q++) _mm256_store_ps(tmp + q * 8, acc[q]);
  for (int64_t j = 0; j < cols; j++) c[j] = accumulate ? c[j] + tmp[j] : tmp[j];
}
#endif

#ifdef VGG_X86
// A 64-column slice as four 16-float panels in four zmm accumulators, the same FMA per column and term as
// row_avx2 (so the two levels give the same bits); an edge slice reads only its own panels.
template <bool Edge>
VGG_AVX512 void row_avx512(float* c, RowsView b, const int32_t* idx, const float* val, int64_t nnz, bool accumulate,
                           int64_t cols) {
  __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
  const int64_t ps = b.panel_stride, panels = Edge ? (cols + 15) / 16 : 4;
  for (int64_t t = 0; t < nnz; t++) {
    const __m512 v = _mm512_set1_ps(val[t]);
    const float* row = b.row(idx[t]);
    c0 = _mm512_fmadd_ps(v, _mm512_load_ps(row), c0);
    if (!Edge || panels > 1) c1 = _mm512_fmadd_ps(v, _mm512_load_ps(row + ps), c1);
    if (!Edge || panels > 2) c2 = _mm512_fmadd_ps(v, _mm512_load_ps(row + 2 * ps), c2);
    if (!Edge || panels > 3) c3 = _mm512_fmadd_ps(v, _mm512_load_ps(row + 3 * ps), c3);
  }
  const __m512 acc[4] = {c0, c1, c2, c3};
  for (int q = 0; q < 4; q++) {
    const int64_t left = cols - q * 16;
    if (left <= 0) break;
    const __mmask16 m = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1);
    __m512 r = acc[q];
    if (accumulate) r = _mm512_add_ps(_mm512_maskz_loadu_ps(m, c + q * 16), r);
    _mm512_mask_storeu_ps(c + q * 16, m, r);
  }
}
#endif

RowKernel row_kernel(int64_t cols) {
#ifdef VGG_X86
  if (isa_at_least(Isa::Avx512)) return cols == kSub ? row_avx512<false> : row_avx512<true>;
  if (isa_at_least(Isa::Avx2Fma)) return cols == kSub ? row_avx2 : row_avx2_edge;
#endif
  return row_portable;
}

#ifdef VGG_X86
// Whether any of x[0:n8] (n8 a multiple of 8) is Inf or NaN: v - v is NaN exactly for those.
__attribute__((target("avx2"))) bool any_nonfinite_avx2(const float* x, int64_t n8) {
  __m256 bad = _mm256_setzero_ps();
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), _mm256_setzero_ps(), _CMP_NEQ_UQ));
  }
  return _mm256_movemask_ps(bad) != 0;
}
#endif

// Whether any of the n floats is Inf or NaN.
bool any_nonfinite(const float* x, int64_t n) {
  int64_t i = 0;
#ifdef VGG_X86
  if (isa_at_least(Isa::Avx2Fma)) {
    i = n / 8 * 8;
    if (any_nonfinite_avx2(x, i)) return true;
  }
#endif
  for (; i < n; i++)
    if (!std::isfinite(x[i])) return true;
  return false;
}

// What a thread needs besides C, kept by that thread and reused by later calls: the listing of the rows
// of op(A) it works on (each thread lists its own, so no cache line written by one core is read by the
// other), the bounds of each row's nonzeros within the current block, and a packed block of B.
struct Workspace {
  std::vector<int32_t> idx, count, begin, end;
  std::vector<float> val, tile;
  float* packed = static_cast<float*>(workspace_alloc(kGemmKC * kBlockN * sizeof(float)));
  ~Workspace() { std::free(packed); }
  // False when the memory could not be had.
  bool reserve(int64_t rows, int64_t k) {
    if (!packed) return false;
    try {
      const size_t slots = static_cast<size_t>(rows) * static_cast<size_t>(k);
      if (idx.size() < slots) {
        idx.resize(slots);
        val.resize(slots);
      }
      if (tile.size() < static_cast<size_t>(8 * k)) tile.resize(static_cast<size_t>(8 * k));
      if (count.size() < static_cast<size_t>(rows)) {
        count.resize(static_cast<size_t>(rows));
        begin.resize(static_cast<size_t>(rows));
        end.resize(static_cast<size_t>(rows));
      }
    } catch (const std::bad_alloc&) {
      return false;
    }
    return true;
  }
};

struct Problem {
  float* c;
  int64_t ldc;
  const float* a;
  int64_t lda;
  bool trans_a;
  const float* b;  // op(B) from b, ldb, trans_b, or already packed by pack_b_all (gemm.h)
  int64_t ldb;
  bool trans_b;
  const float* prepacked;
  int64_t m, n, k;
  float beta;

  // op(B)[p][j], for the rare path only.
  float b_at(int64_t p, int64_t j) const {
    if (!prepacked) return trans_b ? b[j * ldb + p] : b[p * ldb + j];
    const int64_t step = gemm_k_step(k), pc = p / step * step, kc = std::min(step, k - pc);
    return prepacked[pc * padded_n() + j / kGemmNR * kGemmNR * kc + (p - pc) * kGemmNR + j % kGemmNR];
  }
  int64_t padded_n() const { return (n + kGemmNR - 1) / kGemmNR * kGemmNR; }
};

// Rows [i0, i1) x columns [j0, j1) of C. Sets *nonfinite when a block of B holds an Inf or NaN.
// k goes in the dense GEMM's blocks (gemm_k_step), so both layouts of B sum the same terms in the same
// order. Each block of B (k_step x kBlockN, in L2) is applied one 64-column slice at a time to every row.
void compute_tile(const Problem& pr, int64_t i0, int64_t i1, int64_t j0, int64_t j1, bool* nonfinite) {
  static thread_local Workspace ws;
  const int64_t rows = i1 - i0;
  if (!ws.reserve(rows, pr.k)) {
    // Out of memory for the listing: this tile is computed densely instead.
    const float* a = pr.trans_a ? pr.a + i0 : pr.a + i0 * pr.lda;
    if (pr.prepacked) {
      BSource src{nullptr, nullptr, pr.prepacked, pr.padded_n(), j0};
      return sgemm_serial_source(pr.c + i0 * pr.ldc + j0, pr.ldc, a, pr.lda, pr.trans_a, src, rows, j1 - j0, pr.k,
                                 pr.beta);
    }
    const float* b = pr.trans_b ? pr.b + j0 * pr.ldb : pr.b + j0;
    return sgemm_serial(pr.c + i0 * pr.ldc + j0, pr.ldc, a, pr.lda, b, pr.ldb, rows, j1 - j0, pr.k, pr.trans_a,
                        pr.trans_b, pr.beta);
  }
  list_rows(ws.idx.data(), ws.val.data(), ws.count.data(), ws.tile.data(), pr.a, pr.lda, pr.trans_a, i0, i1, pr.k);
  int32_t* begin = ws.begin.data();
  int32_t* end = ws.end.data();
  const int32_t* idx = ws.idx.data();
  const float* val = ws.val.data();
  const int32_t* count = ws.count.data();
  const int64_t k_step = gemm_k_step(pr.k);
  for (int64_t jc = j0; jc < j1; jc += kBlockN) {
    const int64_t nb = std::min(kBlockN, j1 - jc);
    std::fill(end, end + rows, 0);
    for (int64_t pc = 0; pc < pr.k; pc += k_step) {
      const int64_t kb = std::min(k_step, pr.k - pc), p_end = pc + kb;
      // The block's slices: packed here, or read in place from the GEMM's packed B.
      const float* block = ws.packed;
      // Either way the slice of columns [s, s + 64) starts s * kb floats into the block.
      int64_t row_stride = kSub, panel_stride = kGemmNR;
      if (pr.prepacked) {
        block = pr.prepacked + pc * pr.padded_n() + jc * kb;
        row_stride = kGemmNR;
        panel_stride = kGemmNR * kb;
      } else {
        pack_slices(ws.packed, pr.b, pr.ldb, pr.trans_b, pc, jc, kb, nb);
      }
      const int64_t block_floats = pr.prepacked ? (nb + kGemmNR - 1) / kGemmNR * kGemmNR * kb : (nb + kSub - 1) / kSub * kSub * kb;
      if (any_nonfinite(block, block_floats)) *nonfinite = true;
      // Each row's nonzeros in [pc, p_end): they follow those of the previous block.
      for (int64_t r = 0; r < rows; r++) {
        const int32_t* ri = idx + r * pr.k;
        int32_t t = end[r];
        begin[r] = t;
        while (t < count[r] && ri[t] < p_end) t++;
        end[r] = t;
      }
      const bool accumulate = pc > 0 || pr.beta != 0.0f;
      for (int64_t s = 0; s < nb; s += kSub) {
        const int64_t cols = std::min(kSub, nb - s);
        const RowKernel kernel = row_kernel(cols);
        const RowsView view{block + s * kb, pc, row_stride, panel_stride};
        for (int64_t r = 0; r < rows; r++) {
          const int32_t t0 = begin[r], t1 = end[r];
          if (t1 == t0 && accumulate) continue;  // nothing to add to this row in this block
          kernel(pr.c + (i0 + r) * pr.ldc + jc + s, view, idx + r * pr.k + t0, val + r * pr.k + t0, t1 - t0,
                 accumulate, cols);
        }
      }
    }
  }
}

// The dense product gives NaN where a zero of A meets an Inf or NaN of B; the sparse sum skipped those
// terms, so they are put back here (a rare path: B held a non-finite value).
void restore_nan(const Problem& pr) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t p = 0; p < pr.k; p++)
    for (int64_t j = 0; j < pr.n; j++) {
      if (std::isfinite(pr.b_at(p, j))) continue;
      for (int64_t i = 0; i < pr.m; i++)
        if (element(pr.a, pr.lda, pr.trans_a, i, p) == 0.0f) pr.c[i * pr.ldc + j] = nan;
    }
}

// Whether op(A) qualifies: on, large enough, not too large to list, and sparse enough in a fixed sample
// (so the same A always takes the same path, whatever the threads).
bool qualifies(const float* a, int64_t lda, bool trans_a, int64_t m, int64_t n, int64_t k) {
  if (!enabled() || m <= 0 || n < kMinColumns || k <= 0 || k > INT32_MAX) return false;
  if (2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) < kMinFlops) return false;
  // A thread may list all of op(A), at 8 bytes per element, and keeps that memory for later calls: past 2^23
  // elements (64 MiB; VGG-16's classifier input at batch 256 is 6.4M) the dense GEMM runs.
  if (static_cast<double>(m) * static_cast<double>(k) > static_cast<double>(int64_t{1} << 23)) return false;
  return sampled_density(a, lda, trans_a, m, k) <= kMaxDensity;
}

void run(const Problem& pr) {
  calls.fetch_add(1, std::memory_order_relaxed);
  // Split the larger dimension over the threads: by columns (whole 64-column slices) each thread lists all
  // of op(A), by rows each packs all of B, so the smaller of the two is done twice. Rows also leave each
  // thread a contiguous part of C, as the next kernel (an optimiser step over the weight gradient) splits it.
  const int threads = num_threads();
  const int64_t column_units = (pr.n + kSub - 1) / kSub;
  const bool split_n = column_units >= threads && (pr.n > pr.m || pr.m < threads);
  std::vector<char> nonfinite(static_cast<size_t>(threads), 0);
  parallel_run(
      [&](int ith, int nth) {
        int64_t begin, end;
        bool bad = false;
        if (split_n) {
          split_range(pr.n, ith, nth, kSub, &begin, &end);
          if (begin < end) compute_tile(pr, 0, pr.m, begin, end, &bad);
        } else {
          split_range(pr.m, ith, nth, 1, &begin, &end);
          if (begin < end) compute_tile(pr, begin, end, 0, pr.n, &bad);
        }
        nonfinite[ith] = bad;
      },
      split_n ? column_units : pr.m);
  if (std::any_of(nonfinite.begin(), nonfinite.end(), [](char f) { return f != 0; })) restore_nan(pr);
}

}  // namespace

double sparse_gemm_max_density() { return kMaxDensity; }
bool sparse_gemm_enabled() { return enabled(); }
int64_t sparse_gemm_calls() { return calls.load(std::memory_order_relaxed); }

bool sgemm_sparse_a(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m,
                    int64_t n, int64_t k, bool trans_a, bool trans_b, float beta) {
  if (!qualifies(a, lda, trans_a, m, n, k)) return false;
  run(Problem{c, ldc, a, lda, trans_a, b, ldb, trans_b, nullptr, m, n, k, beta});
  return true;
}

bool sgemm_sparse_a_packed_b(float* c, int64_t ldc, const float* a, int64_t lda, const float* packed_b, int64_t m,
                             int64_t n, int64_t k, float beta) {
  if (!qualifies(a, lda, false, m, n, k)) return false;
  run(Problem{c, ldc, a, lda, false, nullptr, 0, false, packed_b, m, n, k, beta});
  return true;
}

std::string sparse_gemm_kernel_name() {
  return std::string("sparse x dense, 64 columns ") +
         (isa_at_least(Isa::Avx512) ? "avx512" : isa_at_least(Isa::Avx2Fma) ? "avx2+fma" : "portable C++");
}

}  // namespace vgg
