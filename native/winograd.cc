// F(2x2, 3x3) (Lavin & Gray): with input tile d (4x4) and filter g (3x3),
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A,
// and the elementwise product summed over input channels is, for each of the 16 tile positions e, a GEMM
// M_e (cOut, tiles) = U_e (cOut, cIn) x V_e (cIn, tiles). Tiles are processed in chunks that keep V and M
// in cache.
#include "winograd.h"

#include <algorithm>
#include <vector>

#include "gemm.h"
#include "isa.h"
#include "pool.h"
#include "threadpool.h"
#include "winograd_avx512.h"
#include "workspace.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VGG_X86 1
#endif

namespace vgg {

bool winograd_applies(const ConvShape& s) {
  return s.kh == 3 && s.kw == 3 && s.stride_h == 1 && s.stride_w == 1 && s.out_h == s.h + 2 * s.pad_h - 2 &&
         s.out_w == s.w + 2 * s.pad_w - 2 && s.out_h > 0 && s.out_w > 0;
}

void fill_strip(float* strip, int64_t strip_w, int rows, const float* xc, const ConvShape& s, int64_t iy0) {
  // Strip column j holds x column j - padW; only the columns outside the image are zeroed.
  const int64_t j0 = std::max<int64_t>(0, s.pad_w), src0 = j0 - s.pad_w;
  for (int r = 0; r < rows; r++) {
    float* row = strip + r * strip_w;
    const int64_t iy = iy0 + r;
    const int64_t len = iy < 0 || iy >= s.h ? 0 : std::max<int64_t>(0, std::min(s.w - src0, strip_w - j0));
    if (len == 0) {
      std::fill(row, row + strip_w, 0.0f);
      continue;
    }
    std::fill(row, row + j0, 0.0f);
    std::copy_n(xc + iy * s.w + src0, len, row + j0);
    std::fill(row + j0 + len, row + strip_w, 0.0f);
  }
}

void transform_weights(float* packed, const float* w, int64_t c_out, int64_t c_in, int points,
                       void (*filters8)(const float* g, int64_t nb, float* out)) {
  const int64_t plane = c_out * c_in, block = packed_a_size(c_out, c_in);
  const PackedALayout layout = packed_a_layout(c_out, c_in);
  // The panel rows past cOut are zeros (the GEMM reads whole 6-row panels).
  if (layout.m_padded > c_out)
    for (int e = 0; e < points; e++)
      for (int64_t i = c_out; i < layout.m_padded; i++)
        for (int64_t p = 0; p < c_in; p++) packed[e * block + layout.offset(i, p)] = 0.0f;
  parallel_run(
      [&](int ith, int nth) {
        int64_t f0, f1;
        split_range(plane, ith, nth, 64, &f0, &f1);
        float out[64 * 8];
        for (int64_t fb = f0; fb < f1; fb += 8) {
          const int64_t nb = std::min<int64_t>(8, f1 - fb);
          filters8(w + fb * 9, nb, out);
          for (int64_t l = 0; l < nb; l++) {
            const int64_t f = fb + l, at = layout.offset(f / c_in, f % c_in);
            for (int e = 0; e < points; e++) packed[e * block + at] = out[e * 8 + l];
          }
        }
      },
      (plane + 63) / 64);
}

int64_t winograd_weights_size(int64_t c_out, int64_t c_in) { return 16 * packed_a_size(c_out, c_in); }

void winograd_prepare_weights(float* packed, const float* w, int64_t c_out, int64_t c_in) {
  transform_weights(packed, w, c_out, c_in, 16, [](const float* g, int64_t nb, float* out) {
    for (int64_t l = 0; l < nb; l++) {
      const float* gl = g + l * 9;
      float t[4][3];  // G g: (4, 3)
      for (int j = 0; j < 3; j++) {
        t[0][j] = gl[j];
        t[1][j] = 0.5f * (gl[j] + gl[3 + j] + gl[6 + j]);
        t[2][j] = 0.5f * (gl[j] - gl[3 + j] + gl[6 + j]);
        t[3][j] = gl[6 + j];
      }
      for (int i = 0; i < 4; i++) {  // (G g) G^T: (4, 4)
        out[(i * 4 + 0) * 8 + l] = t[i][0];
        out[(i * 4 + 1) * 8 + l] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
        out[(i * 4 + 2) * 8 + l] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
        out[(i * 4 + 3) * 8 + l] = t[i][2];
      }
    }
  });
}

namespace {

// One tile: v[e * e_stride] = (B^T d B)_e, d the 4x4 patch of xc (h, w) at (iy0, ix0), zero outside.
void input_transform_1(float* v, int64_t e_stride, const float* xc, const ConvShape& s, int64_t iy0, int64_t ix0) {
  float d[4][4];
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < 4; c++) {
      const int64_t iy = iy0 + r, ix = ix0 + c;
      d[r][c] = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w ? xc[iy * s.w + ix] : 0.0f;
    }
  float b[4][4];  // B^T d
  for (int c = 0; c < 4; c++) {
    b[0][c] = d[0][c] - d[2][c];
    b[1][c] = d[1][c] + d[2][c];
    b[2][c] = d[2][c] - d[1][c];
    b[3][c] = d[1][c] - d[3][c];
  }
  for (int r = 0; r < 4; r++) {  // (B^T d) B
    v[(r * 4 + 0) * e_stride] = b[r][0] - b[r][2];
    v[(r * 4 + 1) * e_stride] = b[r][1] + b[r][2];
    v[(r * 4 + 2) * e_stride] = b[r][2] - b[r][1];
    v[(r * 4 + 3) * e_stride] = b[r][1] - b[r][3];
  }
}

// One tile: the 2x2 outputs of A^T M A (+ bias, ReLU) into yc (outH, outW) at (2 ty, 2 tx), clipped.
void output_transform_1(float* yc, const ConvShape& s, const float* mt, int64_t e_stride, float bv, bool relu,
                        int64_t ty, int64_t tx) {
  float a[2][4];  // A^T M
  for (int c = 0; c < 4; c++) {
    const float m0 = mt[c * e_stride], m1 = mt[(4 + c) * e_stride];
    const float m2 = mt[(8 + c) * e_stride], m3 = mt[(12 + c) * e_stride];
    a[0][c] = m0 + m1 + m2;
    a[1][c] = m1 - m2 - m3;
  }
  for (int r = 0; r < 2; r++) {
    const int64_t oy = 2 * ty + r;
    if (oy >= s.out_h) break;
    const float out[2] = {a[r][0] + a[r][1] + a[r][2] + bv, a[r][1] - a[r][2] - a[r][3] + bv};
    for (int c = 0; c < 2; c++) {
      const int64_t ox = 2 * tx + c;
      if (ox >= s.out_w) break;
      yc[oy * s.out_w + ox] = relu && out[c] < 0.0f ? 0.0f : out[c];
    }
  }
}

#ifdef VGG_X86
#define VGG_AVX2 __attribute__((target("avx2,fma")))
// Columns 0, 2, .., 14 (even) or 1, 3, .., 15 (odd) of the 16 floats at p.
VGG_AVX2 inline __m256 even16(const float* p) {
  const __m256 lo = _mm256_loadu_ps(p), hi = _mm256_loadu_ps(p + 8);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
}
VGG_AVX2 inline __m256 odd16(const float* p) {
  const __m256 lo = _mm256_loadu_ps(p), hi = _mm256_loadu_ps(p + 8);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
}

// Eight horizontally adjacent tiles; p is the top-left of the first patch, row stride w. Lane l of column
// c of row r is p[r * w + 2 l + c].
VGG_AVX2 void input_transform_8_avx2(float* v, int64_t e_stride, const float* p, int64_t w) {
  __m256 d[4][4];
  for (int r = 0; r < 4; r++) {
    const float* row = p + r * w;
    d[r][0] = even16(row), d[r][1] = odd16(row), d[r][2] = even16(row + 2), d[r][3] = odd16(row + 2);
  }
  __m256 b[4][4];
  for (int c = 0; c < 4; c++) {
    b[0][c] = _mm256_sub_ps(d[0][c], d[2][c]);
    b[1][c] = _mm256_add_ps(d[1][c], d[2][c]);
    b[2][c] = _mm256_sub_ps(d[2][c], d[1][c]);
    b[3][c] = _mm256_sub_ps(d[1][c], d[3][c]);
  }
  for (int r = 0; r < 4; r++) {
    _mm256_storeu_ps(v + (r * 4 + 0) * e_stride, _mm256_sub_ps(b[r][0], b[r][2]));
    _mm256_storeu_ps(v + (r * 4 + 1) * e_stride, _mm256_add_ps(b[r][1], b[r][2]));
    _mm256_storeu_ps(v + (r * 4 + 2) * e_stride, _mm256_sub_ps(b[r][2], b[r][1]));
    _mm256_storeu_ps(v + (r * 4 + 3) * e_stride, _mm256_sub_ps(b[r][1], b[r][3]));
  }
}

// Eight adjacent tiles, all 16x2 outputs inside: y is the first tile's top-left output, row stride out_w.
VGG_AVX2 void output_transform_8_avx2(float* y, int64_t out_w, const float* mt, int64_t e_stride, float bv,
                                      bool relu) {
  __m256 a[2][4];
  for (int c = 0; c < 4; c++) {
    const __m256 m0 = _mm256_loadu_ps(mt + c * e_stride), m1 = _mm256_loadu_ps(mt + (4 + c) * e_stride);
    const __m256 m2 = _mm256_loadu_ps(mt + (8 + c) * e_stride), m3 = _mm256_loadu_ps(mt + (12 + c) * e_stride);
    a[0][c] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
    a[1][c] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
  }
  const __m256 bias = _mm256_set1_ps(bv), zero = _mm256_setzero_ps();
  for (int r = 0; r < 2; r++) {
    __m256 o0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[r][0], a[r][1]), a[r][2]), bias);
    __m256 o1 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(a[r][1], a[r][2]), a[r][3]), bias);
    if (relu) o0 = _mm256_max_ps(zero, o0), o1 = _mm256_max_ps(zero, o1);  // keeps NaN, like the scalar path
    // Interleave even (o0) and odd (o1) output columns.
    const __m256 lo = _mm256_unpacklo_ps(o0, o1), hi = _mm256_unpackhi_ps(o0, o1);
    _mm256_storeu_ps(y + r * out_w, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(y + r * out_w + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
  }
}
#endif

void input_transform_8(float* v, int64_t e_stride, const float* p, int64_t w) {
#ifdef VGG_X86
  input_transform_8_avx2(v, e_stride, p, w);
#else
  (void)v, (void)e_stride, (void)p, (void)w;
#endif
}

void output_transform_8(float* y, int64_t out_w, const float* mt, int64_t e_stride, float bv, bool relu) {
#ifdef VGG_X86
  output_transform_8_avx2(y, out_w, mt, e_stride, bv, relu);
#else
  (void)y, (void)out_w, (void)mt, (void)e_stride, (void)bv, (void)relu;
#endif
}

// V (16, cIn, chunk) for tiles [t0, t0 + nt) of one image: V_e[ci][t] = (B^T d B)_e. With AVX2, every
// tile goes through the 8-wide transform: the 4 input rows of a tile row are first copied into a
// zero-padded strip (so the image's edges need no special case), and a group of fewer than 8 tiles (row
// or chunk end) is transformed into a small buffer and copied out. From the avx512 level a group of 9 to
// 16 tiles goes through the 16-wide transform (its short groups through an opmask).
void transform_input_chunk(float* v, int64_t e_stride, const float* x, const ConvShape& s, int64_t t0, int64_t nt,
                           int64_t chunk) {
  const int64_t tiles_w = (s.out_w + 1) / 2, tiles = winograd_tiles(s), x_size = s.c_in * s.h * s.w;
#ifdef VGG_X86
  auto eight = [](float* dst, int64_t stride, const float* p, int64_t strip_w, int64_t cnt) {
    transform8_some<16>(input_transform_8, dst, stride, p, strip_w, cnt);
  };
  if (isa_at_least(Isa::Avx512))
    return transform_input_tiles<2, 16>(v, e_stride, x, s, t0, nt, chunk, tiles_w, tiles,
                                        [&](float* dst, int64_t stride, const float* p, int64_t strip_w, int64_t cnt) {
                                          if (cnt > 8) return winograd2_input16_avx512(dst, stride, p, strip_w, cnt);
                                          eight(dst, stride, p, strip_w, cnt);
                                        });
  if (isa_at_least(Isa::Avx2Fma))
    return transform_input_tiles<2, 8>(v, e_stride, x, s, t0, nt, chunk, tiles_w, tiles, eight);
#endif
  for (int64_t ci = 0; ci < s.c_in; ci++)
    for (int64_t t = 0; t < nt; t++) {
      const int64_t b = (t0 + t) / tiles, tt = (t0 + t) - b * tiles;
      const int64_t ty = tt / tiles_w, tx = tt - ty * tiles_w;
      const float* xc = x + b * x_size + ci * s.h * s.w;
      input_transform_1(v + ci * chunk + t, e_stride, xc, s, 2 * ty - s.pad_h, 2 * tx - s.pad_w);
    }
}

}  // namespace

int64_t winograd_tiles(const ConvShape& s) { return ((s.out_h + 1) / 2) * ((s.out_w + 1) / 2); }

void winograd_forward_images(float* y, const float* x, int64_t images, const float* u, const float* bias,
                             const ConvShape& s, bool relu, int64_t tile_begin, int64_t tile_end,
                             const PoolTarget* pool) {
  const bool avx2 = isa_at_least(Isa::Avx2Fma), avx512 = isa_at_least(Isa::Avx512);
  const int64_t lanes = avx512 ? 16 : 8;
  const int64_t tiles_w = (s.out_w + 1) / 2, image_tiles = winograd_tiles(s), tiles = images * image_tiles;
  const int64_t plane = s.out_h * s.out_w;
  // Chunk so V (16, cIn, chunk) and M (16, cOut, chunk) take about 1 MiB together.
  int64_t chunk = (int64_t{1} << 14) / (s.c_in + s.c_out);
  chunk = std::max<int64_t>(16, std::min<int64_t>(512, chunk / 16 * 16));
  // The 16 matrices of V and of M lie a cache line more than a multiple of their size apart: with
  // power-of-two sizes, the 16 values of one tile would otherwise fall in the same L1 set.
  const int64_t v_stride = s.c_in * chunk + 16, m_stride = s.c_out * chunk + 16;
  float* v = thread_scratch(2, 16 * v_stride);
  float* m = thread_scratch(3, 16 * m_stride + 8);  // + 8: the output transform's spare lanes
  const int64_t last = tile_end < 0 ? tiles : std::min(tile_end, tiles);
  for (int64_t t0 = tile_begin; t0 < last; t0 += chunk) {
    const int64_t nt = std::min(chunk, last - t0);
    // Input transform: V_e[ci][t] = (B^T d B)_e for the 4x4 patch at (2 ty - padH, 2 tx - padW).
    transform_input_chunk(v, v_stride, x, s, t0, nt, chunk);
    const int64_t block = packed_a_size(s.c_out, s.c_in);
    for (int e = 0; e < 16; e++)
      sgemm_serial_packed_a(m + e * m_stride, chunk, u + e * block, v + e * v_stride, chunk, s.c_out, nt,
                            s.c_in, 0.0f);
    // Output transform: Y = A^T M A, plus bias and ReLU, clipped at the bottom/right edge. With AVX2 a
    // group of fewer than 8 tiles or one that crosses the edge goes through a 2x16 buffer (the lanes past
    // the group read M's slack and are dropped); from the avx512 level, 9 to 16 tiles are stored through
    // opmasks.
    for (int64_t co = 0; co < s.c_out; co++) {
      const float bv = bias ? bias[co] : 0.0f;
      for (int64_t t = 0; t < nt;) {
        const int64_t b = (t0 + t) / image_tiles, tt = (t0 + t) - b * image_tiles;
        const int64_t ty = tt / tiles_w, tx = tt - ty * tiles_w;
        if (pool) {
          // Each tile is one 2x2 window: up to 8 tiles of the row into a 2x16 buffer, then pooled.
          const int64_t run = std::min<int64_t>(8, std::min(nt - t, tiles_w - tx));
          const float* mt = m + co * chunk + t;
          float tmp[2 * 16];
          if (avx2) {
            output_transform_8(tmp, 16, mt, m_stride, bv, relu);
          } else {
            const ConvShape row16{1, s.c_in, 2, 16, s.c_out, 3, 3, 1, 1, 0, 0, 2, 16};
            for (int64_t j = 0; j < run; j++) output_transform_1(tmp, row16, mt + j, m_stride, bv, relu, 0, j);
          }
          const int64_t ph = s.out_h / 2, pw = s.out_w / 2;
          if (ty < ph) {
            const int64_t at = (b * s.c_out + co) * ph * pw + ty * pw;
            for (int64_t j = 0; j < run && tx + j < pw; j++) {
              int which;
              pool->y[at + tx + j] =
                  max_of_window(tmp[2 * j], tmp[2 * j + 1], tmp[16 + 2 * j], tmp[17 + 2 * j], &which);
              pool->argmax[at + tx + j] =
                  static_cast<int32_t>((2 * ty + (which >> 1)) * s.out_w + 2 * (tx + j) + (which & 1));
            }
          }
          t += run;
          continue;
        }
        float* yc = y + (b * s.c_out + co) * plane;
        if (!avx2) {
          output_transform_1(yc, s, m + co * chunk + t, m_stride, bv, relu, ty, tx);
          t++;
          continue;
        }
        const int64_t run = std::min(nt - t, tiles_w - tx);
        const int64_t rows = std::min<int64_t>(2, s.out_h - 2 * ty);
        for (int64_t k = 0; k < run; k += lanes) {
          const int64_t cnt = std::min(lanes, run - k);
          const int64_t cols = std::min<int64_t>(2 * cnt, s.out_w - 2 * (tx + k));
          float* dst = yc + 2 * ty * s.out_w + 2 * (tx + k);
          const float* mt = m + co * chunk + t + k;
#ifdef VGG_X86
          if (cnt > 8) {
            winograd2_output16_avx512(dst, s.out_w, mt, m_stride, bv, relu, rows, cols);
            continue;
          }
#endif
          if (rows == 2 && cols == 16) {
            output_transform_8(dst, s.out_w, mt, m_stride, bv, relu);
            continue;
          }
          float tmp[2 * 16];
          output_transform_8(tmp, 16, mt, m_stride, bv, relu);
          for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) dst[r * s.out_w + c] = tmp[r * 16 + c];
        }
        t += run;
      }
    }
  }
}

int64_t winograd_weight_acc_size(int64_t c_out, int64_t c_in) { return 16 * c_out * c_in; }

namespace {

// One tile of dy: w[e * e_stride] = (A dY A^T)_e, dY the 2x2 block of dyc (outH, outW) at (2 ty, 2 tx),
// zero outside. A = [[1, 0], [1, 1], [1, -1], [0, -1]] (the transpose of the forward pass's A^T).
void grad_transform_1(float* w, int64_t e_stride, const float* dyc, const ConvShape& s, int64_t ty, int64_t tx) {
  float d[2][2];
  for (int r = 0; r < 2; r++)
    for (int c = 0; c < 2; c++) {
      const int64_t oy = 2 * ty + r, ox = 2 * tx + c;
      d[r][c] = oy < s.out_h && ox < s.out_w ? dyc[oy * s.out_w + ox] : 0.0f;
    }
  float t[4][2];  // A dY
  for (int c = 0; c < 2; c++) {
    t[0][c] = d[0][c];
    t[1][c] = d[0][c] + d[1][c];
    t[2][c] = d[0][c] - d[1][c];
    t[3][c] = -d[1][c];
  }
  for (int r = 0; r < 4; r++) {  // (A dY) A^T
    w[(r * 4 + 0) * e_stride] = t[r][0];
    w[(r * 4 + 1) * e_stride] = t[r][0] + t[r][1];
    w[(r * 4 + 2) * e_stride] = t[r][0] - t[r][1];
    w[(r * 4 + 3) * e_stride] = -t[r][1];
  }
}

#ifdef VGG_X86
// Eight horizontally adjacent tiles, all inside: p is the first tile's top-left in dyc, row stride out_w.
VGG_AVX2 void grad_transform_8_avx2(float* w, int64_t e_stride, const float* p, int64_t out_w) {
  const __m256 d00 = even16(p), d01 = odd16(p), d10 = even16(p + out_w), d11 = odd16(p + out_w);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 t[4][2] = {{d00, d01},
                          {_mm256_add_ps(d00, d10), _mm256_add_ps(d01, d11)},
                          {_mm256_sub_ps(d00, d10), _mm256_sub_ps(d01, d11)},
                          {_mm256_sub_ps(zero, d10), _mm256_sub_ps(zero, d11)}};
  for (int r = 0; r < 4; r++) {
    _mm256_storeu_ps(w + (r * 4 + 0) * e_stride, t[r][0]);
    _mm256_storeu_ps(w + (r * 4 + 1) * e_stride, _mm256_add_ps(t[r][0], t[r][1]));
    _mm256_storeu_ps(w + (r * 4 + 2) * e_stride, _mm256_sub_ps(t[r][0], t[r][1]));
    _mm256_storeu_ps(w + (r * 4 + 3) * e_stride, _mm256_sub_ps(zero, t[r][1]));
  }
}
#endif

}  // namespace

void winograd_weight_grad_images(float* m, const float* dy, const float* x, int64_t images, const ConvShape& s,
                                 bool accumulate) {
  const bool avx2 = isa_at_least(Isa::Avx2Fma), avx512 = isa_at_least(Isa::Avx512);
  (void)avx2, (void)avx512;  // only the x86 build has the vector transforms
  const int64_t tiles_w = (s.out_w + 1) / 2, image_tiles = winograd_tiles(s), tiles = images * image_tiles;
  const int64_t plane = s.out_h * s.out_w;
  // Chunk so V (16, cIn, chunk) and W (16, cOut, chunk) take about 1 MiB together; longer chunks make
  // longer GEMM reductions (k = tiles), so the floor is higher than the forward pass's.
  int64_t chunk = (int64_t{1} << 14) / (s.c_in + s.c_out);
  chunk = std::max<int64_t>(256, std::min<int64_t>(512, chunk / 16 * 16));
  // Padded strides between the 16 matrices, as in the forward pass.
  const int64_t v_stride = s.c_in * chunk + 16, g_stride = s.c_out * chunk + 16;
  float* v = thread_scratch(2, 16 * v_stride);
  float* g = thread_scratch(3, 16 * g_stride);
  const int64_t dstrip_w = 2 * tiles_w + 32;  // 32 readable floats from each group's start
  float* dstrip = thread_scratch(5, 2 * dstrip_w);
  bool acc = accumulate;
  for (int64_t t0 = 0; t0 < tiles; t0 += chunk) {
    const int64_t nt = std::min(chunk, tiles - t0);
    transform_input_chunk(v, v_stride, x, s, t0, nt, chunk);
    for (int64_t co = 0; co < s.c_out; co++) {
      for (int64_t t = 0; t < nt;) {
        const int64_t b = (t0 + t) / image_tiles, tt = (t0 + t) - b * image_tiles;
        const int64_t ty = tt / tiles_w, tx = tt - ty * tiles_w;
        const float* dyc = dy + (b * s.c_out + co) * plane;
#ifdef VGG_X86
        if (avx2) {
          // The tile row's 2 dy rows, zero-padded to 2 tiles_w + 32 columns, then 8 tiles at a time (a
          // short group through a small buffer), or from the avx512 level 16 (through an opmask).
          const int64_t run = std::min(nt - t, tiles_w - tx);
          for (int r = 0; r < 2; r++) {
            float* row = dstrip + r * dstrip_w;
            const int64_t oy = 2 * ty + r;
            const int64_t len = oy < s.out_h ? s.out_w : 0;
            if (len > 0) std::copy_n(dyc + oy * s.out_w, len, row);
            std::fill(row + len, row + dstrip_w, 0.0f);
          }
          const int64_t lanes = avx512 ? 16 : 8;
          for (int64_t k = 0; k < run; k += lanes) {
            const int64_t cnt = std::min(lanes, run - k);
            float* dst = g + co * chunk + t + k;
            const float* p = dstrip + 2 * (tx + k);
            if (cnt > 8) {
              winograd2_grad16_avx512(dst, g_stride, p, dstrip_w, cnt);
              continue;
            }
            if (cnt == 8) {
              grad_transform_8_avx2(dst, g_stride, p, dstrip_w);
              continue;
            }
            float tmp[16 * 8];
            grad_transform_8_avx2(tmp, 8, p, dstrip_w);
            for (int e = 0; e < 16; e++)
              for (int64_t j = 0; j < cnt; j++) dst[e * g_stride + j] = tmp[e * 8 + j];
          }
          t += run;
          continue;
        }
#endif
        grad_transform_1(g + co * chunk + t, g_stride, dyc, s, ty, tx);
        t++;
      }
    }
    for (int e = 0; e < 16; e++)
      sgemm_serial(m + e * s.c_out * s.c_in, s.c_in, g + e * g_stride, chunk, v + e * v_stride, chunk,
                   s.c_out, s.c_in, nt, false, true, acc ? 1.0f : 0.0f);
    acc = true;
  }
  if (!acc) std::fill(m, m + winograd_weight_acc_size(s.c_out, s.c_in), 0.0f);
}

void winograd_weight_grad_finish(float* dw, const float* m, int64_t c_out, int64_t c_in, int64_t f0, int64_t f1) {
  const int64_t plane = c_out * c_in;
  for (int64_t f = f0; f < f1; f++) {
    float t[3][4];  // G^T M, G = [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]
    for (int c = 0; c < 4; c++) {
      const float m0 = m[(0 + c) * plane + f], m1 = m[(4 + c) * plane + f];
      const float m2 = m[(8 + c) * plane + f], m3 = m[(12 + c) * plane + f];
      t[0][c] = m0 + 0.5f * (m1 + m2);
      t[1][c] = 0.5f * (m1 - m2);
      t[2][c] = 0.5f * (m1 + m2) + m3;
    }
    float* out = dw + f * 9;
    for (int r = 0; r < 3; r++) {  // (G^T M) G
      out[r * 3 + 0] = t[r][0] + 0.5f * (t[r][1] + t[r][2]);
      out[r * 3 + 1] = 0.5f * (t[r][1] - t[r][2]);
      out[r * 3 + 2] = 0.5f * (t[r][1] + t[r][2]) + t[r][3];
    }
  }
}

const char* winograd_kernel_name() {
  if (isa_at_least(Isa::Avx512)) return "16 tiles per vector, avx512 (some groups of up to 8: avx2+fma)";
  return isa_at_least(Isa::Avx2Fma) ? "8 tiles per vector, avx2+fma" : "portable C++";
}

}  // namespace vgg
