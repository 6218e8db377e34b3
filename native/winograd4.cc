// Winograd F(4x4, 3x3): each 4x4 output tile from a 6x6 input patch, Y = A^T [ (G g G^T) .* (B^T d B) ] A,
// so 36 multiplies per tile and channel pair instead of 144 (F(2x2,3x3) needs 64 for the same outputs).
// As in winograd.cc, the products summed over input channels are 36 GEMMs
// M_e (cOut, tiles) = U_e (cOut, cIn) x V_e (cIn, tiles), over chunks of tiles that stay in cache.
//
// The interpolation points are 0, 1, -1, 2, -1/2 (and infinity) rather than the usual 0, +-1, +-2: the
// matrices have a few more non-zeros, but the float32 error of a 512-channel sum is about 2.5x smaller
// (Barabasz et al., "Error analysis and improving the accuracy of Winograd convolution"), which keeps the
// result within the tolerance the tests set against the exact algorithm.
//
// The transforms work on 8 horizontally adjacent tiles at once (one vector lane per tile), written once
// with GCC/Clang vector types; the AVX2 copy reads and writes the tiles' columns with shuffles, the
// portable copy lane by lane.
#include <algorithm>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "isa.h"
#include "pool.h"
#include "threadpool.h"
#include "winograd.h"
#include "workspace.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VGG_X86 1
#endif

#if defined(__GNUC__) && !defined(__clang__)
// The 8-float vector helpers are always inlined, so the ABI of passing them by value never matters.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace vgg {
namespace {

// B^T (6x6), written out in bt6:       G (6x3), in double:              A^T (4x6), written out in at6:
//   1  3/2  -2   -3/2   1    0          1     0     0                    1  1   1  1   1     0
//   0  -1  -5/2  -1/2   1    0        -1/3  -1/3  -1/3                   0  1  -1  2  -1/2   0
//   0   1   1/2  -5/2   1    0         1/3  -1/3   1/3                   0  1   1  4   1/4   0
//   0 -1/2  -1    1/2   1    0         1/15  2/15  4/15                  0  1  -1  8  -1/8   1
//   0   2   -1   -2     1    0       -16/15  8/15 -4/15
//   0   1   3/2  -2   -3/2   1          0     0     1
constexpr double kG[6][3] = {
    {1.0, 0.0, 0.0},
    {-1.0 / 3, -1.0 / 3, -1.0 / 3},
    {1.0 / 3, -1.0 / 3, 1.0 / 3},
    {1.0 / 15, 2.0 / 15, 4.0 / 15},
    {-16.0 / 15, 8.0 / 15, -4.0 / 15},
    {0.0, 0.0, 1.0},
};

typedef float V8 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline V8 load8(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline void store8(float* p, V8 v) { std::memcpy(p, &v, sizeof v); }

// y = B^T x for the six points (kBT written out, with its common terms shared).
__attribute__((always_inline)) inline void bt6(V8 x0, V8 x1, V8 x2, V8 x3, V8 x4, V8 x5, V8 (&y)[6]) {
  const V8 q = x4 - x2, r = x1 - x3;
  y[0] = (x0 - x2) + q + 1.5f * r;
  y[1] = (x4 - 2.5f * x2) - (x1 + 0.5f * x3);
  y[2] = (x4 - 2.5f * x3) + (x1 + 0.5f * x2);
  y[3] = q - 0.5f * r;
  y[4] = q + 2.0f * r;
  y[5] = (x5 + x1) - 2.0f * x3 - 1.5f * q;
}

// o = A^T m for the four outputs (kAT written out).
__attribute__((always_inline)) inline void at6(V8 m0, V8 m1, V8 m2, V8 m3, V8 m4, V8 m5, V8 (&o)[4]) {
  const V8 s12 = m1 + m2, d12 = m1 - m2;
  o[0] = (m0 + s12) + (m3 + m4);
  o[1] = d12 + 2.0f * m3 - 0.5f * m4;
  o[2] = s12 + 4.0f * m3 + 0.25f * m4;
  o[3] = (d12 + 8.0f * m3 - 0.125f * m4) + m5;
}

// v[e * e_stride] for the 36 points e = (i, j) from the 6x6 patches d[row][col] (lanes = tiles).
__attribute__((always_inline)) inline void input_math(float* v, int64_t e_stride, const V8 (&d)[6][6]) {
  V8 t[6][6];  // t = B^T d, column by column
  for (int c = 0; c < 6; c++) {
    V8 out[6];
    bt6(d[0][c], d[1][c], d[2][c], d[3][c], d[4][c], d[5][c], out);
    for (int r = 0; r < 6; r++) t[r][c] = out[r];
  }
  for (int i = 0; i < 6; i++) {  // (B^T d) B, row by row
    V8 out[6];
    bt6(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], out);
    for (int j = 0; j < 6; j++) store8(v + (i * 6 + j) * e_stride, out[j]);
  }
}

// o[r][c] = (A^T M A)[r][c] + bias, then ReLU, from the 36 points at mt[e * e_stride] (lanes = tiles).
__attribute__((always_inline)) inline void output_math(V8 (&o)[4][4], const float* mt, int64_t e_stride, float bv,
                                                       bool relu) {
  V8 t[4][6];  // A^T M
  for (int c = 0; c < 6; c++) {
    V8 out[4];
    at6(load8(mt + c * e_stride), load8(mt + (6 + c) * e_stride), load8(mt + (12 + c) * e_stride),
        load8(mt + (18 + c) * e_stride), load8(mt + (24 + c) * e_stride), load8(mt + (30 + c) * e_stride), out);
    for (int r = 0; r < 4; r++) t[r][c] = out[r];
  }
  const V8 zero = {};
  for (int r = 0; r < 4; r++) {
    V8 out[4];
    at6(t[r][0], t[r][1], t[r][2], t[r][3], t[r][4], t[r][5], out);
    for (int c = 0; c < 4; c++) {
      V8 value = out[c] + bv;
      // Keeps NaN (a NaN compares false), like the other kernels' ReLU.
      if (relu) value = value < zero ? zero : value;
      o[r][c] = value;
    }
  }
}

// Eight tiles' patches: lane l of d[r][c] = p[r * row + 4 l + c]; p has 36 readable floats per row.
__attribute__((always_inline)) inline void load_patches_portable(V8 (&d)[6][6], const float* p, int64_t row) {
  for (int r = 0; r < 6; r++)
    for (int c = 0; c < 6; c++)
      for (int l = 0; l < 8; l++) d[r][c][l] = p[r * row + 4 * l + c];
}

// Eight tiles' 4x4 outputs: y[r * row + 4 l + c] = lane l of o[r][c], rows [0, rows).
__attribute__((always_inline)) inline void store_tiles_portable(float* y, int64_t row, const V8 (&o)[4][4],
                                                                int64_t rows) {
  for (int64_t r = 0; r < rows; r++)
    for (int c = 0; c < 4; c++)
      for (int l = 0; l < 8; l++) y[r * row + 4 * l + c] = o[r][c][l];
}

#ifdef VGG_X86
#define VGG_AVX2 __attribute__((target("avx2,fma")))
// Columns 4l + 0..3 of 8 tiles from the 32 floats at p: an 8x4 to 4x8 transpose.
VGG_AVX2 inline void columns4(__m256 (&c)[4], const float* p) {
  const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
  const __m256 e = _mm256_loadu_ps(p + 16), f = _mm256_loadu_ps(p + 24);
  // Lanes 0-3 of each register: tiles 0-3, lanes 4-7: tiles 4-7.
  const __m256 t0 = _mm256_permute2f128_ps(a, e, 0x20), t4 = _mm256_permute2f128_ps(a, e, 0x31);
  const __m256 t1 = _mm256_permute2f128_ps(b, f, 0x20), t5 = _mm256_permute2f128_ps(b, f, 0x31);
  // Now t0 = (tile 0 | tile 4), t4 = (tile 1 | tile 5), t1 = (tile 2 | tile 6), t5 = (tile 3 | tile 7).
  const __m256 lo01 = _mm256_unpacklo_ps(t0, t4), hi01 = _mm256_unpackhi_ps(t0, t4);
  const __m256 lo23 = _mm256_unpacklo_ps(t1, t5), hi23 = _mm256_unpackhi_ps(t1, t5);
  c[0] = _mm256_shuffle_ps(lo01, lo23, 0x44);
  c[1] = _mm256_shuffle_ps(lo01, lo23, 0xEE);
  c[2] = _mm256_shuffle_ps(hi01, hi23, 0x44);
  c[3] = _mm256_shuffle_ps(hi01, hi23, 0xEE);
}

// The inverse: 32 floats at y = columns c[0..3] of 8 tiles, 4 per tile.
VGG_AVX2 inline void store_columns4(float* y, const __m256 (&c)[4]) {
  const __m256 lo01 = _mm256_unpacklo_ps(c[0], c[1]), hi01 = _mm256_unpackhi_ps(c[0], c[1]);
  const __m256 lo23 = _mm256_unpacklo_ps(c[2], c[3]), hi23 = _mm256_unpackhi_ps(c[2], c[3]);
  const __m256 t0 = _mm256_shuffle_ps(lo01, lo23, 0x44), t4 = _mm256_shuffle_ps(lo01, lo23, 0xEE);
  const __m256 t1 = _mm256_shuffle_ps(hi01, hi23, 0x44), t5 = _mm256_shuffle_ps(hi01, hi23, 0xEE);
  _mm256_storeu_ps(y, _mm256_permute2f128_ps(t0, t4, 0x20));
  _mm256_storeu_ps(y + 8, _mm256_permute2f128_ps(t1, t5, 0x20));
  _mm256_storeu_ps(y + 16, _mm256_permute2f128_ps(t0, t4, 0x31));
  _mm256_storeu_ps(y + 24, _mm256_permute2f128_ps(t1, t5, 0x31));
}

VGG_AVX2 void input_tiles_avx2(float* v, int64_t e_stride, const float* p, int64_t row) {
  V8 d[6][6];
  for (int r = 0; r < 6; r++) {
    __m256 lo[4], hi[4];
    columns4(lo, p + r * row);
    columns4(hi, p + r * row + 4);
    for (int c = 0; c < 4; c++) d[r][c] = lo[c];
    d[r][4] = hi[0], d[r][5] = hi[1];
  }
  input_math(v, e_stride, d);
}

VGG_AVX2 void output_tiles_avx2(float* y, int64_t row, const float* mt, int64_t e_stride, float bv, bool relu,
                                int64_t rows) {
  V8 o[4][4];
  output_math(o, mt, e_stride, bv, relu);
  for (int64_t r = 0; r < rows; r++) {
    const __m256 c[4] = {o[r][0], o[r][1], o[r][2], o[r][3]};
    store_columns4(y + r * row, c);
  }
}
#endif

void input_tiles_portable(float* v, int64_t e_stride, const float* p, int64_t row) {
  V8 d[6][6];
  load_patches_portable(d, p, row);
  input_math(v, e_stride, d);
}

void output_tiles_portable(float* y, int64_t row, const float* mt, int64_t e_stride, float bv, bool relu,
                           int64_t rows) {
  V8 o[4][4];
  output_math(o, mt, e_stride, bv, relu);
  store_tiles_portable(y, row, o, rows);
}

void input_tiles(bool avx2, float* v, int64_t e_stride, const float* p, int64_t row) {
#ifdef VGG_X86
  if (avx2) return input_tiles_avx2(v, e_stride, p, row);
#endif
  (void)avx2;
  input_tiles_portable(v, e_stride, p, row);
}

void output_tiles(bool avx2, float* y, int64_t row, const float* mt, int64_t e_stride, float bv, bool relu,
                  int64_t rows) {
#ifdef VGG_X86
  if (avx2) return output_tiles_avx2(y, row, mt, e_stride, bv, relu, rows);
#endif
  (void)avx2;
  output_tiles_portable(y, row, mt, e_stride, bv, relu, rows);
}

int64_t tiles_w_of(const ConvShape& s) { return (s.out_w + 3) / 4; }

// Pooled epilogue. Each 4x4 tile holds 2x2 pooling windows: for 8 tiles at a time (lanes) the windows of
// pooled row 2 ty + wr, column 2 (tx + lane) + wc, are taken by the rule of max_of_window as selects, with
// the argmax as a flat index into the outH x outW plane.
typedef int32_t I8 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline void pool_math(V8 (&best)[2][2], I8 (&flat)[2][2], const float* mt,
                                                     int64_t e_stride, float bv, bool relu, int64_t ty, int64_t tx,
                                                     int64_t out_w) {
  V8 o[4][4];
  output_math(o, mt, e_stride, bv, relu);
  const I8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
  for (int wr = 0; wr < 2; wr++)
    for (int wc = 0; wc < 2; wc++) {
      const V8 a = o[2 * wr][2 * wc], b = o[2 * wr][2 * wc + 1];
      const V8 c = o[2 * wr + 1][2 * wc], d = o[2 * wr + 1][2 * wc + 1];
      const I8 take_b = (a == a) & ((b > a) | (b != b));
      V8 v = take_b ? b : a;
      I8 idx = take_b & 1;
      const I8 take_c = (c > v) | (c != c);
      v = take_c ? c : v;
      idx = (take_c & 2) | (idx & ~take_c);
      const I8 take_d = (c == c) & ((d > v) | (d != d));
      best[wr][wc] = take_d ? d : v;
      idx = (take_d & 3) | (idx & ~take_d);
      const I8 py = static_cast<int32_t>(2 * ty + wr) + I8{};
      const I8 px = 2 * (lane + static_cast<int32_t>(tx)) + wc;
      flat[wr][wc] = (2 * py + (idx >> 1)) * static_cast<int32_t>(out_w) + 2 * px + (idx & 1);
    }
}

// Stores pooled rows [.., ph) of up to cnt tiles, columns clipped to pw, lane by lane.
__attribute__((always_inline)) inline void store_pooled_lanes(float* yp, int32_t* ap, const V8 (&best)[2][2],
                                                              const I8 (&flat)[2][2], int64_t ty, int64_t tx,
                                                              int64_t cnt, int64_t ph, int64_t pw) {
  for (int wr = 0; wr < 2 && 2 * ty + wr < ph; wr++) {
    const int64_t py = 2 * ty + wr;
    for (int64_t l = 0; l < cnt; l++)
      for (int wc = 0; wc < 2; wc++) {
        const int64_t px = 2 * (tx + l) + wc;
        if (px >= pw) break;
        yp[py * pw + px] = best[wr][wc][l];
        ap[py * pw + px] = flat[wr][wc][l];
      }
  }
}

#ifdef VGG_X86
VGG_AVX2 void pool_tiles_avx2(float* yp, int32_t* ap, const ConvShape& s, int64_t ty, int64_t tx, int64_t cnt,
                              const float* mt, int64_t e_stride, float bv, bool relu) {
  const int64_t ph = s.out_h / 2, pw = s.out_w / 2;
  V8 best[2][2];
  I8 flat[2][2];
  pool_math(best, flat, mt, e_stride, bv, relu, ty, tx, s.out_w);
  if (cnt < 8 || 2 * (tx + 8) > pw) return store_pooled_lanes(yp, ap, best, flat, ty, tx, cnt, ph, pw);
  // 8 whole tiles: interleave the even (wc = 0) and odd (wc = 1) pooled columns into 16 in a row.
  for (int wr = 0; wr < 2 && 2 * ty + wr < ph; wr++) {
    const int64_t at = (2 * ty + wr) * pw + 2 * tx;
    const __m256 lo = _mm256_unpacklo_ps(best[wr][0], best[wr][1]), hi = _mm256_unpackhi_ps(best[wr][0], best[wr][1]);
    _mm256_storeu_ps(yp + at, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(yp + at + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    const __m256i f0 = reinterpret_cast<__m256i>(flat[wr][0]), f1 = reinterpret_cast<__m256i>(flat[wr][1]);
    const __m256i ilo = _mm256_unpacklo_epi32(f0, f1), ihi = _mm256_unpackhi_epi32(f0, f1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(ap + at), _mm256_permute2x128_si256(ilo, ihi, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(ap + at + 8), _mm256_permute2x128_si256(ilo, ihi, 0x31));
  }
}
#endif

void pool_tiles_portable(float* yp, int32_t* ap, const ConvShape& s, int64_t ty, int64_t tx, int64_t cnt,
                         const float* mt, int64_t e_stride, float bv, bool relu) {
  V8 best[2][2];
  I8 flat[2][2];
  pool_math(best, flat, mt, e_stride, bv, relu, ty, tx, s.out_w);
  store_pooled_lanes(yp, ap, best, flat, ty, tx, cnt, s.out_h / 2, s.out_w / 2);
}

void pool_run(const PoolTarget& pool, const ConvShape& s, int64_t plane_index, int64_t ty, int64_t tx, int64_t run,
              const float* mt, int64_t e_stride, float bv, bool relu, bool avx2) {
  const int64_t pooled_plane = (s.out_h / 2) * (s.out_w / 2);
  float* yp = pool.y + plane_index * pooled_plane;
  int32_t* ap = pool.argmax + plane_index * pooled_plane;
  for (int64_t k = 0; k < run; k += 8) {
    const int64_t cnt = std::min<int64_t>(8, run - k);
#ifdef VGG_X86
    if (avx2) {
      pool_tiles_avx2(yp, ap, s, ty, tx + k, cnt, mt + k, e_stride, bv, relu);
      continue;
    }
#endif
    (void)avx2;
    pool_tiles_portable(yp, ap, s, ty, tx + k, cnt, mt + k, e_stride, bv, relu);
  }
}

// Maps of one or two tiles across (8x8 and smaller) would leave most of the 8 lanes idle if they took
// tiles of one tile row: there the lanes take any 8 consecutive tiles (of several rows or images)
// instead, gathered and scattered one by one. (From 3 tiles across, measured, the strips win.) The
// arithmetic per lane is the same, so are the results, bit for bit.
bool gathers_lanes(const ConvShape& s) { return tiles_w_of(s) <= 2; }

// Where tile `index` (numbered image after image) lies: image b, tile row ty, tile column tx.
struct TilePos {
  int64_t b, ty, tx;
};
inline TilePos tile_pos(int64_t index, int64_t image_tiles, int64_t tiles_w) {
  const int64_t b = index / image_tiles, tt = index - b * image_tiles;
  return {b, tt / tiles_w, tt % tiles_w};
}

// V's 36 points of tiles [t, t + cnt) of channel ci (cnt <= 8) at dst, each tile's 6x6 patch gathered.
void input_tiles_gathered(float* dst, int64_t e_stride, const float* x, const ConvShape& s, int64_t ci, int64_t t,
                          int64_t cnt) {
  const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s), x_size = s.c_in * s.h * s.w;
  V8 d[6][6] = {};
  for (int64_t l = 0; l < cnt; l++) {
    const TilePos at = tile_pos(t + l, image_tiles, tiles_w);
    const float* xc = x + at.b * x_size + ci * s.h * s.w;
    const int64_t iy0 = 4 * at.ty - s.pad_h, ix0 = 4 * at.tx - s.pad_w;
    if (iy0 >= 0 && ix0 >= 0 && iy0 + 6 <= s.h && ix0 + 6 <= s.w) {
      const float* p = xc + iy0 * s.w + ix0;
      for (int r = 0; r < 6; r++)
        for (int c = 0; c < 6; c++) d[r][c][l] = p[r * s.w + c];
      continue;
    }
    for (int r = 0; r < 6; r++) {
      const int64_t iy = iy0 + r;
      if (iy < 0 || iy >= s.h) continue;
      for (int c = 0; c < 6; c++) {
        const int64_t ix = ix0 + c;
        if (ix >= 0 && ix < s.w) d[r][c][l] = xc[iy * s.w + ix];
      }
    }
  }
  if (cnt == 8) return input_math(dst, e_stride, d);
  float tmp[36 * 8];
  input_math(tmp, 8, d);
  for (int e = 0; e < 36; e++)
    for (int64_t j = 0; j < cnt; j++) dst[e * e_stride + j] = tmp[e * 8 + j];
}

// Y's 4x4 tiles [t, t + cnt) of output channel co from M's points at mt (lanes = tiles), each tile stored
// to its own image and position (clipped at the bottom and right edges).
void output_tiles_gathered(float* y, const ConvShape& s, int64_t co, int64_t t, int64_t cnt, const float* mt,
                           int64_t e_stride, float bv, bool relu) {
  const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s), plane = s.out_h * s.out_w;
  V8 o[4][4];
  output_math(o, mt, e_stride, bv, relu);
  for (int64_t l = 0; l < cnt; l++) {
    const TilePos at = tile_pos(t + l, image_tiles, tiles_w);
    float* dst = y + (at.b * s.c_out + co) * plane + 4 * at.ty * s.out_w + 4 * at.tx;
    const int64_t rows = std::min<int64_t>(4, s.out_h - 4 * at.ty), cols = std::min<int64_t>(4, s.out_w - 4 * at.tx);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) dst[r * s.out_w + c] = o[r][c][l];
  }
}

// The pooled epilogue of the same: pool_math with every lane placed as tile (0, 0) of a 32-wide plane,
// whose window choices are then moved to each tile's own position.
void pool_tiles_gathered(const PoolTarget& pool, const ConvShape& s, int64_t co, int64_t t, int64_t cnt,
                         const float* mt, int64_t e_stride, float bv, bool relu) {
  const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s);
  const int64_t ph = s.out_h / 2, pw = s.out_w / 2;
  V8 best[2][2];
  I8 flat[2][2];
  pool_math(best, flat, mt, e_stride, bv, relu, 0, 0, 32);
  for (int64_t l = 0; l < cnt; l++) {
    const TilePos at = tile_pos(t + l, image_tiles, tiles_w);
    float* yp = pool.y + (at.b * s.c_out + co) * ph * pw;
    int32_t* ap = pool.argmax + (at.b * s.c_out + co) * ph * pw;
    for (int wr = 0; wr < 2 && 2 * at.ty + wr < ph; wr++)
      for (int wc = 0; wc < 2 && 2 * at.tx + wc < pw; wc++) {
        // flat = row * 32 + column in the lane's placement, where lane l's tile starts at column 4 l.
        const int32_t f = flat[wr][wc][l];
        const int64_t row = 4 * at.ty + f / 32, col = 4 * at.tx + f % 32 - 4 * l;
        const int64_t i = (2 * at.ty + wr) * pw + 2 * at.tx + wc;
        yp[i] = best[wr][wc][l];
        ap[i] = static_cast<int32_t>(row * s.out_w + col);
      }
  }
}

// V (36, cIn, chunk) for tiles [t0, t0 + nt) (numbered image after image), 8 tiles at a time.
void transform_input_chunk(float* v, int64_t e_stride, const float* x, const ConvShape& s, int64_t t0, int64_t nt,
                           int64_t chunk, bool avx2) {
  if (gathers_lanes(s)) {
    for (int64_t ci = 0; ci < s.c_in; ci++)
      for (int64_t t = 0; t < nt; t += 8)
        input_tiles_gathered(v + ci * chunk + t, e_stride, x, s, ci, t0 + t, std::min<int64_t>(8, nt - t));
    return;
  }
  transform_input_tiles<4, 36>(v, e_stride, x, s, t0, nt, chunk, tiles_w_of(s), winograd4_tiles(s),
                               [avx2](float* dst, int64_t stride, const float* p, int64_t strip_w) {
                                 input_tiles(avx2, dst, stride, p, strip_w);
                               });
}

// Weight gradient: for a 4x4 tile of dY and its 6x6 input patch d, dW (3x3) = G^T [(A dY A^T) .* (B^T d B)] G,
// A = (A^T)^T (6x4). y = A x for a column of 4 values:
__attribute__((always_inline)) inline void a6(V8 d0, V8 d1, V8 d2, V8 d3, V8 (&y)[6]) {
  y[0] = d0;
  y[1] = (d0 + d1) + (d2 + d3);
  y[2] = (d0 - d1) + (d2 - d3);
  y[3] = d0 + 2.0f * d1 + 4.0f * d2 + 8.0f * d3;
  y[4] = d0 - 0.5f * d1 + 0.25f * d2 - 0.125f * d3;
  y[5] = d3;
}

// w[e * e_stride] for the 36 points e = (i, j) of A dY A^T from the 4x4 tiles d[r][c] (lanes = tiles).
__attribute__((always_inline)) inline void grad_math(float* w, int64_t e_stride, const V8 (&d)[4][4]) {
  V8 t[6][4];  // A dY, column by column
  for (int c = 0; c < 4; c++) {
    V8 out[6];
    a6(d[0][c], d[1][c], d[2][c], d[3][c], out);
    for (int i = 0; i < 6; i++) t[i][c] = out[i];
  }
  for (int i = 0; i < 6; i++) {  // (A dY) A^T, row by row
    V8 out[6];
    a6(t[i][0], t[i][1], t[i][2], t[i][3], out);
    for (int j = 0; j < 6; j++) store8(w + (i * 6 + j) * e_stride, out[j]);
  }
}

// The 4x4 dY tiles [t, t + cnt) of output channel co (cnt <= 8), each gathered lane by lane, outputs past
// the bottom and right edges read as 0.
void gather_grad_tiles(V8 (&d)[4][4], const float* dy, const ConvShape& s, int64_t co, int64_t t, int64_t cnt) {
  const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s), plane = s.out_h * s.out_w;
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < 4; c++) d[r][c] = V8{};
  for (int64_t l = 0; l < cnt; l++) {
    const TilePos at = tile_pos(t + l, image_tiles, tiles_w);
    const float* src = dy + (at.b * s.c_out + co) * plane + 4 * at.ty * s.out_w + 4 * at.tx;
    const int64_t rows = std::min<int64_t>(4, s.out_h - 4 * at.ty), cols = std::min<int64_t>(4, s.out_w - 4 * at.tx);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) d[r][c][l] = src[r * s.out_w + c];
  }
}

#ifdef VGG_X86
// 8 tiles side by side in one tile row, all inside: their 4 rows of 32 values, transposed into lanes.
VGG_AVX2 void grad_tiles_row_avx2(float* w, int64_t e_stride, const float* p, int64_t out_w) {
  V8 d[4][4];
  for (int r = 0; r < 4; r++) {
    __m256 c[4];
    columns4(c, p + r * out_w);
    for (int k = 0; k < 4; k++) d[r][k] = c[k];
  }
  grad_math(w, e_stride, d);
}
#endif

// G's points of dY tiles [t, t + cnt) of channel co at dst (stride e_stride between points).
void grad_tiles(float* dst, int64_t e_stride, const float* dy, const ConvShape& s, int64_t co, int64_t t, int64_t cnt,
                bool avx2) {
#ifdef VGG_X86
  if (avx2 && cnt == 8) {
    const int64_t tiles_w = tiles_w_of(s);
    const TilePos at = tile_pos(t, winograd4_tiles(s), tiles_w);
    if (at.tx + 8 <= tiles_w && 4 * (at.tx + 8) <= s.out_w && 4 * at.ty + 4 <= s.out_h) {
      const float* p = dy + (at.b * s.c_out + co) * s.out_h * s.out_w + 4 * at.ty * s.out_w + 4 * at.tx;
      return grad_tiles_row_avx2(dst, e_stride, p, s.out_w);
    }
  }
#endif
  (void)avx2;
  V8 d[4][4];
  gather_grad_tiles(d, dy, s, co, t, cnt);
  if (cnt == 8) return grad_math(dst, e_stride, d);
  float tmp[36 * 8];
  grad_math(tmp, 8, d);
  for (int e = 0; e < 36; e++)
    for (int64_t j = 0; j < cnt; j++) dst[e * e_stride + j] = tmp[e * 8 + j];
}

}  // namespace

int64_t winograd4_weight_acc_size(int64_t c_out, int64_t c_in) { return 36 * c_out * c_in; }

void winograd4_weight_grad_images(float* m, const float* dy, const float* x, int64_t images, const ConvShape& s,
                                  bool accumulate) {
  const bool avx2 = isa_at_least(Isa::Avx2Fma);
  const int64_t tiles = images * winograd4_tiles(s);
  // Chunk so V (36, cIn, chunk) and G (36, cOut, chunk) take a few MiB (the GEMMs reduce over the chunk,
  // so it is longer than the forward pass's).
  int64_t chunk = (int64_t{1} << 19) / (36 * (s.c_in + s.c_out));
  chunk = std::max<int64_t>(128, std::min<int64_t>(512, chunk / 16 * 16));
  const int64_t v_stride = s.c_in * chunk + 16, g_stride = s.c_out * chunk + 16;
  float* v = thread_scratch(2, 36 * v_stride);
  float* g = thread_scratch(3, 36 * g_stride);
  bool acc = accumulate;
  for (int64_t t0 = 0; t0 < tiles; t0 += chunk) {
    const int64_t nt = std::min(chunk, tiles - t0);
    transform_input_chunk(v, v_stride, x, s, t0, nt, chunk, avx2);
    for (int64_t co = 0; co < s.c_out; co++)
      for (int64_t t = 0; t < nt; t += 8)
        grad_tiles(g + co * chunk + t, g_stride, dy, s, co, t0 + t, std::min<int64_t>(8, nt - t), avx2);
    for (int e = 0; e < 36; e++)
      sgemm_serial(m + e * s.c_out * s.c_in, s.c_in, g + e * g_stride, chunk, v + e * v_stride, chunk, s.c_out,
                   s.c_in, nt, false, true, acc ? 1.0f : 0.0f);
    acc = true;
  }
  if (!acc) std::fill(m, m + winograd4_weight_acc_size(s.c_out, s.c_in), 0.0f);
}

void winograd4_weight_grad_finish(float* dw, const float* m, int64_t c_out, int64_t c_in, int64_t f0, int64_t f1) {
  const int64_t plane = c_out * c_in;
  float g[6][3];
  for (int i = 0; i < 6; i++)
    for (int k = 0; k < 3; k++) g[i][k] = static_cast<float>(kG[i][k]);
  // 64 filters at a time, the filter index innermost (contiguous in each of M's 36 matrices).
  constexpr int64_t kFilters = 64;
  for (int64_t fb = f0; fb < f1; fb += kFilters) {
    const int64_t nb = std::min(kFilters, f1 - fb);
    float t[3][6][kFilters];  // G^T M
    for (int r = 0; r < 3; r++)
      for (int c = 0; c < 6; c++) {
        float* tr = t[r][c];
        for (int64_t j = 0; j < nb; j++) tr[j] = 0.0f;
        for (int i = 0; i < 6; i++) {
          const float gi = g[i][r];
          const float* mi = m + (i * 6 + c) * plane + fb;
          for (int64_t j = 0; j < nb; j++) tr[j] += gi * mi[j];
        }
      }
    for (int r = 0; r < 3; r++)  // (G^T M) G
      for (int k = 0; k < 3; k++) {
        float out[kFilters];
        for (int64_t j = 0; j < nb; j++) out[j] = 0.0f;
        for (int c = 0; c < 6; c++) {
          const float gk = g[c][k];
          for (int64_t j = 0; j < nb; j++) out[j] += t[r][c][j] * gk;
        }
        for (int64_t j = 0; j < nb; j++) dw[(fb + j) * 9 + r * 3 + k] = out[j];
      }
  }
}

int64_t winograd4_tiles(const ConvShape& s) { return ((s.out_h + 3) / 4) * tiles_w_of(s); }

int64_t winograd4_weights_size(int64_t c_out, int64_t c_in) { return 36 * packed_a_size(c_out, c_in); }

void winograd4_prepare_weights(float* packed, const float* w, int64_t c_out, int64_t c_in) {
  // U = G g G^T in double, rounded once: the weights' share of the error stays at float32 rounding. 8
  // filters at a time, the filter innermost, so the arithmetic runs in vector lanes.
  transform_weights(packed, w, c_out, c_in, 36, [](const float* g, int64_t nb, float* out) {
    constexpr int kB = 8;
    double gt[9][kB] = {};
    for (int64_t l = 0; l < nb; l++)
      for (int k = 0; k < 9; k++) gt[k][l] = g[l * 9 + k];
    double t[6][3][kB];  // G g
    for (int i = 0; i < 6; i++)
      for (int j = 0; j < 3; j++)
        for (int l = 0; l < kB; l++) t[i][j][l] = kG[i][0] * gt[j][l] + kG[i][1] * gt[3 + j][l] + kG[i][2] * gt[6 + j][l];
    for (int i = 0; i < 6; i++)
      for (int j = 0; j < 6; j++)
        for (int l = 0; l < kB; l++)
          out[(i * 6 + j) * kB + l] =
              static_cast<float>(t[i][0][l] * kG[j][0] + t[i][1][l] * kG[j][1] + t[i][2][l] * kG[j][2]);
  });
}

void winograd4_forward_images(float* y, const float* x, int64_t images, const float* u, const float* bias,
                              const ConvShape& s, bool relu, int64_t tile_begin, int64_t tile_end,
                              const PoolTarget* pool) {
  const bool avx2 = isa_at_least(Isa::Avx2Fma);
  const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s), tiles = images * image_tiles;
  const int64_t plane = s.out_h * s.out_w;
  // Chunk so V (36, cIn, chunk) and M (36, cOut, chunk) take about 1 MiB together (at least 32 tiles).
  int64_t chunk = (int64_t{1} << 18) / (36 * (s.c_in + s.c_out));
  chunk = std::max<int64_t>(32, std::min<int64_t>(512, chunk / 16 * 16));
  // The 36 matrices of V and of M lie a cache line more than a multiple of their size apart: with
  // power-of-two sizes, the 36 values of one tile would otherwise fall in the same L1 set.
  const int64_t v_stride = s.c_in * chunk + 16, m_stride = s.c_out * chunk + 16;
  float* v = thread_scratch(2, 36 * v_stride);
  float* m = thread_scratch(3, 36 * m_stride + 8);  // + 8: the output transform's spare lanes
  const int64_t last = tile_end < 0 ? tiles : std::min(tile_end, tiles);
  const int64_t block = packed_a_size(s.c_out, s.c_in);
  for (int64_t t0 = tile_begin; t0 < last; t0 += chunk) {
    const int64_t nt = std::min(chunk, last - t0);
    transform_input_chunk(v, v_stride, x, s, t0, nt, chunk, avx2);
    for (int e = 0; e < 36; e++)
      sgemm_serial_packed_a(m + e * m_stride, chunk, u + e * block, v + e * v_stride, chunk, s.c_out, nt,
                            s.c_in, 0.0f);
    // Y = A^T M A (+ bias, ReLU) for runs of up to 8 tiles along a tile row; a run that is short or
    // crosses the bottom/right edge goes through a 4x32 buffer (lanes past the run read M's slack).
    if (gathers_lanes(s)) {
      for (int64_t co = 0; co < s.c_out; co++) {
        const float bv = bias ? bias[co] : 0.0f;
        for (int64_t t = 0; t < nt; t += 8) {
          const int64_t cnt = std::min<int64_t>(8, nt - t);
          const float* mt = m + co * chunk + t;
          if (pool)
            pool_tiles_gathered(*pool, s, co, t0 + t, cnt, mt, m_stride, bv, relu);
          else
            output_tiles_gathered(y, s, co, t0 + t, cnt, mt, m_stride, bv, relu);
        }
      }
      continue;
    }
    for (int64_t co = 0; co < s.c_out; co++) {
      const float bv = bias ? bias[co] : 0.0f;
      for (int64_t t = 0; t < nt;) {
        const int64_t b = (t0 + t) / image_tiles, tt = (t0 + t) - b * image_tiles;
        const int64_t ty = tt / tiles_w, tx = tt - ty * tiles_w;
        const int64_t run = std::min(nt - t, tiles_w - tx);
        if (pool) {
          pool_run(*pool, s, b * s.c_out + co, ty, tx, run, m + co * chunk + t, m_stride, bv, relu, avx2);
          t += run;
          continue;
        }
        float* yc = y + (b * s.c_out + co) * plane;
        const int64_t rows = std::min<int64_t>(4, s.out_h - 4 * ty);
        for (int64_t k = 0; k < run; k += 8) {
          const int64_t cnt = std::min<int64_t>(8, run - k);
          const int64_t cols = std::min<int64_t>(4 * cnt, s.out_w - 4 * (tx + k));
          float* dst = yc + 4 * ty * s.out_w + 4 * (tx + k);
          const float* mt = m + co * chunk + t + k;
          if (cols == 32) {
            output_tiles(avx2, dst, s.out_w, mt, m_stride, bv, relu, rows);
            continue;
          }
          float tmp[4 * 32];
          output_tiles(avx2, tmp, 32, mt, m_stride, bv, relu, rows);
          for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) dst[r * s.out_w + c] = tmp[r * 32 + c];
        }
        t += run;
      }
    }
  }
}

}  // namespace vgg
