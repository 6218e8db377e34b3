// The bf16 GEMM: C (float32) = op(A) op(B) with both operands rounded to bf16 as they are packed.
//
// Packing: k is taken in pairs, and each 32-bit word holds the bf16 of two consecutive k (k even in the
// low half), the operand layout of VDPBF16PS, which adds both products of a pair into a float32 lane.
// A is packed in row panels of kMR rows (word [kp][r]), B in column panels of kNR columns (word [kp][j]);
// an odd k or an edge panel is padded with zeros, which add nothing (a zero pair times any pair is 0,
// and padded rows and columns are never stored). Blocking as BLIS: a B block (kKC x kNC) shared by the
// row blocks (kMC x kKC) of A, a B micro-panel kept in L1 while the A panels of a row block stream past it.
// Each C element sums its k blocks in order, whatever the thread count.
#include <algorithm>
#include <atomic>
#include <new>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "bf16.h"
#include "threadpool.h"
#include "workspace.h"

namespace vgg {
namespace {

constexpr int kMR = 12;        // rows of the micro-tile: 12 x 2 zmm accumulators, 24 of the 32 registers
constexpr int kNR = 32;        // columns: two zmm of 16 float32 lanes
constexpr int64_t kKC = 256;   // k per block (128 pairs: a 16 KB B micro-panel)
constexpr int64_t kMC = 240;   // rows per A block (20 panels, 120 KB)
constexpr int64_t kNC = 1024;  // columns per B block (512 KB)
static_assert(kMC % kMR == 0 && kNC % kNR == 0 && kKC % 2 == 0, "whole panels and pairs per block");

inline uint32_t pair_word(float even, float odd) {
  return static_cast<uint32_t>(bf16_bits(even)) | static_cast<uint32_t>(bf16_bits(odd)) << 16;
}

struct Operand {
  const float* data;
  int64_t ld;
  bool trans;
  // Element [r][p] of a (rows, k) view is x[r*ld + p], or x[p*ld + r] when transposed.
};

#if defined(__x86_64__) || defined(__i386__)
#define VGG_BF16_TARGET __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))

// 16 words from 32 floats: word q = pair(src[2q], src[2q + 1]), rounded as bf16_bits does (the
// instruction VCVTNE2PS2BF16 would flush denormals and keep NaN payloads, so the rounding is integer).
VGG_BF16_TARGET inline __m512i pair_words_avx512(const float* src) {
  const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  const __m512i qnan = _mm512_set1_epi32(0x7fc00000);
  __m512i v[2];
  for (int h = 0; h < 2; h++) {
    const __m512i u = _mm512_loadu_si512(src + 16 * h);
    const __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
    v[h] = _mm512_mask_mov_epi32(rounded, nan, qnan);
  }
  // The upper 16-bit halves of the 32 lanes, in order: 16-bit element 2i + 1 of v[0]:v[1].
  alignas(64) static const uint16_t odd_halves[32] = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21,
                                                      23, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43,
                                                      45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
  return _mm512_permutex2var_epi16(v[0], _mm512_load_si512(odd_halves), v[1]);
}

// The first pairs (a multiple of 16) of `rows` contiguous rows starting at x's row r0, k from p0, into
// panel[kp * width + r]; returns how many pairs it packed.
VGG_BF16_TARGET int64_t pack_rows_avx512(uint32_t* panel, const Operand& x, int64_t r0, int64_t rows, int64_t p0,
                                         int64_t pairs, int width) {
  alignas(64) uint32_t words[kNR][16];
  const int64_t whole = pairs / 16 * 16;
  for (int64_t kp0 = 0; kp0 < whole; kp0 += 16) {
    for (int64_t r = 0; r < rows; r++)
      _mm512_store_si512(words[r], pair_words_avx512(x.data + (r0 + r) * x.ld + p0 + 2 * kp0));
    for (int q = 0; q < 16; q++)
      for (int64_t r = 0; r < rows; r++) panel[(kp0 + q) * width + r] = words[r][q];
  }
  return whole;
}
#endif

// Packs rows [r0, r0 + rows) x k [p0, p0 + kc) of the (R, K) view x into panels of `width` rows:
// dst[panel * kpc * width + kp * width + r] = pair(x[r][p0 + 2kp], x[r][p0 + 2kp + 1]), zero past R or K.
// Reads follow x's memory order: along a row of x, or across rows when x is transposed.
void pack_panels(uint32_t* dst, const Operand& x, int64_t R, int64_t r0, int64_t rows, int64_t p0, int64_t kc,
                 int width) {
  const int64_t kpc = (kc + 1) / 2, pairs = kc / 2;
  for (int64_t pr = 0; pr < rows; pr += width) {
    uint32_t* panel = dst + pr / width * kpc * width;
    const int64_t valid = std::min<int64_t>({width, rows - pr, R - r0 - pr});
    for (int64_t kp = 0; kp < kpc; kp++)
      for (int64_t r = valid; r < width; r++) panel[kp * width + r] = 0;
    if (!x.trans) {
      int64_t kp0 = 0;
#if defined(__x86_64__) || defined(__i386__)
      if (bf16_path() == Bf16Path::Avx512Bf16) kp0 = pack_rows_avx512(panel, x, r0 + pr, valid, p0, pairs, width);
#endif
      for (int64_t r = 0; r < valid; r++) {
        const float* src = x.data + (r0 + pr + r) * x.ld + p0;
        for (int64_t kp = kp0; kp < pairs; kp++) panel[kp * width + r] = pair_word(src[2 * kp], src[2 * kp + 1]);
        if (kc % 2) panel[pairs * width + r] = pair_word(src[kc - 1], 0.0f);
      }
    } else {
      const float* src = x.data + p0 * x.ld + r0 + pr;
      for (int64_t kp = 0; kp < pairs; kp++) {
        const float* even = src + 2 * kp * x.ld;
        const float* odd = even + x.ld;
        for (int64_t r = 0; r < valid; r++) panel[kp * width + r] = pair_word(even[r], odd[r]);
      }
      if (kc % 2) {
        const float* even = src + (kc - 1) * x.ld;
        for (int64_t r = 0; r < valid; r++) panel[pairs * width + r] = pair_word(even[r], 0.0f);
      }
    }
  }
}

// Adds (or, with overwrite, stores) the tile to c's top-left mr x nr corner.
inline void store_tile(float* c, int64_t ldc, const float (*tile)[kNR], int64_t mr, int64_t nr, bool overwrite) {
  for (int64_t r = 0; r < mr; r++)
    for (int64_t j = 0; j < nr; j++) c[r * ldc + j] = overwrite ? tile[r][j] : c[r * ldc + j] + tile[r][j];
}

// The emulation: each pair adds its odd product, then its even one, as VDPBF16PS's definition orders them;
// every product of two bf16 values is exact in float32, so only the order of the sums is float rounding.
void kernel_emulated(int64_t kpc, const uint32_t* ap, const uint32_t* bp, float* c, int64_t ldc, int64_t mr,
                     int64_t nr, bool overwrite) {
  float acc[kMR][kNR] = {};
  for (int64_t kp = 0; kp < kpc; kp++, ap += kMR, bp += kNR) {
    float b_even[kNR], b_odd[kNR];
    for (int j = 0; j < kNR; j++) {
      b_even[j] = bf16_to_float(static_cast<uint16_t>(bp[j]));
      b_odd[j] = bf16_to_float(static_cast<uint16_t>(bp[j] >> 16));
    }
    for (int r = 0; r < kMR; r++) {
      const float a_even = bf16_to_float(static_cast<uint16_t>(ap[r]));
      const float a_odd = bf16_to_float(static_cast<uint16_t>(ap[r] >> 16));
      for (int j = 0; j < kNR; j++) {
        acc[r][j] += a_odd * b_odd[j];
        acc[r][j] += a_even * b_even[j];
      }
    }
  }
  store_tile(c, ldc, acc, mr, nr, overwrite);
}

#if defined(__x86_64__) || defined(__i386__)
VGG_BF16_TARGET void kernel_avx512bf16(int64_t kpc, const uint32_t* ap, const uint32_t* bp, float* c, int64_t ldc,
                                       int64_t mr, int64_t nr, bool overwrite) {
  __m512 acc[kMR][2];
#pragma GCC unroll 12
  for (int r = 0; r < kMR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < kpc; kp++, ap += kMR, bp += kNR) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + 16);
#pragma GCC unroll 12
    for (int r = 0; r < kMR; r++) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(ap[r]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
    }
  }
  const __mmask16 m0 = nr >= 16 ? 0xffff : static_cast<__mmask16>((1u << nr) - 1);
  const __mmask16 m1 = nr >= 32 ? 0xffff : nr > 16 ? static_cast<__mmask16>((1u << (nr - 16)) - 1) : 0;
#pragma GCC unroll 12
  for (int r = 0; r < kMR; r++) {
    if (r >= mr) break;
    float* row = c + r * ldc;
    __m512 v0 = acc[r][0], v1 = acc[r][1];
    if (!overwrite) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row + 16));
    }
    _mm512_mask_storeu_ps(row, m0, v0);
    _mm512_mask_storeu_ps(row + 16, m1, v1);
  }
}
#endif

using Kernel = void (*)(int64_t, const uint32_t*, const uint32_t*, float*, int64_t, int64_t, int64_t, bool);

Kernel chosen_kernel() {
#if defined(__x86_64__) || defined(__i386__)
  if (bf16_path() == Bf16Path::Avx512Bf16) return kernel_avx512bf16;
#endif
  return kernel_emulated;
}

// A 64-byte aligned buffer of `count` words, private to the thread and reused across calls (slot 0: A, 1: B).
uint32_t* scratch(int slot, size_t count) {
  struct Buffers {
    void* data[2] = {};
    size_t size[2] = {};
    ~Buffers() {
      for (void* p : data) std::free(p);
    }
  };
  static thread_local Buffers buffers;
  if (buffers.size[slot] < count) {
    std::free(buffers.data[slot]);
    buffers.data[slot] = workspace_alloc(count * sizeof(uint32_t));
    buffers.size[slot] = buffers.data[slot] ? count : 0;
  }
  return static_cast<uint32_t*>(buffers.data[slot]);
}

// C[i0:i0+m, j0:j0+n] of the whole (M, N, K) product, on the calling thread.
bool gemm_block(float* c, int64_t ldc, const Operand& a, const Operand& b, int64_t M, int64_t N, int64_t K,
                int64_t i0, int64_t m, int64_t j0, int64_t n, float beta) {
  const Kernel kernel = chosen_kernel();
  uint32_t* ap = scratch(0, static_cast<size_t>(kMC * kKC / 2));  // kMC is a multiple of kMR
  uint32_t* bp = scratch(1, static_cast<size_t>(kNC * kKC / 2));  // and kNC of kNR
  if (!ap || !bp) return false;
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = std::min(kNC, n - jc);
    for (int64_t pc = 0; pc < K; pc += kKC) {
      const int64_t kc = std::min(kKC, K - pc), kpc = (kc + 1) / 2;
      pack_panels(bp, b, N, j0 + jc, nc, pc, kc, kNR);
      const bool overwrite = pc == 0 && beta == 0.0f;
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        pack_panels(ap, a, M, i0 + ic, mc, pc, kc, kMR);
        for (int64_t jr = 0; jr < nc; jr += kNR)
          for (int64_t ir = 0; ir < mc; ir += kMR)
            kernel(kpc, ap + ir / kMR * kpc * kMR, bp + jr / kNR * kpc * kNR, c + (ic + ir) * ldc + jc + jr, ldc,
                   std::min<int64_t>(kMR, mc - ir), std::min<int64_t>(kNR, nc - jr), overwrite);
      }
    }
  }
  return true;
}

}  // namespace

void bf16_gemm(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m,
               int64_t n, int64_t k, bool trans_a, bool trans_b, float beta) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (beta == 0.0f)
      for (int64_t i = 0; i < m; i++) std::memset(c + i * ldc, 0, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  // op(A) as an (m, k) view and op(B) as an (n, k) view (its transpose), so one packer serves both.
  const Operand av{a, lda, trans_a}, bv{b, ldb, !trans_b};
  // Split C over the threads along its longer side, in whole micro-tiles; small products run serially.
  const bool by_columns = n >= m;
  const int64_t units = by_columns ? (n + kNR - 1) / kNR : (m + kMR - 1) / kMR;
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const int64_t tasks = flops < 4e6 ? 1 : units;
  std::atomic<bool> ok{true};
  parallel_run(
      [&](int ith, int nth) {
        int64_t begin, end;
        split_range(by_columns ? n : m, ith, nth, by_columns ? kNR : kMR, &begin, &end);
        if (begin >= end) return;
        const bool done = by_columns
                              ? gemm_block(c + begin, ldc, av, bv, m, n, k, 0, m, begin, end - begin, beta)
                              : gemm_block(c + begin * ldc, ldc, av, bv, m, n, k, begin, end - begin, 0, n, beta);
        if (!done) ok = false;
      },
      tasks);
  if (!ok) throw std::bad_alloc();
}

}  // namespace vgg
