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
// The transforms work on 8 horizontally adjacent tiles at once (one vector lane per tile), or 16 at the
// avx512 level (winograd_avx512.cc), written once with GCC/Clang vector types (winograd4_math.h); the
// AVX2 copy reads and writes the tiles' columns with shuffles, the portable copy lane by lane.
#include <algorithm>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "isa.h"
#include "pool.h"
#include "threadpool.h"
#include "winograd.h"
#include "winograd4_math.h"
#include "winograd_avx512.h"
#include "workspace.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VGG_X86 1
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

typedef VecF<8> V8;
typedef VecI<8> I8;

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
  input_math(d, StoreLanes<V8>{v, e_stride});
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
  load_patches_portable<8>(d, p, row);
  input_math(d, StoreLanes<V8>{v, e_stride});
}

void output_tiles_portable(float* y, int64_t row, const float* mt, int64_t e_stride, float bv, bool relu,
                           int64_t rows) {
  V8 o[4][4];
  output_math(o, mt, e_stride, bv, relu);
  store_tiles_portable<8>(y, row, o, rows);
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

#ifdef VGG_X86
// The gathered lanes of maps of 1-2 tiles across (winograd4_math.h), compiled for AVX2 + FMA: the compiler
// fuses B^T's multiply-adds as it does in the 8-tile row kernels above and in the 16-tile ones, so the
// levels agree bit for bit.
VGG_AVX2 void input_tiles_gathered_avx2(float* dst, int64_t e_stride, const float* x, const ConvShape& s, int64_t ci,
                                        int64_t t, int64_t cnt) {
  input_tiles_gathered<8>(dst, e_stride, x, s, ci, t, cnt);
}
VGG_AVX2 void output_tiles_gathered_avx2(float* y, const ConvShape& s, int64_t co, int64_t t, int64_t cnt,
                                         const float* mt, int64_t e_stride, float bv, bool relu) {
  output_tiles_gathered<8>(y, s, co, t, cnt, mt, e_stride, bv, relu);
}
VGG_AVX2 void pool_tiles_gathered_avx2(const PoolTarget& pool, const ConvShape& s, int64_t co, int64_t t, int64_t cnt,
                                       const float* mt, int64_t e_stride, float bv, bool relu) {
  pool_tiles_gathered<8>(pool, s, co, t, cnt, mt, e_stride, bv, relu);
}
VGG_AVX2 void grad_tiles_gathered_avx2(float* dst, int64_t e_stride, const float* dy, const ConvShape& s, int64_t co,
                                       int64_t t, int64_t cnt) {
  grad_tiles_gathered<8>(dst, e_stride, dy, s, co, t, cnt);
}
#endif

// Which transforms run: the portable ones, AVX2's 8 tiles per vector, or from the avx512 level 16 (and
// AVX2's 8 for a group of at most 8 tiles, where half a zmm vector would be idle).
struct Level {
  bool avx2, avx512;
  int64_t lanes() const { return avx512 ? 16 : 8; }
};
Level level_in_use() {
  return {isa_at_least(Isa::Avx2Fma), isa_at_least(Isa::Avx512)};
}

#ifdef VGG_X86
VGG_AVX2 void pool_tiles_avx2(float* yp, int32_t* ap, const ConvShape& s, int64_t ty, int64_t tx, int64_t cnt,
                              const float* mt, int64_t e_stride, float bv, bool relu) {
  const int64_t ph = s.out_h / 2, pw = s.out_w / 2;
  V8 best[2][2];
  I8 flat[2][2];
  pool_math<8>(best, flat, mt, e_stride, bv, relu, ty, tx, s.out_w);
  if (cnt < 8 || 2 * (tx + 8) > pw) return store_pooled_lanes<8>(yp, ap, best, flat, ty, tx, cnt, ph, pw);
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
  pool_math<8>(best, flat, mt, e_stride, bv, relu, ty, tx, s.out_w);
  store_pooled_lanes<8>(yp, ap, best, flat, ty, tx, cnt, s.out_h / 2, s.out_w / 2);
}

void pool_run(const PoolTarget& pool, const ConvShape& s, int64_t plane_index, int64_t ty, int64_t tx, int64_t run,
              const float* mt, int64_t e_stride, float bv, bool relu, Level lv) {
  const int64_t pooled_plane = (s.out_h / 2) * (s.out_w / 2);
  float* yp = pool.y + plane_index * pooled_plane;
  int32_t* ap = pool.argmax + plane_index * pooled_plane;
  for (int64_t k = 0; k < run; k += lv.lanes()) {
    const int64_t cnt = std::min(lv.lanes(), run - k);
#ifdef VGG_X86
    if (lv.avx512 && cnt > 8) {
      winograd4_pool16_avx512(yp, ap, s, ty, tx + k, cnt, mt + k, e_stride, bv, relu);
      continue;
    }
    if (lv.avx2) {
      pool_tiles_avx2(yp, ap, s, ty, tx + k, cnt, mt + k, e_stride, bv, relu);
      continue;
    }
#endif
    pool_tiles_portable(yp, ap, s, ty, tx + k, cnt, mt + k, e_stride, bv, relu);
  }
}

// V (36, cIn, chunk) for tiles [t0, t0 + nt) (numbered image after image), 8 or 16 tiles at a time.
void transform_input_chunk(float* v, int64_t e_stride, const float* x, const ConvShape& s, int64_t t0, int64_t nt,
                           int64_t chunk, Level lv) {
  if (gathers_lanes(s)) {
    for (int64_t ci = 0; ci < s.c_in; ci++)
      for (int64_t t = 0; t < nt; t += lv.lanes()) {
        const int64_t cnt = std::min(lv.lanes(), nt - t);
#ifdef VGG_X86
        if (lv.avx512) {
          winograd4_input_gathered16_avx512(v + ci * chunk + t, e_stride, x, s, ci, t0 + t, cnt);
          continue;
        }
        if (lv.avx2) {
          input_tiles_gathered_avx2(v + ci * chunk + t, e_stride, x, s, ci, t0 + t, cnt);
          continue;
        }
#endif
        input_tiles_gathered<8>(v + ci * chunk + t, e_stride, x, s, ci, t0 + t, cnt);
      }
    return;
  }
  const bool avx2 = lv.avx2;
  auto eight = [avx2](float* dst, int64_t stride, const float* p, int64_t strip_w, int64_t cnt) {
    transform8_some<36>([avx2](float* d, int64_t st, const float* q, int64_t sw) { input_tiles(avx2, d, st, q, sw); },
                        dst, stride, p, strip_w, cnt);
  };
#ifdef VGG_X86
  if (lv.avx512) {
    // Every group of up to 16 tiles of a tile row straight from the image (no strip copy).
    const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s), x_size = s.c_in * s.h * s.w;
    for (int64_t ci = 0; ci < s.c_in; ci++)
      for (int64_t t = 0; t < nt;) {
        const TilePos at = tile_pos(t0 + t, image_tiles, tiles_w);
        const int64_t run = std::min(nt - t, tiles_w - at.tx);
        const float* xc = x + at.b * x_size + ci * s.h * s.w;
        for (int64_t k = 0; k < run; k += 16)
          winograd4_input16_image_avx512(v + ci * chunk + t + k, e_stride, xc, s.h, s.w, 4 * at.ty - s.pad_h,
                                         4 * (at.tx + k) - s.pad_w, std::min<int64_t>(16, run - k));
        t += run;
      }
    return;
  }
#endif
  transform_input_tiles<4, 8>(v, e_stride, x, s, t0, nt, chunk, tiles_w_of(s), winograd4_tiles(s), eight);
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
  grad_math(d, StoreLanes<V8>{w, e_stride});
}
#endif

// G's points of dY tiles [t, t + cnt) of channel co at dst (stride e_stride between points), cnt <= 8.
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
  if (avx2) return grad_tiles_gathered_avx2(dst, e_stride, dy, s, co, t, cnt);
#endif
  (void)avx2;
  grad_tiles_gathered<8>(dst, e_stride, dy, s, co, t, cnt);
}

// G's points of output channel co's dY tiles [t0, t0 + nt) at g (stride g_stride between points).
void grad_chunk(float* g, int64_t g_stride, const float* dy, const ConvShape& s, int64_t co, int64_t t0, int64_t nt,
                Level lv) {
#ifdef VGG_X86
  if (lv.avx512) {
    if (gathers_lanes(s)) {
      for (int64_t t = 0; t < nt; t += 16)
        winograd4_grad_gathered16_avx512(g + t, g_stride, dy, s, co, t0 + t, std::min<int64_t>(16, nt - t));
      return;
    }
    // Runs along a tile row, 16 tiles at a time, the map's edges masked (as the gathers' zeros).
    const int64_t tiles_w = tiles_w_of(s), image_tiles = winograd4_tiles(s);
    for (int64_t t = 0; t < nt;) {
      const TilePos at = tile_pos(t0 + t, image_tiles, tiles_w);
      const int64_t run = std::min(nt - t, tiles_w - at.tx), rows = std::min<int64_t>(4, s.out_h - 4 * at.ty);
      const float* plane = dy + (at.b * s.c_out + co) * s.out_h * s.out_w + 4 * at.ty * s.out_w;
      for (int64_t k = 0; k < run; k += 16) {
        const int64_t cnt = std::min<int64_t>(16, run - k), x0 = 4 * (at.tx + k);
        const int64_t cols = std::min(4 * cnt, s.out_w - x0);
        if (cnt == 8 && rows == 4 && cols == 32) {
          grad_tiles_row_avx2(g + t + k, g_stride, plane + x0, s.out_w);
          continue;
        }
        winograd4_grad16_avx512(g + t + k, g_stride, plane + x0, s.out_w, rows, cols, cnt);
      }
      t += run;
    }
    return;
  }
#endif
  for (int64_t t = 0; t < nt; t += 8) grad_tiles(g + t, g_stride, dy, s, co, t0 + t, std::min<int64_t>(8, nt - t), lv.avx2);
}

}  // namespace

int64_t winograd4_weight_acc_size(int64_t c_out, int64_t c_in) { return 36 * c_out * c_in; }

void winograd4_weight_grad_images(float* m, const float* dy, const float* x, int64_t images, const ConvShape& s,
                                  bool accumulate) {
  const Level lv = level_in_use();
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
    transform_input_chunk(v, v_stride, x, s, t0, nt, chunk, lv);
    for (int64_t co = 0; co < s.c_out; co++) grad_chunk(g + co * chunk, g_stride, dy, s, co, t0, nt, lv);
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
  const Level lv = level_in_use();
  const bool avx2 = lv.avx2;
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
    transform_input_chunk(v, v_stride, x, s, t0, nt, chunk, lv);
    for (int e = 0; e < 36; e++)
      sgemm_serial_packed_a(m + e * m_stride, chunk, u + e * block, v + e * v_stride, chunk, s.c_out, nt,
                            s.c_in, 0.0f);
    // Y = A^T M A (+ bias, ReLU) for runs of up to 8 (16) tiles along a tile row; with 8 lanes a run that
    // is short or crosses the bottom/right edge goes through a 4x32 buffer, with 16 through opmasks (lanes
    // past the run read M's slack).
    if (gathers_lanes(s)) {
      for (int64_t co = 0; co < s.c_out; co++) {
        const float bv = bias ? bias[co] : 0.0f;
        for (int64_t t = 0; t < nt; t += lv.lanes()) {
          const int64_t cnt = std::min(lv.lanes(), nt - t);
          const float* mt = m + co * chunk + t;
#ifdef VGG_X86
          if (lv.avx512) {
            if (pool)
              winograd4_pool_gathered16_avx512(*pool, s, co, t0 + t, cnt, mt, m_stride, bv, relu);
            else
              winograd4_output_gathered16_avx512(y, s, co, t0 + t, cnt, mt, m_stride, bv, relu);
            continue;
          }
          if (lv.avx2) {
            if (pool)
              pool_tiles_gathered_avx2(*pool, s, co, t0 + t, cnt, mt, m_stride, bv, relu);
            else
              output_tiles_gathered_avx2(y, s, co, t0 + t, cnt, mt, m_stride, bv, relu);
            continue;
          }
#endif
          if (pool)
            pool_tiles_gathered<8>(*pool, s, co, t0 + t, cnt, mt, m_stride, bv, relu);
          else
            output_tiles_gathered<8>(y, s, co, t0 + t, cnt, mt, m_stride, bv, relu);
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
          pool_run(*pool, s, b * s.c_out + co, ty, tx, run, m + co * chunk + t, m_stride, bv, relu, lv);
          t += run;
          continue;
        }
        float* yc = y + (b * s.c_out + co) * plane;
        const int64_t rows = std::min<int64_t>(4, s.out_h - 4 * ty);
        for (int64_t k = 0; k < run; k += lv.lanes()) {
          const int64_t cnt = std::min(lv.lanes(), run - k);
          const int64_t cols = std::min<int64_t>(4 * cnt, s.out_w - 4 * (tx + k));
          float* dst = yc + 4 * ty * s.out_w + 4 * (tx + k);
          const float* mt = m + co * chunk + t + k;
#ifdef VGG_X86
          if (lv.avx512 && cnt > 8) {
            winograd4_output16_avx512(dst, s.out_w, mt, m_stride, bv, relu, rows, cols);
            continue;
          }
#endif
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
