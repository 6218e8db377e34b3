// Winograd transforms on 16 tiles per zmm vector (both tile sizes). The tiles' columns go into lanes by
// two-source permutes (vpermt2ps) and 128-bit shuffles instead of AVX2's in-lane unpacks; short groups
// and the map's edges are read and written through opmasks, zeros where the 8-tile kernels pad with
// zeros. The arithmetic per lane is the 8-tile kernels' (winograd.cc, winograd4_math.h), so the results
// are the same bits at the avx2 and avx512 levels.
#include "winograd_avx512.h"

#if defined(__x86_64__) || defined(__i386__)
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "conv2d.h"
#include "winograd.h"
#include "workspace.h"

// Every function defined from here on, including the always-inline templates of winograd4_math.h
// (internal linkage, so never shared with another file's copy), is compiled for the avx512 level. The
// standard and project headers above are included first so their inline functions keep the baseline
// target.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma")
// GCC 12's _mm512_max_ps, _mm512_shuffle_f32x4 and _mm512_alignr_epi32 pass _mm512_undefined_*(), which
// -W(maybe-)uninitialized reports at every use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "winograd4_math.h"

namespace vgg {
namespace {

typedef VecF<16> V16;

// The first n of 16 lanes (n may be <= 0 or >= 16).
VGG_INLINE __mmask16 first_lanes(int64_t n) {
  return n <= 0 ? 0 : n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// Stores point e of the lanes in `mask` at v + e * e_stride.
struct StoreMasked {
  float* v;
  int64_t e_stride;
  __mmask16 mask;
  VGG_INLINE void operator()(int e, V16 value) const { _mm512_mask_storeu_ps(v + e * e_stride, mask, value); }
};

// ---- F(4x4, 3x3) ----

// c[k] lane l = element 4 l + k of the 64 floats a | b | e | f (16 tiles' 4 columns each).
VGG_INLINE void columns4(V16 (&c)[4], __m512 a, __m512 b, __m512 e, __m512 f) {
  const __m512i i01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
  const __m512i i23 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
  // x01: tiles 0-7's column 0 then column 1; y01 the same of tiles 8-15.
  const __m512 x01 = _mm512_permutex2var_ps(a, i01, b), y01 = _mm512_permutex2var_ps(e, i01, f);
  const __m512 x23 = _mm512_permutex2var_ps(a, i23, b), y23 = _mm512_permutex2var_ps(e, i23, f);
  c[0] = _mm512_shuffle_f32x4(x01, y01, 0x44);
  c[1] = _mm512_shuffle_f32x4(x01, y01, 0xEE);
  c[2] = _mm512_shuffle_f32x4(x23, y23, 0x44);
  c[3] = _mm512_shuffle_f32x4(x23, y23, 0xEE);
}

// The inverse: y[4 l + k] = c[k] lane l for the first `cols` of the 64 floats.
VGG_INLINE void store_columns4(float* y, const V16 (&c)[4], int64_t cols) {
  // x01 = c0 lanes 0-7 | c1 lanes 0-7, x23 the same of c2, c3; y01, y23 of lanes 8-15.
  const __m512 x01 = _mm512_shuffle_f32x4(c[0], c[1], 0x44), x23 = _mm512_shuffle_f32x4(c[2], c[3], 0x44);
  const __m512 y01 = _mm512_shuffle_f32x4(c[0], c[1], 0xEE), y23 = _mm512_shuffle_f32x4(c[2], c[3], 0xEE);
  // Output j = 4 l + k of a 4-tile block takes lane l of column k: (k & 1) 8 + (k >> 1) 16 + l.
  const __m512i lo = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
  const __m512i hi = _mm512_setr_epi32(4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31);
  _mm512_mask_storeu_ps(y, first_lanes(cols), _mm512_permutex2var_ps(x01, lo, x23));
  _mm512_mask_storeu_ps(y + 16, first_lanes(cols - 16), _mm512_permutex2var_ps(x01, hi, x23));
  _mm512_mask_storeu_ps(y + 32, first_lanes(cols - 32), _mm512_permutex2var_ps(y01, lo, y23));
  _mm512_mask_storeu_ps(y + 48, first_lanes(cols - 48), _mm512_permutex2var_ps(y01, hi, y23));
}

// Lane l of the result = lane l + 1 of c, lane 15 = next (the column of the 17th tile).
VGG_INLINE V16 shift_in(V16 c, float next) {
  return _mm512_castsi512_ps(
      _mm512_alignr_epi32(_mm512_castps_si512(_mm512_set1_ps(next)), _mm512_castps_si512(c), 1));
}

// Interleaving the even (a) and odd (b) columns of 16 tiles, a0 b0 a1 b1 .. a15 b15, as two permutes
// of a | b: the first 16 values (row 0) and the last 16 (row 1).
const int32_t kInterleave[2][16] = {{0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23},
                                    {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31}};

}  // namespace

namespace {

// The lanes of 16 columns from column j on that lie inside [0, w).
VGG_INLINE __mmask16 inside_lanes(int64_t j, int64_t w) {
  const int64_t lo = std::max<int64_t>(0, -j), hi = std::min<int64_t>(16, w - j);
  return hi <= lo ? 0 : static_cast<__mmask16>(first_lanes(hi) & ~first_lanes(lo));
}

}  // namespace

void winograd4_input16_image_avx512(float* v, int64_t e_stride, const float* xc, int64_t h, int64_t w, int64_t iy0,
                                    int64_t ix0, int64_t cnt) {
  // Rows and columns outside the image read as 0 (masked lanes are never accessed), as the zero-padded
  // strip of the 8-tile path gives them.
  const __mmask16 m[4] = {inside_lanes(ix0, w), inside_lanes(ix0 + 16, w), inside_lanes(ix0 + 32, w),
                          inside_lanes(ix0 + 48, w)};
  const bool has64 = ix0 + 64 >= 0 && ix0 + 64 < w, has65 = ix0 + 65 >= 0 && ix0 + 65 < w;
  V16 d[6][6];
  for (int r = 0; r < 6; r++) {
    const int64_t iy = iy0 + r;
    if (iy < 0 || iy >= h) {
      for (int k = 0; k < 6; k++) d[r][k] = V16{};
      continue;
    }
    // q + j is column ix0 + j of the row (before the row for a left padding: only inside lanes are read).
    const float* q = xc + iy * w + ix0;
    V16 c[4];
    columns4(c, _mm512_maskz_loadu_ps(m[0], q), _mm512_maskz_loadu_ps(m[1], q + 16),
             _mm512_maskz_loadu_ps(m[2], q + 32), _mm512_maskz_loadu_ps(m[3], q + 48));
    for (int k = 0; k < 4; k++) d[r][k] = c[k];
    // Columns 4 and 5 of tile l are columns 0 and 1 of tile l + 1.
    d[r][4] = shift_in(c[0], has64 ? q[64] : 0.0f);
    d[r][5] = shift_in(c[1], has65 ? q[65] : 0.0f);
  }
  input_math(d, StoreMasked{v, e_stride, first_lanes(cnt)});
}

void winograd4_output16_avx512(float* y, int64_t row, const float* mt, int64_t e_stride, float bv, bool relu,
                               int64_t rows, int64_t cols) {
  V16 o[4][4];
  output_math(o, mt, e_stride, bv, relu);
  for (int64_t r = 0; r < rows; r++) store_columns4(y + r * row, o[r], cols);
}

void winograd4_pool16_avx512(float* yp, int32_t* ap, const ConvShape& s, int64_t ty, int64_t tx, int64_t cnt,
                             const float* mt, int64_t e_stride, float bv, bool relu) {
  const int64_t ph = s.out_h / 2, pw = s.out_w / 2;
  V16 best[2][2];
  VecI<16> flat[2][2];
  pool_math<16>(best, flat, mt, e_stride, bv, relu, ty, tx, s.out_w);
  // Pooled columns [2 tx, 2 tx + 2 cnt) clipped to pw: even (wc = 0) and odd (wc = 1) interleaved.
  const int64_t valid = std::min<int64_t>(2 * cnt, pw - 2 * tx);
  const __mmask16 m0 = first_lanes(valid), m1 = first_lanes(valid - 16);
  const __m512i lo = _mm512_loadu_si512(kInterleave[0]), hi = _mm512_loadu_si512(kInterleave[1]);
  for (int wr = 0; wr < 2 && 2 * ty + wr < ph; wr++) {
    const int64_t at = (2 * ty + wr) * pw + 2 * tx;
    _mm512_mask_storeu_ps(yp + at, m0, _mm512_permutex2var_ps(best[wr][0], lo, best[wr][1]));
    _mm512_mask_storeu_ps(yp + at + 16, m1, _mm512_permutex2var_ps(best[wr][0], hi, best[wr][1]));
    const __m512i f0 = reinterpret_cast<__m512i>(flat[wr][0]), f1 = reinterpret_cast<__m512i>(flat[wr][1]);
    _mm512_mask_storeu_epi32(ap + at, m0, _mm512_permutex2var_epi32(f0, lo, f1));
    _mm512_mask_storeu_epi32(ap + at + 16, m1, _mm512_permutex2var_epi32(f0, hi, f1));
  }
}

void winograd4_grad16_avx512(float* w, int64_t e_stride, const float* p, int64_t out_w, int64_t rows, int64_t cols,
                             int64_t cnt) {
  const __mmask16 m[4] = {first_lanes(cols), first_lanes(cols - 16), first_lanes(cols - 32), first_lanes(cols - 48)};
  V16 d[4][4];
  for (int r = 0; r < 4; r++) {
    if (r >= rows) {
      for (int k = 0; k < 4; k++) d[r][k] = V16{};
      continue;
    }
    const float* q = p + r * out_w;
    V16 c[4];
    columns4(c, _mm512_maskz_loadu_ps(m[0], q), _mm512_maskz_loadu_ps(m[1], q + 16),
             _mm512_maskz_loadu_ps(m[2], q + 32), _mm512_maskz_loadu_ps(m[3], q + 48));
    for (int k = 0; k < 4; k++) d[r][k] = c[k];
  }
  grad_math(d, StoreMasked{w, e_stride, first_lanes(cnt)});
}

void winograd4_input_gathered16_avx512(float* dst, int64_t e_stride, const float* x, const ConvShape& s, int64_t ci,
                                       int64_t t, int64_t cnt) {
  input_tiles_gathered<16>(dst, e_stride, x, s, ci, t, cnt);
}

void winograd4_output_gathered16_avx512(float* y, const ConvShape& s, int64_t co, int64_t t, int64_t cnt,
                                        const float* mt, int64_t e_stride, float bv, bool relu) {
  output_tiles_gathered<16>(y, s, co, t, cnt, mt, e_stride, bv, relu);
}

void winograd4_pool_gathered16_avx512(const PoolTarget& pool, const ConvShape& s, int64_t co, int64_t t, int64_t cnt,
                                      const float* mt, int64_t e_stride, float bv, bool relu) {
  pool_tiles_gathered<16>(pool, s, co, t, cnt, mt, e_stride, bv, relu);
}

void winograd4_grad_gathered16_avx512(float* dst, int64_t e_stride, const float* dy, const ConvShape& s, int64_t co,
                                      int64_t t, int64_t cnt) {
  grad_tiles_gathered<16>(dst, e_stride, dy, s, co, t, cnt);
}

// ---- F(2x2, 3x3) ----

namespace {

// Columns 0, 2, .., 30 (even) or 1, 3, .., 31 (odd) of the 32 floats at p.
VGG_INLINE __m512 even32(const float* p) {
  const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  return _mm512_permutex2var_ps(_mm512_loadu_ps(p), idx, _mm512_loadu_ps(p + 16));
}
VGG_INLINE __m512 odd32(const float* p) {
  const __m512i idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  return _mm512_permutex2var_ps(_mm512_loadu_ps(p), idx, _mm512_loadu_ps(p + 16));
}

}  // namespace

void winograd2_input16_avx512(float* v, int64_t e_stride, const float* p, int64_t row, int64_t cnt) {
  // Lane l of column c of row r is p[r * row + 2 l + c]; the arithmetic of input_transform_8_avx2.
  const __mmask16 mask = first_lanes(cnt);
  __m512 d[4][4];
  for (int r = 0; r < 4; r++) {
    const float* q = p + r * row;
    d[r][0] = even32(q), d[r][1] = odd32(q), d[r][2] = even32(q + 2), d[r][3] = odd32(q + 2);
  }
  __m512 b[4][4];
  for (int c = 0; c < 4; c++) {
    b[0][c] = _mm512_sub_ps(d[0][c], d[2][c]);
    b[1][c] = _mm512_add_ps(d[1][c], d[2][c]);
    b[2][c] = _mm512_sub_ps(d[2][c], d[1][c]);
    b[3][c] = _mm512_sub_ps(d[1][c], d[3][c]);
  }
  for (int r = 0; r < 4; r++) {
    _mm512_mask_storeu_ps(v + (r * 4 + 0) * e_stride, mask, _mm512_sub_ps(b[r][0], b[r][2]));
    _mm512_mask_storeu_ps(v + (r * 4 + 1) * e_stride, mask, _mm512_add_ps(b[r][1], b[r][2]));
    _mm512_mask_storeu_ps(v + (r * 4 + 2) * e_stride, mask, _mm512_sub_ps(b[r][2], b[r][1]));
    _mm512_mask_storeu_ps(v + (r * 4 + 3) * e_stride, mask, _mm512_sub_ps(b[r][1], b[r][3]));
  }
}

void winograd2_output16_avx512(float* y, int64_t out_w, const float* mt, int64_t e_stride, float bv, bool relu,
                               int64_t rows, int64_t cols) {
  __m512 a[2][4];
  for (int c = 0; c < 4; c++) {
    const __m512 m0 = _mm512_loadu_ps(mt + c * e_stride), m1 = _mm512_loadu_ps(mt + (4 + c) * e_stride);
    const __m512 m2 = _mm512_loadu_ps(mt + (8 + c) * e_stride), m3 = _mm512_loadu_ps(mt + (12 + c) * e_stride);
    a[0][c] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
    a[1][c] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
  }
  const __m512 bias = _mm512_set1_ps(bv), zero = _mm512_setzero_ps();
  const __m512i lo = _mm512_loadu_si512(kInterleave[0]), hi = _mm512_loadu_si512(kInterleave[1]);
  const __mmask16 m0 = first_lanes(cols), m1 = first_lanes(cols - 16);
  for (int64_t r = 0; r < rows; r++) {
    __m512 o0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[r][0], a[r][1]), a[r][2]), bias);
    __m512 o1 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(a[r][1], a[r][2]), a[r][3]), bias);
    if (relu) o0 = _mm512_max_ps(zero, o0), o1 = _mm512_max_ps(zero, o1);  // keeps NaN, like the scalar path
    _mm512_mask_storeu_ps(y + r * out_w, m0, _mm512_permutex2var_ps(o0, lo, o1));
    _mm512_mask_storeu_ps(y + r * out_w + 16, m1, _mm512_permutex2var_ps(o0, hi, o1));
  }
}

void winograd2_grad16_avx512(float* w, int64_t e_stride, const float* p, int64_t row, int64_t cnt) {
  const __mmask16 mask = first_lanes(cnt);
  const __m512 d00 = even32(p), d01 = odd32(p), d10 = even32(p + row), d11 = odd32(p + row);
  const __m512 zero = _mm512_setzero_ps();
  const __m512 t[4][2] = {{d00, d01},
                          {_mm512_add_ps(d00, d10), _mm512_add_ps(d01, d11)},
                          {_mm512_sub_ps(d00, d10), _mm512_sub_ps(d01, d11)},
                          {_mm512_sub_ps(zero, d10), _mm512_sub_ps(zero, d11)}};
  for (int r = 0; r < 4; r++) {
    _mm512_mask_storeu_ps(w + (r * 4 + 0) * e_stride, mask, t[r][0]);
    _mm512_mask_storeu_ps(w + (r * 4 + 1) * e_stride, mask, _mm512_add_ps(t[r][0], t[r][1]));
    _mm512_mask_storeu_ps(w + (r * 4 + 2) * e_stride, mask, _mm512_sub_ps(t[r][0], t[r][1]));
    _mm512_mask_storeu_ps(w + (r * 4 + 3) * e_stride, mask, _mm512_sub_ps(zero, t[r][1]));
  }
}

}  // namespace vgg

#pragma GCC pop_options
#endif
