// The bf16 GEMM: C (float32) = op(A) op(B) with both operands rounded to bf16 as they are packed, on AMX
// tiles (TDPBF16PS), VDPBF16PS (AVX512-BF16) or the portable emulation (bf16.h chooses).
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
#include <vector>

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


struct Operand {
  const float* data;
  int64_t ld;
  bool trans;
  // Element [r][p] of a (rows, k) view is x[r*ld + p], or x[p*ld + r] when transposed.
};

// op(B) as the (N, K) view the packers read: in memory, or from a Bf16Source's function.
struct BSide {
  Operand mem;
  const Bf16Source* source;
};

// op(A) as the (M, K) view: in memory, or rows of pair words from a Bf16RowSource.
struct ASide {
  Operand mem;
  const Bf16RowSource* source;
};

// Rows [r0, r0 + rows) x pairs [p0 / 2, p0 / 2 + kpc) of a row source into panels of `width` rows,
// dst[panel * kp_rows * width + kp * width + r] (the VDPBF16PS and emulation layout), zero past R and
// from kpc to kp_rows.
void pack_a_rows_source(uint32_t* dst, int64_t kp_rows, const Bf16RowSource& src, int64_t R, int64_t r0,
                        int64_t rows, int64_t p0, int64_t kc, int width) {
  const int64_t kpc = (kc + 1) / 2;
  static thread_local std::vector<uint32_t> run;
  run.resize(static_cast<size_t>(kpc));
  for (int64_t pr = 0; pr < rows; pr += width) {
    uint32_t* panel = dst + pr / width * kp_rows * width;
    const int64_t valid = std::max<int64_t>(0, std::min<int64_t>({width, rows - pr, R - r0 - pr}));
    for (int64_t r = 0; r < width; r++) {
      if (r < valid) src.row_words(src.ctx, run.data(), r0 + pr + r, p0 / 2, kpc);
      for (int64_t kp = 0; kp < kp_rows; kp++) panel[kp * width + r] = r < valid && kp < kpc ? run[kp] : 0u;
    }
  }
}


// Columns [j0, j0 + cols) x k [p0, p0 + kc) of a source's (N, K) view in panels of 32 columns, word
// [kp][j] (pair(op(B)[p0 + 2kp][j], op(B)[p0 + 2kp + 1][j])): panel q at dst + q * kp_rows * 32, rows past
// the pairs up to kp_rows and columns past N zero.
void pack_b_source(uint32_t* dst, int64_t kp_rows, const Bf16Source& src, int64_t N, int64_t j0, int64_t cols,
                   int64_t p0, int64_t kc) {
  constexpr int64_t kW = 32;
  const int64_t kpc = (kc + 1) / 2, panels = (cols + kW - 1) / kW;
  const int64_t valid = std::max<int64_t>(0, std::min(cols, N - j0));
  if (src.row_words) {
    // Words straight into each panel's row; k blocks start at even k, so pair kp of the block is p0 / 2 + kp.
    for (int64_t kp = 0; kp < kpc; kp++)
      for (int64_t q = 0; q < panels; q++) {
        uint32_t* out = dst + q * kp_rows * kW + kp * kW;
        const int64_t v = std::clamp<int64_t>(valid - q * kW, 0, kW);
        if (v > 0) src.row_words(src.ctx, out, p0 / 2 + kp, j0 + q * kW, v);
        std::fill(out + v, out + kW, 0u);
      }
  } else {
    static thread_local std::vector<float> buffer;
    buffer.resize(static_cast<size_t>(2 * kpc));
    float* run = buffer.data();
    run[2 * kpc - 1] = 0.0f;
    for (int64_t j = 0; j < panels * kW; j++) {
      uint32_t* out = dst + j / kW * kp_rows * kW + j % kW;
      if (j >= valid) {
        for (int64_t kp = 0; kp < kpc; kp++) out[kp * kW] = 0;
        continue;
      }
      src.column(src.ctx, run, j0 + j, p0, kc);
      for (int64_t kp = 0; kp < kpc; kp++) out[kp * kW] = pair_word(run[2 * kp], run[2 * kp + 1]);
    }
  }
  for (int64_t q = 0; q < panels; q++)
    std::memset(dst + q * kp_rows * kW + kpc * kW, 0, static_cast<size_t>((kp_rows - kpc) * kW) * 4);
}

#if defined(__x86_64__) || defined(__i386__)
#define VGG_BF16_TARGET __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))

// 16 words from 32 floats: word q = pair(src[2q], src[2q + 1]), rounded as bf16_bits does (the
// instruction VCVTNE2PS2BF16 would flush denormals and keep NaN payloads, so the rounding is integer).
// 16 lanes rounded to bf16 in their upper halves (bf16_bits's rule: RNE, NaN -> quiet NaN).
VGG_BF16_TARGET inline __m512i rounded_lanes(__m512i u) {
  const __m512i rounded =
      _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(rounded, nan, _mm512_set1_epi32(0x7fc00000));
}

VGG_BF16_TARGET inline __m512i pair_words_avx512(const float* src) {
  const __m512i v[2] = {rounded_lanes(_mm512_loadu_si512(src)), rounded_lanes(_mm512_loadu_si512(src + 16))};
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
      if (bf16_path() != Bf16Path::Emulation) kp0 = pack_rows_avx512(panel, x, r0 + pr, valid, p0, pairs, width);
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
  if (bf16_path() != Bf16Path::Emulation) return kernel_avx512bf16;
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
bool gemm_block(float* c, int64_t ldc, const ASide& a, const BSide& b, int64_t M, int64_t N, int64_t K,
                int64_t i0, int64_t m, int64_t j0, int64_t n, float beta) {
  const Kernel kernel = chosen_kernel();
  uint32_t* ap = scratch(0, static_cast<size_t>(kMC * kKC / 2));  // kMC is a multiple of kMR
  uint32_t* bp = scratch(1, static_cast<size_t>(kNC * kKC / 2));  // and kNC of kNR
  if (!ap || !bp) return false;
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = std::min(kNC, n - jc);
    for (int64_t pc = 0; pc < K; pc += kKC) {
      const int64_t kc = std::min(kKC, K - pc), kpc = (kc + 1) / 2;
      if (b.source)
        pack_b_source(bp, kpc, *b.source, N, j0 + jc, nc, pc, kc);
      else
        pack_panels(bp, b.mem, N, j0 + jc, nc, pc, kc, kNR);
      const bool overwrite = pc == 0 && beta == 0.0f;
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        if (a.source)
          pack_a_rows_source(ap, kpc, *a.source, M, i0 + ic, mc, pc, kc, kMR);
        else
          pack_panels(ap, a.mem, M, i0 + ic, mc, pc, kc, kMR);
        for (int64_t jr = 0; jr < nc; jr += kNR)
          for (int64_t ir = 0; ir < mc; ir += kMR)
            kernel(kpc, ap + ir / kMR * kpc * kMR, bp + jr / kNR * kpc * kNR, c + (ic + ir) * ldc + jc + jr, ldc,
                   std::min<int64_t>(kMR, mc - ir), std::min<int64_t>(kNR, nc - jr), overwrite);
      }
    }
  }
  return true;
}


#if defined(__x86_64__) || defined(__i386__)
// ---- AMX: TDPBF16PS on 16x16 float32 tiles ----
//
// A micro-tile of C is 32 x 32, four float32 tiles (tmm0-3) held across a k block; per 32 k (16 pairs, one
// 64-byte tile row) it loads two A tiles (tmm4-5: rows 0-15 and 16-31) and two B tiles (tmm6-7: columns
// 0-15 and 16-31) and issues four TDPBF16PS. A is packed row-major in pair words (dst[r * kpcp + kp], the
// A tile's layout); B in panels of 32 columns, word [kp][j] (the B tile's "VNNI" layout, the same as the
// VDPBF16PS panels). Pairs are padded with zeros to whole 16-pair chunks and rows to whole 32-row panels.
// C tiles start from C itself (or zero), so each C element sums its k blocks in order, whatever the
// thread count. TDPBF16PS flushes bf16 denormal inputs and float32 denormal results to zero.
#define VGG_AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512bf16,avx512f,avx512bw,avx512vl")))

constexpr int kAmxMR = 32;
constexpr int kAmxNR = 32;
constexpr int64_t kAmxKC = 512;  // 256 pairs: 16 chunks, a 32 KB B micro-panel
constexpr int64_t kAmxMC = 256;  // rows per A block (256 KB)
constexpr int64_t kAmxNC = 512;  // columns per B block (512 KB)
static_assert(kAmxMC % kAmxMR == 0 && kAmxNC % kAmxNR == 0 && kAmxKC % 32 == 0, "whole panels and chunks");

inline int64_t whole_chunks(int64_t pairs) { return (pairs + 15) / 16 * 16; }

// The tile shapes, loaded on each thread before its first tile instruction (LDTILECFG's 64-byte layout).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

VGG_AMX_TARGET void load_tile_config() {
  TileConfig cfg;
  for (int t = 0; t < 8; t++) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  // GCC's _tile_loadconfig tells the compiler it reads 8 bytes, so without this barrier the rest of the
  // configuration's stores may be dropped (and the first tile instruction faults).
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}


// Pair words from two rows of 16 lanes: word q = bf16(even[q]) | bf16(odd[q]) << 16; lanes past `mask` are 0.
VGG_AMX_TARGET inline __m512i pair_lanes(const float* even, const float* odd, __mmask16 mask) {
  const __m512i e = rounded_lanes(_mm512_maskz_loadu_epi32(mask, even));
  const __m512i o = odd ? rounded_lanes(_mm512_maskz_loadu_epi32(mask, odd)) : _mm512_setzero_si512();
  return _mm512_or_si512(_mm512_srli_epi32(e, 16), _mm512_and_si512(o, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}

inline __mmask16 first_lanes(int64_t count) {
  return count >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << count) - 1);
}

// r[i][j] -> r[j][i] for a 16 x 16 block of 32-bit words (four rounds of unpacks and lane shuffles).
VGG_AMX_TARGET inline void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // u[4i + m], 128-bit lane L: column 4L + m of rows 4i..4i+3.
  for (int i = 0; i < 4; i++) {
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int m = 0; m < 4; m++) {
    const __m512i x0 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0x44), x1 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0xee);
    const __m512i y0 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0x44);
    const __m512i y1 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0xee);
    r[m] = _mm512_shuffle_i32x4(x0, y0, 0x88);
    r[4 + m] = _mm512_shuffle_i32x4(x0, y0, 0xdd);
    r[8 + m] = _mm512_shuffle_i32x4(x1, y1, 0x88);
    r[12 + m] = _mm512_shuffle_i32x4(x1, y1, 0xdd);
  }
}

// The 16 pair words kp0..kp0+15 of a row of k values (src[p], p < kc), zero past k.
VGG_AMX_TARGET inline __m512i row_pairs(const float* src, int64_t kp0, int64_t kc) {
  if (2 * (kp0 + 16) <= kc) return pair_words_avx512(src + 2 * kp0);
  alignas(64) uint32_t words[16];
  for (int64_t q = 0; q < 16; q++) {
    const int64_t p = 2 * (kp0 + q);
    words[q] = p + 1 < kc ? pair_word(src[p], src[p + 1]) : p < kc ? pair_word(src[p], 0.0f) : 0u;
  }
  return _mm512_load_si512(words);
}

// Rows [r0, r0 + rows) x k [p0, p0 + kc) of the (R, K) view x as row-major pair words: dst[r * kpcp + kp],
// zero past R, past k and up to rows_p (a multiple of 32) and kpcp (a multiple of 16) words.
VGG_AMX_TARGET void pack_a_amx(uint32_t* dst, int64_t kpcp, const Operand& x, int64_t R, int64_t r0, int64_t rows,
                              int64_t rows_p, int64_t p0, int64_t kc) {
  const int64_t valid = std::max<int64_t>(0, std::min(rows, R - r0)), pairs = kc / 2, kpc = (kc + 1) / 2;
  if (!x.trans) {
    for (int64_t r = 0; r < valid; r++) {
      const float* src = x.data + (r0 + r) * x.ld + p0;
      uint32_t* row = dst + r * kpcp;
      int64_t kp = 0;
      for (; kp + 16 <= pairs; kp += 16) _mm512_store_si512(row + kp, pair_words_avx512(src + 2 * kp));
      for (; kp < pairs; kp++) row[kp] = pair_word(src[2 * kp], src[2 * kp + 1]);
      if (kc % 2) row[pairs] = pair_word(src[kc - 1], 0.0f);
      for (kp = kpc; kp < kpcp; kp++) row[kp] = 0;
    }
  } else {
    // Element [r][p] is x[p * ld + r]: 16 rows of one pair per vector, 16 pairs of them transposed into
    // 16 rows of 16 pairs (kpcp is a whole number of 16-pair chunks; pairs past k are zero).
    for (int64_t r = 0; r < valid; r += 16) {
      const __mmask16 mask = first_lanes(valid - r);
      const float* src = x.data + p0 * x.ld + r0 + r;
      for (int64_t kp0 = 0; kp0 < kpcp; kp0 += 16) {
        __m512i v[16];
        for (int q = 0; q < 16; q++) {
          const int64_t kp = kp0 + q;
          const float* even = src + 2 * kp * x.ld;
          v[q] = kp < kpc ? pair_lanes(even, 2 * kp + 1 < kc ? even + x.ld : nullptr, mask) : _mm512_setzero_si512();
        }
        transpose16(v);
        for (int64_t i = 0; i < std::min<int64_t>(16, valid - r); i++) _mm512_store_si512(dst + (r + i) * kpcp + kp0, v[i]);
      }
    }
  }
  for (int64_t r = valid; r < rows_p; r++) std::memset(dst + r * kpcp, 0, static_cast<size_t>(kpcp) * 4);
}

// pack_a_amx's layout from a row source: each row's words written in place.
void pack_a_amx_source(uint32_t* dst, int64_t kpcp, const Bf16RowSource& src, int64_t R, int64_t r0, int64_t rows,
                       int64_t rows_p, int64_t p0, int64_t kc) {
  const int64_t valid = std::max<int64_t>(0, std::min(rows, R - r0)), kpc = (kc + 1) / 2;
  for (int64_t r = 0; r < valid; r++) {
    src.row_words(src.ctx, dst + r * kpcp, r0 + r, p0 / 2, kpc);
    std::fill(dst + r * kpcp + kpc, dst + (r + 1) * kpcp, 0u);
  }
  std::fill(dst + valid * kpcp, dst + rows_p * kpcp, 0u);
}

// Columns [j0, j0 + cols) x k [p0, p0 + kc) of the (N, K) view x in panels of 32 columns:
// dst[panel * kpcp * 32 + kp * 32 + j], zero past N, past k and up to kpcp pairs.
VGG_AMX_TARGET void pack_b_amx(uint32_t* dst, int64_t kpcp, const Operand& x, int64_t N, int64_t j0, int64_t cols,
                              int64_t p0, int64_t kc) {
  const int64_t kpc = (kc + 1) / 2;
  for (int64_t pj = 0; pj < cols; pj += kAmxNR) {
    uint32_t* panel = dst + pj / kAmxNR * kpcp * kAmxNR;
    const int64_t valid = std::max<int64_t>(0, std::min<int64_t>({kAmxNR, cols - pj, N - j0 - pj}));
    if (x.trans) {
      // Element [j][p] is x[p * ld + j]: a pair of rows of x gives 16 columns' words per vector.
      const float* src = x.data + p0 * x.ld + j0 + pj;
      for (int64_t kp = 0; kp < kpc; kp++) {
        const float* even = src + 2 * kp * x.ld;
        const float* odd = 2 * kp + 1 < kc ? even + x.ld : nullptr;
        for (int h = 0; h < 2; h++) {
          const __mmask16 mask = first_lanes(valid - 16 * h);
          const __m512i words = valid > 16 * h ? pair_lanes(even + 16 * h, odd ? odd + 16 * h : nullptr, mask)
                                               : _mm512_setzero_si512();
          _mm512_store_si512(panel + kp * kAmxNR + 16 * h, words);
        }
      }
    } else {
      // Element [j][p] is x[j * ld + p]: each column is contiguous in k; 16 pairs of 16 columns per block,
      // transposed into 16 pair rows of 16 columns.
      for (int h = 0; h < 2; h++)
        for (int64_t kp0 = 0; kp0 < kpc; kp0 += 16) {
          __m512i v[16];
          for (int64_t q = 0; q < 16; q++) {
            const int64_t j = 16 * h + q;
            v[q] = j < valid ? row_pairs(x.data + (j0 + pj + j) * x.ld + p0, kp0, kc) : _mm512_setzero_si512();
          }
          transpose16(v);
          for (int64_t q = 0; q < std::min<int64_t>(16, kpc - kp0); q++)
            _mm512_store_si512(panel + (kp0 + q) * kAmxNR + 16 * h, v[q]);
        }
    }
    std::memset(panel + kpc * kAmxNR, 0, static_cast<size_t>((kpcp - kpc) * kAmxNR) * 4);
  }
}

// One 32 x 32 micro-tile over `chunks` chunks of 16 pairs: a (row stride kpcp words), b a 32-column panel.
VGG_AMX_TARGET void kernel_amx(int64_t chunks, int64_t kpcp, const uint32_t* a, const uint32_t* b, float* c,
                               int64_t ldc, int64_t mr, int64_t nr, bool overwrite) {
  alignas(64) float edge[kAmxMR * kAmxNR];
  const bool whole = mr == kAmxMR && nr == kAmxNR;
  float* dst = whole ? c : edge;
  const int64_t ld = whole ? ldc : kAmxNR;
  if (!whole && !overwrite) {
    std::memset(edge, 0, sizeof(edge));
    for (int64_t r = 0; r < mr; r++) std::memcpy(edge + r * kAmxNR, c + r * ldc, static_cast<size_t>(nr) * 4);
  }
  const int64_t stride = ld * 4;
  if (overwrite) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, dst, stride);
    _tile_loadd(1, dst + 16, stride);
    _tile_loadd(2, dst + 16 * ld, stride);
    _tile_loadd(3, dst + 16 * ld + 16, stride);
  }
  const int64_t a_stride = kpcp * 4;
  for (int64_t ch = 0; ch < chunks; ch++) {
    const uint32_t* bc = b + ch * 16 * kAmxNR;
    _tile_loadd(4, a + ch * 16, a_stride);
    _tile_loadd(5, a + 16 * kpcp + ch * 16, a_stride);
    _tile_loadd(6, bc, kAmxNR * 4);
    _tile_loadd(7, bc + 16, kAmxNR * 4);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, dst, stride);
  _tile_stored(1, dst + 16, stride);
  _tile_stored(2, dst + 16 * ld, stride);
  _tile_stored(3, dst + 16 * ld + 16, stride);
  if (!whole)
    for (int64_t r = 0; r < mr; r++) std::memcpy(c + r * ldc, edge + r * kAmxNR, static_cast<size_t>(nr) * 4);
}

VGG_AMX_TARGET void release_tiles() { _tile_release(); }

// gemm_block's AMX counterpart: C[i0:i0+m, j0:j0+n] on the calling thread.
bool gemm_block_amx(float* c, int64_t ldc, const ASide& a, const BSide& b, int64_t M, int64_t N, int64_t K,
                    int64_t i0, int64_t m, int64_t j0, int64_t n, float beta) {
  uint32_t* ap = scratch(0, static_cast<size_t>(kAmxMC * kAmxKC / 2));
  uint32_t* bp = scratch(1, static_cast<size_t>(kAmxNC * kAmxKC / 2));
  if (!ap || !bp) return false;
  load_tile_config();
  for (int64_t jc = 0; jc < n; jc += kAmxNC) {
    const int64_t nc = std::min(kAmxNC, n - jc);
    for (int64_t pc = 0; pc < K; pc += kAmxKC) {
      const int64_t kc = std::min(kAmxKC, K - pc), kpcp = whole_chunks((kc + 1) / 2);
      if (b.source)
        pack_b_source(bp, kpcp, *b.source, N, j0 + jc, nc, pc, kc);
      else
        pack_b_amx(bp, kpcp, b.mem, N, j0 + jc, nc, pc, kc);
      const bool overwrite = pc == 0 && beta == 0.0f;
      for (int64_t ic = 0; ic < m; ic += kAmxMC) {
        const int64_t mc = std::min(kAmxMC, m - ic);
        const int64_t rows_p = (mc + kAmxMR - 1) / kAmxMR * kAmxMR;
        if (a.source)
          pack_a_amx_source(ap, kpcp, *a.source, M, i0 + ic, mc, rows_p, pc, kc);
        else
          pack_a_amx(ap, kpcp, a.mem, M, i0 + ic, mc, rows_p, pc, kc);
        for (int64_t jr = 0; jr < nc; jr += kAmxNR)
          for (int64_t ir = 0; ir < mc; ir += kAmxMR)
            kernel_amx(kpcp / 16, kpcp, ap + ir * kpcp, bp + jr / kAmxNR * kpcp * kAmxNR,
                       c + (ic + ir) * ldc + jc + jr, ldc, std::min<int64_t>(kAmxMR, mc - ir),
                       std::min<int64_t>(kAmxNR, nc - jr), overwrite);
      }
    }
  }
  release_tiles();
  return true;
}
#endif

}  // namespace

namespace {

// C = op(A) op(B) + beta C, split over threads (when `threaded`) along C's longer side in whole micro-tiles.
void run_gemm(float* c, int64_t ldc, const ASide& av, const BSide& bv, int64_t m, int64_t n, int64_t k, float beta,
              bool threaded) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (beta == 0.0f)
      for (int64_t i = 0; i < m; i++) std::memset(c + i * ldc, 0, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  const bool by_columns = n >= m;
  const bool amx = bf16_path() == Bf16Path::Amx;
  const int64_t mr = amx ? 32 : kMR, nr = amx ? 32 : kNR;
  const int64_t units = by_columns ? (n + nr - 1) / nr : (m + mr - 1) / mr;
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const int64_t tasks = !threaded || flops < 4e6 ? 1 : units;
  auto block = gemm_block;
#if defined(__x86_64__) || defined(__i386__)
  if (amx) block = gemm_block_amx;
#endif
  if (tasks == 1) {
    if (!block(c, ldc, av, bv, m, n, k, 0, m, 0, n, beta)) throw std::bad_alloc();
    return;
  }
  std::atomic<bool> ok{true};
  parallel_run(
      [&](int ith, int nth) {
        int64_t begin, end;
        split_range(by_columns ? n : m, ith, nth, by_columns ? nr : mr, &begin, &end);
        if (begin >= end) return;
        const bool done = by_columns ? block(c + begin, ldc, av, bv, m, n, k, 0, m, begin, end - begin, beta)
                                     : block(c + begin * ldc, ldc, av, bv, m, n, k, begin, end - begin, 0, n, beta);
        if (!done) ok = false;
      },
      tasks);
  if (!ok) throw std::bad_alloc();
}

}  // namespace

void amx_tiles_begin() {
#if defined(__x86_64__) || defined(__i386__)
  load_tile_config();
#endif
}

void amx_tiles_end() {
#if defined(__x86_64__) || defined(__i386__)
  release_tiles();
#endif
}

namespace {

// A few rows of A against a B whose columns are contiguous (trans_b; a linear layer's weight, batch 1-4):
// dot products of rounded rows, read once, instead of packing all of B for a handful of rows. Each product
// of two bf16 values is exact in float32; the sums run in 16 lanes, then the lanes in order.
constexpr int64_t kGemvRows = 4;

__attribute__((target_clones("avx512f", "default"))) void dot_rows(float* c, int64_t ldc, const float* a, int64_t lda,
                                                                   const float* b, int64_t ldb, int64_t m,
                                                                   int64_t j0, int64_t j1, int64_t k, float beta) {
  for (int64_t j = j0; j < j1; j++) {
    const float* w = b + j * ldb;
    for (int64_t i = 0; i < m; i++) {
      const float* x = a + i * lda;
      float lanes[16] = {};
      int64_t p = 0;
      for (; p + 16 <= k; p += 16)
        for (int l = 0; l < 16; l++)
          lanes[l] += bf16_to_float(bf16_bits(x[p + l])) *
                      bf16_to_float(bf16_bits(w[p + l]));
      for (; p < k; p++)
        lanes[p % 16] += bf16_to_float(bf16_bits(x[p])) *
                         bf16_to_float(bf16_bits(w[p]));
      float sum = 0.0f;
      for (float v : lanes) sum += v;
      c[i * ldc + j] = beta == 0.0f ? sum : c[i * ldc + j] + sum;
    }
  }
}

}  // namespace

void bf16_gemm(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m,
               int64_t n, int64_t k, bool trans_a, bool trans_b, float beta) {
  if (m > 0 && m <= kGemvRows && !trans_a && trans_b && k > 0) {
    // Column ranges in whole 16s, so a value does not depend on the thread count.
    const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
    parallel_run(
        [&](int ith, int nth) {
          int64_t begin, end;
          split_range(n, ith, nth, 16, &begin, &end);
          if (begin < end) dot_rows(c, ldc, a, lda, b, ldb, m, begin, end, k, beta);
        },
        flops < 4e6 ? 1 : (n + 15) / 16);
    return;
  }
  // op(A) as an (m, k) view and op(B) as an (n, k) view (its transpose), so one packer serves both.
  run_gemm(c, ldc, ASide{Operand{a, lda, trans_a}, nullptr}, BSide{Operand{b, ldb, !trans_b}, nullptr}, m, n, k,
           beta, true);
}

void bf16_gemm_source(float* c, int64_t ldc, const float* a, int64_t lda, bool trans_a, const Bf16Source& b,
                      int64_t m, int64_t n, int64_t k, float beta, bool threaded) {
  run_gemm(c, ldc, ASide{Operand{a, lda, trans_a}, nullptr}, BSide{Operand{nullptr, 0, false}, &b}, m, n, k, beta,
           threaded);
}

void bf16_gemm_rows(float* c, int64_t ldc, const Bf16RowSource& a, const float* b, int64_t ldb, bool trans_b,
                    int64_t m, int64_t n, int64_t k, float beta, bool threaded) {
  run_gemm(c, ldc, ASide{Operand{nullptr, 0, false}, &a}, BSide{Operand{b, ldb, !trans_b}, nullptr}, m, n, k, beta,
           threaded);
}

}  // namespace vgg
