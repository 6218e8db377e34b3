// The arithmetic of Winograd F(4x4, 3x3) (winograd4.cc) on L tiles at once, one vector lane per tile,
// written once with GCC/Clang vector types: 8 lanes for the portable and AVX2 code, 16 for AVX-512
// (winograd_avx512.cc). Every lane does the same operations in the same order whatever L is, so both
// widths give the same bits.
//
// Everything here is always inlined into the caller, whose target attribute decides the instructions, and
// has internal linkage (an anonymous namespace), so no out-of-line copy built for one ISA can be picked
// by the linker for a caller built for another.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "conv2d.h"
#include "winograd.h"

#if defined(__GNUC__) && !defined(__clang__)
// The vector helpers are always inlined, so the ABI of passing them by value never matters.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define VGG_INLINE __attribute__((always_inline)) inline

namespace vgg {
namespace {

template <int L>
struct Lanes {
  typedef float F __attribute__((vector_size(4 * L)));
  typedef int32_t I __attribute__((vector_size(4 * L)));
};
template <int L>
using VecF = typename Lanes<L>::F;
template <int L>
using VecI = typename Lanes<L>::I;

template <typename V>
VGG_INLINE V load_vec(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Stores point e of all lanes at v + e * e_stride.
template <typename V>
struct StoreLanes {
  float* v;
  int64_t e_stride;
  VGG_INLINE void operator()(int e, V value) const { std::memcpy(v + e * e_stride, &value, sizeof value); }
};

// y = B^T x for the six points (B^T written out in winograd4.cc, with its common terms shared).
template <typename V>
VGG_INLINE void bt6(V x0, V x1, V x2, V x3, V x4, V x5, V (&y)[6]) {
  const V q = x4 - x2, r = x1 - x3;
  y[0] = (x0 - x2) + q + 1.5f * r;
  y[1] = (x4 - 2.5f * x2) - (x1 + 0.5f * x3);
  y[2] = (x4 - 2.5f * x3) + (x1 + 0.5f * x2);
  y[3] = q - 0.5f * r;
  y[4] = q + 2.0f * r;
  y[5] = (x5 + x1) - 2.0f * x3 - 1.5f * q;
}

// o = A^T m for the four outputs (A^T written out).
template <typename V>
VGG_INLINE void at6(V m0, V m1, V m2, V m3, V m4, V m5, V (&o)[4]) {
  const V s12 = m1 + m2, d12 = m1 - m2;
  o[0] = (m0 + s12) + (m3 + m4);
  o[1] = d12 + 2.0f * m3 - 0.5f * m4;
  o[2] = s12 + 4.0f * m3 + 0.25f * m4;
  o[3] = (d12 + 8.0f * m3 - 0.125f * m4) + m5;
}

// store(e, V) for the 36 points e = (i, j) from the 6x6 patches d[row][col] (lanes = tiles).
template <typename V, typename Store>
VGG_INLINE void input_math(const V (&d)[6][6], const Store& store) {
  V t[6][6];  // t = B^T d, column by column
  for (int c = 0; c < 6; c++) {
    V out[6];
    bt6(d[0][c], d[1][c], d[2][c], d[3][c], d[4][c], d[5][c], out);
    for (int r = 0; r < 6; r++) t[r][c] = out[r];
  }
  for (int i = 0; i < 6; i++) {  // (B^T d) B, row by row
    V out[6];
    bt6(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], out);
    for (int j = 0; j < 6; j++) store(i * 6 + j, out[j]);
  }
}

// o[r][c] = (A^T M A)[r][c] + bias, then ReLU, from the 36 points at mt[e * e_stride] (lanes = tiles).
template <typename V>
VGG_INLINE void output_math(V (&o)[4][4], const float* mt, int64_t e_stride, float bv, bool relu) {
  V t[4][6];  // A^T M
  for (int c = 0; c < 6; c++) {
    V out[4];
    at6(load_vec<V>(mt + c * e_stride), load_vec<V>(mt + (6 + c) * e_stride), load_vec<V>(mt + (12 + c) * e_stride),
        load_vec<V>(mt + (18 + c) * e_stride), load_vec<V>(mt + (24 + c) * e_stride),
        load_vec<V>(mt + (30 + c) * e_stride), out);
    for (int r = 0; r < 4; r++) t[r][c] = out[r];
  }
  const V zero = {};
  for (int r = 0; r < 4; r++) {
    V out[4];
    at6(t[r][0], t[r][1], t[r][2], t[r][3], t[r][4], t[r][5], out);
    for (int c = 0; c < 4; c++) {
      V value = out[c] + bv;
      // Keeps NaN (a NaN compares false), like the other kernels' ReLU.
      if (relu) value = value < zero ? zero : value;
      o[r][c] = value;
    }
  }
}

// L tiles' patches: lane l of d[r][c] = p[r * row + 4 l + c]; p has 4 L + 4 readable floats per row.
template <int L>
VGG_INLINE void load_patches_portable(VecF<L> (&d)[6][6], const float* p, int64_t row) {
  for (int r = 0; r < 6; r++)
    for (int c = 0; c < 6; c++)
      for (int l = 0; l < L; l++) d[r][c][l] = p[r * row + 4 * l + c];
}

// L tiles' 4x4 outputs: y[r * row + 4 l + c] = lane l of o[r][c], rows [0, rows).
template <int L>
VGG_INLINE void store_tiles_portable(float* y, int64_t row, const VecF<L> (&o)[4][4], int64_t rows) {
  for (int64_t r = 0; r < rows; r++)
    for (int c = 0; c < 4; c++)
      for (int l = 0; l < L; l++) y[r * row + 4 * l + c] = o[r][c][l];
}

// Pooled epilogue. Each 4x4 tile holds 2x2 pooling windows: for L tiles at a time (lanes) the windows of
// pooled row 2 ty + wr, column 2 (tx + lane) + wc, are taken by the rule of max_of_window as selects, with
// the argmax as a flat index into the outH x outW plane.
template <int L>
VGG_INLINE void pool_math(VecF<L> (&best)[2][2], VecI<L> (&flat)[2][2], const float* mt, int64_t e_stride, float bv,
                          bool relu, int64_t ty, int64_t tx, int64_t out_w) {
  typedef VecF<L> V;
  typedef VecI<L> I;
  V o[4][4];
  output_math(o, mt, e_stride, bv, relu);
  I lane;
  for (int l = 0; l < L; l++) lane[l] = l;
  for (int wr = 0; wr < 2; wr++)
    for (int wc = 0; wc < 2; wc++) {
      const V a = o[2 * wr][2 * wc], b = o[2 * wr][2 * wc + 1];
      const V c = o[2 * wr + 1][2 * wc], d = o[2 * wr + 1][2 * wc + 1];
      const I take_b = (a == a) & ((b > a) | (b != b));
      V v = take_b ? b : a;
      I idx = take_b & 1;
      const I take_c = (c > v) | (c != c);
      v = take_c ? c : v;
      idx = (take_c & 2) | (idx & ~take_c);
      const I take_d = (c == c) & ((d > v) | (d != d));
      best[wr][wc] = take_d ? d : v;
      idx = (take_d & 3) | (idx & ~take_d);
      const I py = static_cast<int32_t>(2 * ty + wr) + I{};
      const I px = 2 * (lane + static_cast<int32_t>(tx)) + wc;
      flat[wr][wc] = (2 * py + (idx >> 1)) * static_cast<int32_t>(out_w) + 2 * px + (idx & 1);
    }
}

// Stores pooled rows [.., ph) of up to cnt tiles, columns clipped to pw, lane by lane.
template <int L>
VGG_INLINE void store_pooled_lanes(float* yp, int32_t* ap, const VecF<L> (&best)[2][2], const VecI<L> (&flat)[2][2],
                                   int64_t ty, int64_t tx, int64_t cnt, int64_t ph, int64_t pw) {
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

VGG_INLINE int64_t tiles_w_of(const ConvShape& s) { return (s.out_w + 3) / 4; }

// Maps of one or two tiles across (8x8 and smaller) would leave most of the lanes idle if they took
// tiles of one tile row: there the lanes take any L consecutive tiles (of several rows or images)
// instead, gathered and scattered one by one. (From 3 tiles across, measured, the strips win.) The
// arithmetic per lane is the same, so are the results, bit for bit.
VGG_INLINE bool gathers_lanes(const ConvShape& s) { return tiles_w_of(s) <= 2; }

// Where tile `index` (numbered image after image) lies: image b, tile row ty, tile column tx.
struct TilePos {
  int64_t b, ty, tx;
};
VGG_INLINE TilePos tile_pos(int64_t index, int64_t image_tiles, int64_t tiles_w) {
  const int64_t b = index / image_tiles, tt = index - b * image_tiles;
  return {b, tt / tiles_w, tt % tiles_w};
}

// V's 36 points of tiles [t, t + cnt) of channel ci (cnt <= L) at dst, each tile's 6x6 patch gathered.
template <int L>
VGG_INLINE void input_tiles_gathered(float* dst, int64_t e_stride, const float* x, const ConvShape& s, int64_t ci,
                                     int64_t t, int64_t cnt) {
  typedef VecF<L> V;
  const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s), x_size = s.c_in * s.h * s.w;
  V d[6][6] = {};
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
  if (cnt == L) return input_math(d, StoreLanes<V>{dst, e_stride});
  float tmp[36 * L];
  input_math(d, StoreLanes<V>{tmp, L});
  for (int e = 0; e < 36; e++)
    for (int64_t j = 0; j < cnt; j++) dst[e * e_stride + j] = tmp[e * L + j];
}

// Y's 4x4 tiles [t, t + cnt) of output channel co from M's points at mt (lanes = tiles), each tile stored
// to its own image and position (clipped at the bottom and right edges).
template <int L>
VGG_INLINE void output_tiles_gathered(float* y, const ConvShape& s, int64_t co, int64_t t, int64_t cnt, const float* mt,
                                      int64_t e_stride, float bv, bool relu) {
  const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s), plane = s.out_h * s.out_w;
  VecF<L> o[4][4];
  output_math(o, mt, e_stride, bv, relu);
  for (int64_t l = 0; l < cnt; l++) {
    const TilePos at = tile_pos(t + l, image_tiles, tiles_w);
    float* dst = y + (at.b * s.c_out + co) * plane + 4 * at.ty * s.out_w + 4 * at.tx;
    const int64_t rows = std::min<int64_t>(4, s.out_h - 4 * at.ty), cols = std::min<int64_t>(4, s.out_w - 4 * at.tx);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) dst[r * s.out_w + c] = o[r][c][l];
  }
}

// The pooled epilogue of the same: pool_math with every lane placed as tile (0, 0) of a 4 L-wide plane,
// whose window choices are then moved to each tile's own position.
template <int L>
VGG_INLINE void pool_tiles_gathered(const PoolTarget& pool, const ConvShape& s, int64_t co, int64_t t, int64_t cnt,
                                    const float* mt, int64_t e_stride, float bv, bool relu) {
  const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s);
  const int64_t ph = s.out_h / 2, pw = s.out_w / 2;
  constexpr int32_t kWidth = 4 * L;
  VecF<L> best[2][2];
  VecI<L> flat[2][2];
  pool_math<L>(best, flat, mt, e_stride, bv, relu, 0, 0, kWidth);
  for (int64_t l = 0; l < cnt; l++) {
    const TilePos at = tile_pos(t + l, image_tiles, tiles_w);
    float* yp = pool.y + (at.b * s.c_out + co) * ph * pw;
    int32_t* ap = pool.argmax + (at.b * s.c_out + co) * ph * pw;
    for (int wr = 0; wr < 2 && 2 * at.ty + wr < ph; wr++)
      for (int wc = 0; wc < 2 && 2 * at.tx + wc < pw; wc++) {
        // flat = row * kWidth + column in the lane's placement, where lane l's tile starts at column 4 l.
        const int32_t f = flat[wr][wc][l];
        const int64_t row = 4 * at.ty + f / kWidth, col = 4 * at.tx + f % kWidth - 4 * l;
        const int64_t i = (2 * at.ty + wr) * pw + 2 * at.tx + wc;
        yp[i] = best[wr][wc][l];
        ap[i] = static_cast<int32_t>(row * s.out_w + col);
      }
  }
}

// Weight gradient: for a 4x4 tile of dY and its 6x6 input patch d, dW (3x3) = G^T [(A dY A^T) .* (B^T d B)] G,
// A = (A^T)^T (6x4). y = A x for a column of 4 values:
template <typename V>
VGG_INLINE void a6(V d0, V d1, V d2, V d3, V (&y)[6]) {
  y[0] = d0;
  y[1] = (d0 + d1) + (d2 + d3);
  y[2] = (d0 - d1) + (d2 - d3);
  y[3] = d0 + 2.0f * d1 + 4.0f * d2 + 8.0f * d3;
  y[4] = d0 - 0.5f * d1 + 0.25f * d2 - 0.125f * d3;
  y[5] = d3;
}

// store(e, V) for the 36 points e = (i, j) of A dY A^T from the 4x4 tiles d[r][c] (lanes = tiles).
template <typename V, typename Store>
VGG_INLINE void grad_math(const V (&d)[4][4], const Store& store) {
  V t[6][4];  // A dY, column by column
  for (int c = 0; c < 4; c++) {
    V out[6];
    a6(d[0][c], d[1][c], d[2][c], d[3][c], out);
    for (int i = 0; i < 6; i++) t[i][c] = out[i];
  }
  for (int i = 0; i < 6; i++) {  // (A dY) A^T, row by row
    V out[6];
    a6(t[i][0], t[i][1], t[i][2], t[i][3], out);
    for (int j = 0; j < 6; j++) store(i * 6 + j, out[j]);
  }
}

// The 4x4 dY tiles [t, t + cnt) of output channel co (cnt <= L), each gathered lane by lane, outputs past
// the bottom and right edges read as 0.
template <int L>
VGG_INLINE void gather_grad_tiles(VecF<L> (&d)[4][4], const float* dy, const ConvShape& s, int64_t co, int64_t t,
                                  int64_t cnt) {
  const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s), plane = s.out_h * s.out_w;
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < 4; c++) d[r][c] = VecF<L>{};
  for (int64_t l = 0; l < cnt; l++) {
    const TilePos at = tile_pos(t + l, image_tiles, tiles_w);
    const float* src = dy + (at.b * s.c_out + co) * plane + 4 * at.ty * s.out_w + 4 * at.tx;
    const int64_t rows = std::min<int64_t>(4, s.out_h - 4 * at.ty), cols = std::min<int64_t>(4, s.out_w - 4 * at.tx);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) d[r][c][l] = src[r * s.out_w + c];
  }
}

// G's points of the gathered dY tiles [t, t + cnt) of channel co at dst (stride e_stride between points).
template <int L>
VGG_INLINE void grad_tiles_gathered(float* dst, int64_t e_stride, const float* dy, const ConvShape& s, int64_t co,
                                    int64_t t, int64_t cnt) {
  typedef VecF<L> V;
  V d[4][4];
  gather_grad_tiles<L>(d, dy, s, co, t, cnt);
  if (cnt == L) return grad_math(d, StoreLanes<V>{dst, e_stride});
  float tmp[36 * L];
  grad_math(d, StoreLanes<V>{tmp, L});
  for (int e = 0; e < 36; e++)
    for (int64_t j = 0; j < cnt; j++) dst[e * e_stride + j] = tmp[e * L + j];
}

}  // namespace
}  // namespace vgg
