// Convolution as GEMM. Per image: cols (cIn*kh*kw, outH*outW) = im2col(x), y = w x cols (+ bias, ReLU in
// the GEMM epilogue). A 1x1 stride-1 unpadded conv needs no im2col: cols is the image itself.
// The input gradient is the adjoint: cols = w^T x dy, dx = col2im(cols) (a transposed convolution).
// The weight gradient is dw = sum over images of dy x cols^T.
// Work is split over images when the batch divides well over the threads (each thread runs serial GEMMs
// on its own images), else image by image with the GEMM itself threaded.
#include "conv2d.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <chrono>
#include <cstring>
#include <functional>
#include <cstdio>
#include <string>
#include <vector>

#include "gemm.h"
#include "isa.h"
#include "kernel_cache.h"
#include "pool.h"
#include "winograd.h"
#include "threadpool.h"
#include "workspace.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace vgg {
namespace {

int64_t kdim_of(const ConvShape& s) { return s.c_in * s.kh * s.kw; }
int64_t plane_of(const ConvShape& s) { return s.out_h * s.out_w; }
bool is_pointwise(const ConvShape& s) {
  return s.kh == 1 && s.kw == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0 &&
         s.out_h == s.h && s.out_w == s.w;
}

// The output columns [ox0, ox1) whose tap ix = ox*stride - pad + kj lies inside [0, w).
void valid_cols(int64_t kj, int64_t stride, int64_t pad, int64_t w, int64_t out_w, int64_t* ox0, int64_t* ox1) {
  int64_t lo = pad - kj;  // smallest ox*stride allowed
  int64_t a = lo <= 0 ? 0 : (lo + stride - 1) / stride;
  int64_t hi = w - 1 + pad - kj;  // largest ox*stride allowed
  int64_t b = hi < 0 ? 0 : hi / stride + 1;
  *ox0 = std::min(a, out_w);
  *ox1 = std::max(*ox0, std::min(b, out_w));
}

// cols rows for channels [c0, c1): cols is (cIn*kh*kw, outH*outW) with row stride ld (plane unless the
// images of a batch sit side by side); x is one image (cIn, h, w).
void im2col(float* cols, const float* x, const ConvShape& s, int64_t c0, int64_t c1, int64_t ld) {
  const int64_t plane = ld;
  for (int64_t ci = c0; ci < c1; ci++)
    for (int64_t ki = 0; ki < s.kh; ki++)
      for (int64_t kj = 0; kj < s.kw; kj++) {
        float* row = cols + ((ci * s.kh + ki) * s.kw + kj) * plane;
        int64_t ox0, ox1;
        valid_cols(kj, s.stride_w, s.pad_w, s.w, s.out_w, &ox0, &ox1);
        for (int64_t oy = 0; oy < s.out_h; oy++) {
          float* out = row + oy * s.out_w;
          const int64_t iy = oy * s.stride_h - s.pad_h + ki;
          if (iy < 0 || iy >= s.h) {
            std::memset(out, 0, s.out_w * sizeof(float));
            continue;
          }
          const float* in = x + (ci * s.h + iy) * s.w - s.pad_w + kj;
          for (int64_t ox = 0; ox < ox0; ox++) out[ox] = 0.0f;
          if (s.stride_w == 1) {
            if (ox1 > ox0) std::memcpy(out + ox0, in + ox0, (ox1 - ox0) * sizeof(float));
          } else {
            for (int64_t ox = ox0; ox < ox1; ox++) out[ox] = in[ox * s.stride_w];
          }
          for (int64_t ox = ox1; ox < s.out_w; ox++) out[ox] = 0.0f;
        }
      }
}

// dx channels [c0, c1) of one image (cIn, h, w) = col2im(cols), cols with row stride ld; dx is overwritten.
void col2im(float* dx, const float* cols, const ConvShape& s, int64_t c0, int64_t c1, int64_t ld) {
  const int64_t plane = ld;
  std::memset(dx + c0 * s.h * s.w, 0, (c1 - c0) * s.h * s.w * sizeof(float));
  for (int64_t ci = c0; ci < c1; ci++)
    for (int64_t ki = 0; ki < s.kh; ki++)
      for (int64_t kj = 0; kj < s.kw; kj++) {
        const float* row = cols + ((ci * s.kh + ki) * s.kw + kj) * plane;
        int64_t ox0, ox1;
        valid_cols(kj, s.stride_w, s.pad_w, s.w, s.out_w, &ox0, &ox1);
        for (int64_t oy = 0; oy < s.out_h; oy++) {
          const int64_t iy = oy * s.stride_h - s.pad_h + ki;
          if (iy < 0 || iy >= s.h) continue;
          const float* in = row + oy * s.out_w;
          float* out = dx + (ci * s.h + iy) * s.w - s.pad_w + kj;
          if (s.stride_w == 1) {
            for (int64_t ox = ox0; ox < ox1; ox++) out[ox] += in[ox];
          } else {
            for (int64_t ox = ox0; ox < ox1; ox++) out[ox * s.stride_w] += in[ox];
          }
        }
      }
}

// out[0, len) = cols[r][q0, q0 + len): a segment of row r = (ci, ki, kj) of one image's im2col matrix,
// computed from the image on the fly. Output pixels q run over (outH, outW) row-major.
void im2col_segment(float* out, const float* x, const ConvShape& s, int64_t r, int64_t q0, int64_t len) {
  const int64_t kj = r % s.kw, ki = (r / s.kw) % s.kh, ci = r / (s.kw * s.kh);
  int64_t ox0, ox1;
  valid_cols(kj, s.stride_w, s.pad_w, s.w, s.out_w, &ox0, &ox1);
  int64_t oy = q0 / s.out_w, ox = q0 - oy * s.out_w;
  while (len > 0) {
    const int64_t run = std::min(len, s.out_w - ox);
    const int64_t iy = oy * s.stride_h - s.pad_h + ki;
    if (iy < 0 || iy >= s.h) {
      for (int64_t t = 0; t < run; t++) out[t] = 0.0f;
    } else {
      const float* in = x + (ci * s.h + iy) * s.w - s.pad_w + kj;
      const int64_t a = std::max(ox, ox0), b = std::max(a, std::min(ox + run, ox1));
      for (int64_t o = ox; o < a; o++) out[o - ox] = 0.0f;
      if (s.stride_w == 1) {
        for (int64_t o = a; o < b; o++) out[o - ox] = in[o];
      } else {
        for (int64_t o = a; o < b; o++) out[o - ox] = in[o * s.stride_w];
      }
      for (int64_t o = b; o < ox + run; o++) out[o - ox] = 0.0f;
    }
    out += run;
    len -= run;
    ox = 0;
    oy++;
  }
}

struct ImageB {
  const float* x;  // one image (cIn, h, w)
  const ConvShape* s;
};

// op(B) = cols (kdim, plane) of the image, packed without materialising cols (forward pass). Each row
// segment is built once for the whole block (one index division per row, not per panel), then dealt
// out to the 16-column panels.
void pack_cols(const void* ctx, float* dst, int64_t p0, int64_t j0, int64_t kc, int64_t nc) {
  const ImageB& ib = *static_cast<const ImageB*>(ctx);
  constexpr int64_t NR = kGemmNR;
  float* row = thread_scratch(2, nc + NR);
  for (int64_t p = 0; p < kc; p++) {
    im2col_segment(row, ib.x, *ib.s, p0 + p, j0, nc);
    for (int64_t j = nc; j < ((nc + NR - 1) / NR) * NR; j++) row[j] = 0.0f;
    for (int64_t jr = 0; jr < nc; jr += NR) std::memcpy(dst + jr * kc + p * NR, row + jr, NR * sizeof(float));
  }
}

// op(B) = cols^T (plane, kdim) of the image, packed without materialising cols (weight gradient).
void pack_cols_transposed(const void* ctx, float* dst, int64_t p0, int64_t j0, int64_t kc, int64_t nc) {
  const ImageB& ib = *static_cast<const ImageB*>(ctx);
  constexpr int64_t NR = kGemmNR;
  float* segments = thread_scratch(2, NR * kc);
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t cols = std::min(NR, nc - jr);
    const float* rows[NR];
    for (int64_t j = 0; j < NR; j++) {
      rows[j] = nullptr;
      if (j >= cols) continue;
      im2col_segment(segments + j * kc, ib.x, *ib.s, j0 + jr + j, p0, kc);
      rows[j] = segments + j * kc;
    }
    pack_panel_from_rows(dst + jr * kc, rows, kc);
  }
}

// Weight gradient of one image when each output channel has few taps (kdim = cIn*kh*kw <= 16, e.g. a
// grayscale first layer): a GEMM would spend its time packing an N = kdim panel, so instead, per chunk of
// pixels, the kdim im2col rows are built once (in L1) and every dy row is dotted with all of them.
// dw (cOut, kdim) = beta * dw + dy (cOut, plane) x cols^T.
constexpr int64_t kSmallKdim = 16;
constexpr int64_t kPixelChunk = 512;

// KD = kdim as a constant, so the KD x 8 partial sums stay in registers.
template <int KD>
// always_inline: so the AVX2 entry point below gets its own AVX2 copy of the loops.
__attribute__((always_inline)) inline void small_kdim_chunk(float* dw, const float* dyb, const float* cols,
                                                            int64_t c_out, int64_t plane, int64_t q0, int64_t len) {
  for (int64_t co = 0; co < c_out; co++) {
    const float* g = dyb + co * plane + q0;
    float lanes[KD][8] = {};  // 8 partial sums per tap, so the loop vectorises without reassociation
    int64_t q = 0;
    for (; q + 8 <= len; q += 8)
      for (int r = 0; r < KD; r++)
        for (int l = 0; l < 8; l++) lanes[r][l] += cols[r * kPixelChunk + q + l] * g[q + l];
    for (int r = 0; r < KD; r++) {
      float sum = ((lanes[r][0] + lanes[r][1]) + (lanes[r][2] + lanes[r][3])) +
                  ((lanes[r][4] + lanes[r][5]) + (lanes[r][6] + lanes[r][7]));
      for (int64_t t = q; t < len; t++) sum += cols[r * kPixelChunk + t] * g[t];
      dw[co * KD + r] += sum;
    }
  }
}

template <int KD = 1>
__attribute__((always_inline)) inline void small_kdim_dispatch(int64_t kdim, float* dw, const float* dyb,
                                                               const float* cols, int64_t c_out, int64_t plane,
                                                               int64_t q0, int64_t len) {
  if constexpr (KD <= kSmallKdim) {
    if (kdim == KD) return small_kdim_chunk<KD>(dw, dyb, cols, c_out, plane, q0, len);
    small_kdim_dispatch<KD + 1>(kdim, dw, dyb, cols, c_out, plane, q0, len);
  }
}

void small_kdim_chunk_portable(float* dw, const float* dyb, const float* cols, int64_t c_out, int64_t kdim,
                               int64_t plane, int64_t q0, int64_t len) {
  small_kdim_dispatch(kdim, dw, dyb, cols, c_out, plane, q0, len);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) void small_kdim_chunk_avx2(float* dw, const float* dyb, const float* cols,
                                                               int64_t c_out, int64_t kdim, int64_t plane, int64_t q0,
                                                               int64_t len) {
  small_kdim_dispatch(kdim, dw, dyb, cols, c_out, plane, q0, len);
}
#endif

void small_kdim_weight_grad(float* dw, const float* dyb, const float* xb, const ConvShape& s, float beta) {
  const int64_t kdim = kdim_of(s), plane = plane_of(s);
  if (beta == 0.0f) std::memset(dw, 0, s.c_out * kdim * sizeof(float));
  float* cols = thread_scratch(2, kSmallKdim * kPixelChunk);
#if defined(__x86_64__) || defined(__i386__)
  const bool avx2 = isa_at_least(Isa::Avx2Fma);
#endif
  for (int64_t q0 = 0; q0 < plane; q0 += kPixelChunk) {
    const int64_t len = std::min(kPixelChunk, plane - q0);
    for (int64_t r = 0; r < kdim; r++) im2col_segment(cols + r * kPixelChunk, xb, s, r, q0, len);
#if defined(__x86_64__) || defined(__i386__)
    if (avx2) {
      small_kdim_chunk_avx2(dw, dyb, cols, s.c_out, kdim, plane, q0, len);
      continue;
    }
#endif
    small_kdim_chunk_portable(dw, dyb, cols, s.c_out, kdim, plane, q0, len);
  }
}

// Forward pass when each output channel has few taps (kdim <= 16, stride 1: a grayscale first layer).
// im2col + GEMM would run a K = kdim GEMM, mostly packing; instead each output row is computed directly:
// the kh input rows of every channel are copied once into a zero-padded buffer, and every output channel
// sums its kdim taps over a 64-pixel block held in registers (bias first, taps in (c, ki, kj) order, so
// the result does not depend on the threads). Rows are split over the threads.
constexpr int64_t kDirectBlock = 64;

bool direct_small_applies(const ConvShape& s) {
  return kdim_of(s) <= kSmallKdim && !is_pointwise(s) && s.stride_h == 1 && s.stride_w == 1 && s.pad_w < s.kw && s.pad_h < s.kh &&
         s.out_w == s.w + 2 * s.pad_w - s.kw + 1;
}

// buf (cIn*kh rows of width w + 2 padW) = the input rows output row oy of image b reads, zero-padded.
void fill_padded_rows(float* buf, const float* x, const ConvShape& s, int64_t b, int64_t oy) {
  const int64_t bw = s.w + 2 * s.pad_w;
  for (int64_t c = 0; c < s.c_in; c++)
    for (int64_t ki = 0; ki < s.kh; ki++) {
      float* row = buf + (c * s.kh + ki) * bw;
      const int64_t iy = oy - s.pad_h + ki;
      std::fill(row, row + bw, 0.0f);
      if (iy >= 0 && iy < s.h) std::copy_n(x + ((b * s.c_in + c) * s.h + iy) * s.w, s.w, row + s.pad_w);
    }
}

// One output row of one channel: yr[ox] = bias + the kdim taps of wr over the padded rows in buf (as
// fill_padded_rows leaves them), then ReLU when asked. A kernel per level, all summing in the same order.
using DirectRow = void (*)(float* yr, const float* wr, float bv, const float* buf, const ConvShape& s, bool relu);

// The portable path, in plain C++.
void direct_small_row_portable(float* yr, const float* wr, float bv, const float* buf, const ConvShape& s,
                               bool relu) {
  const int64_t bw = s.w + 2 * s.pad_w, kdim = kdim_of(s);
  for (int64_t ox0 = 0; ox0 < s.out_w; ox0 += kDirectBlock) {
    const int64_t len = std::min(kDirectBlock, s.out_w - ox0);
    float acc[kDirectBlock];
    for (int64_t l = 0; l < kDirectBlock; l++) acc[l] = bv;
    for (int64_t t = 0; t < kdim; t++) {
      const int64_t ck = t / s.kw, kj = t - ck * s.kw;
      const float wv = wr[t];
      const float* in = buf + ck * bw + ox0 + kj;
      if (len == kDirectBlock)
        for (int64_t l = 0; l < kDirectBlock; l++) acc[l] += wv * in[l];
      else
        for (int64_t l = 0; l < len; l++) acc[l] += wv * in[l];
    }
    for (int64_t l = 0; l < len; l++) yr[ox0 + l] = relu && acc[l] < 0.0f ? 0.0f : acc[l];
  }
}

#if defined(__x86_64__) || defined(__i386__)
// V vectors of 8 output pixels of one channel: acc = bias + sum over taps, kept in registers.
template <int V>
__attribute__((target("avx2,fma"), always_inline)) inline void direct_small_vectors(float* yr, const float* wr,
                                                                                  int64_t kdim, const float* buf,
                                                                                  const int64_t* tap_off, float bv,
                                                                                  bool relu) {
  __m256 acc[V];
  for (int v = 0; v < V; v++) acc[v] = _mm256_set1_ps(bv);
  for (int64_t t = 0; t < kdim; t++) {
    const __m256 wv = _mm256_broadcast_ss(wr + t);
    const float* in = buf + tap_off[t];
    for (int v = 0; v < V; v++) acc[v] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(in + 8 * v), acc[v]);
  }
  const __m256 zero = _mm256_setzero_ps();
  for (int v = 0; v < V; v++) _mm256_storeu_ps(yr + 8 * v, relu ? _mm256_max_ps(acc[v], zero) : acc[v]);
}

__attribute__((target("avx2,fma"))) void direct_small_row_avx2(float* yr, const float* wr, float bv,
                                                               const float* buf, const ConvShape& s, bool relu) {
  const int64_t bw = s.w + 2 * s.pad_w, kdim = kdim_of(s);
  int64_t tap_off[kSmallKdim];
  for (int64_t t = 0; t < kdim; t++) tap_off[t] = (t / s.kw) * bw + t % s.kw;
  int64_t ox = 0;
  for (; ox + 64 <= s.out_w; ox += 64) direct_small_vectors<8>(yr + ox, wr, kdim, buf + ox, tap_off, bv, relu);
  for (; ox + 8 <= s.out_w; ox += 8) direct_small_vectors<1>(yr + ox, wr, kdim, buf + ox, tap_off, bv, relu);
  for (; ox < s.out_w; ox++) {  // the same sum, one pixel
    float a = bv;
    for (int64_t t = 0; t < kdim; t++) a = std::fma(wr[t], buf[tap_off[t] + ox], a);
    yr[ox] = relu && a < 0.0f ? 0.0f : a;
  }
}

#define VGG_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
// GCC 12's _mm512_max_ps passes _mm512_undefined_ps(), which -Wmaybe-uninitialized reports at every use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The avx512 level: V zmm vectors of 16 output pixels, the last one's lanes in `last` (a row's tail), each
// pixel's sum in the AVX2 kernel's order (bias, then one FMA per tap), so the same bits. ReLU as there too:
// max(acc, 0) (a NaN sum gives 0) where the AVX2 kernel has whole 8-pixel vectors, and the scalar tail's
// rule (a NaN sum stays NaN) in the lanes of `scalar` (the row's last out_w % 8 pixels).
template <int V>
VGG_AVX512 __attribute__((always_inline)) inline void direct_small_vectors16(float* yr, const float* wr, int64_t kdim,
                                                                            const float* buf, const int64_t* tap_off,
                                                                            float bv, bool relu, __mmask16 last,
                                                                            __mmask16 scalar = 0) {
  __m512 acc[V];
  for (int v = 0; v < V; v++) acc[v] = _mm512_set1_ps(bv);
  for (int64_t t = 0; t < kdim; t++) {
    const __m512 wv = _mm512_set1_ps(wr[t]);
    const float* in = buf + tap_off[t];
    for (int v = 0; v + 1 < V; v++) acc[v] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(in + 16 * v), acc[v]);
    acc[V - 1] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(last, in + 16 * (V - 1)), acc[V - 1]);
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int v = 0; v < V; v++) {
    __m512 out = acc[v];
    if (relu) out = _mm512_mask_max_ps(_mm512_max_ps(acc[v], zero), scalar, zero, acc[v]);
    if (v + 1 < V) _mm512_storeu_ps(yr + 16 * v, out);
    else _mm512_mask_storeu_ps(yr + 16 * v, last, out);
  }
}

VGG_AVX512 void direct_small_row_avx512(float* yr, const float* wr, float bv, const float* buf, const ConvShape& s,
                                        bool relu) {
  const int64_t bw = s.w + 2 * s.pad_w, kdim = kdim_of(s);
  int64_t tap_off[kSmallKdim];
  for (int64_t t = 0; t < kdim; t++) tap_off[t] = (t / s.kw) * bw + t % s.kw;
  const __mmask16 all = 0xFFFF, tail = static_cast<__mmask16>((1u << (s.out_w % 16)) - 1);
  const __mmask16 scalar = static_cast<__mmask16>(tail & ~((1u << (s.out_w % 16 / 8 * 8)) - 1));
  // Blocks of 8, 4, 2 and 1 vectors (8 independent FMA chains cover the FMA latency), then the tail.
  int64_t ox = 0;
  for (; ox + 128 <= s.out_w; ox += 128) direct_small_vectors16<8>(yr + ox, wr, kdim, buf + ox, tap_off, bv, relu, all);
  if (ox + 64 <= s.out_w) direct_small_vectors16<4>(yr + ox, wr, kdim, buf + ox, tap_off, bv, relu, all), ox += 64;
  if (ox + 32 <= s.out_w) direct_small_vectors16<2>(yr + ox, wr, kdim, buf + ox, tap_off, bv, relu, all), ox += 32;
  if (ox + 16 <= s.out_w) direct_small_vectors16<1>(yr + ox, wr, kdim, buf + ox, tap_off, bv, relu, all), ox += 16;
  if (ox < s.out_w) direct_small_vectors16<1>(yr + ox, wr, kdim, buf + ox, tap_off, bv, relu, tail, scalar);
}
#pragma GCC diagnostic pop
#endif

DirectRow direct_small_row_kernel() {
#if defined(__x86_64__) || defined(__i386__)
  if (isa_at_least(Isa::Avx512)) return direct_small_row_avx512;
  if (isa_at_least(Isa::Avx2Fma)) return direct_small_row_avx2;
#endif
  return direct_small_row_portable;
}

// Rows are split over the threads: a row r of (n, outH) is computed for every output channel from its
// padded input rows, copied once.
void direct_small_forward(float* y, const float* x, const float* w, const float* bias, const ConvShape& s,
                          bool relu) {
  const int64_t rows = s.n * s.out_h, kdim = kdim_of(s), plane = plane_of(s);
  const DirectRow row = direct_small_row_kernel();
  parallel_run(
      [&](int ith, int nth) {
        int64_t r0, r1;
        split_range(rows, ith, nth, 1, &r0, &r1);
        if (r0 >= r1) return;
        float* buf = thread_scratch(0, s.c_in * s.kh * (s.w + 2 * s.pad_w));
        for (int64_t r = r0; r < r1; r++) {
          const int64_t b = r / s.out_h, oy = r - b * s.out_h;
          fill_padded_rows(buf, x, s, b, oy);
          for (int64_t co = 0; co < s.c_out; co++)
            row(y + (b * s.c_out + co) * plane + oy * s.out_w, w + co * kdim, bias ? bias[co] : 0.0f, buf, s, relu);
        }
      },
      rows);
}

// The few-taps forward with ReLU and the 2x2 stride-2 max-pool fused: per pooled row, each channel's two
// conv rows (ReLU'd, the bits direct_small_forward gives) go to a row pair of scratch and are pooled from
// there, so the conv's output (16 channels at 224x224 in the d2l model: 3.2 MB an image) is never stored.
void direct_small_pool_forward(float* y, int32_t* argmax, const float* x, const float* w, const float* bias,
                               const ConvShape& s) {
  const int64_t out_h2 = s.out_h / 2, out_w2 = s.out_w / 2, pooled = out_h2 * out_w2;
  const int64_t rows = s.n * out_h2, kdim = kdim_of(s), bw = s.w + 2 * s.pad_w;
  const DirectRow row = direct_small_row_kernel();
  parallel_run(
      [&](int ith, int nth) {
        int64_t r0, r1;
        split_range(rows, ith, nth, 1, &r0, &r1);
        if (r0 >= r1) return;
        float* top = thread_scratch(0, s.c_in * s.kh * bw);
        float* bottom = thread_scratch(1, s.c_in * s.kh * bw);
        float* pair = thread_scratch(2, 2 * s.out_w);
        for (int64_t r = r0; r < r1; r++) {
          const int64_t b = r / out_h2, oy2 = r - b * out_h2;
          fill_padded_rows(top, x, s, b, 2 * oy2);
          fill_padded_rows(bottom, x, s, b, 2 * oy2 + 1);
          for (int64_t co = 0; co < s.c_out; co++) {
            const float* wr = w + co * kdim;
            const float bv = bias ? bias[co] : 0.0f;
            row(pair, wr, bv, top, s, true);
            row(pair + s.out_w, wr, bv, bottom, s, true);
            const int64_t at = (b * s.c_out + co) * pooled + oy2 * out_w2;
            relu_pool_row_pair(y + at, argmax + at, pair, s.out_w, 0.0f, oy2, s.out_w);
          }
        }
      },
      rows);
}

// Sum of p[0, len) in a fixed order that vectorises without -ffast-math: 32 running lane sums (4 vectors,
// so the adds pipeline), combined pairwise, then the tail. A plain scalar loop is latency-bound (one add
// per 4 cycles) and took 40% of the first layer's weight-gradient time.
float sum_lanes(const float* p, int64_t len) {
  constexpr int kLanes = 32;
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes)
    for (int l = 0; l < kLanes; l++) lanes[l] += p[i + l];
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int l = 0; l < width; l++) lanes[l] += lanes[l + width];
  float sum = lanes[0];
  for (; i < len; i++) sum += p[i];
  return sum;
}

// True when splitting the batch over the threads keeps them evenly busy.
bool split_over_batch(int64_t n) {
  const int nth = num_threads();
  return nth == 1 || n % nth == 0 || n >= 4 * nth;
}

// Runs im2col (or col2im) for one image with the channels split over the threads.
template <typename F>
void parallel_channels(int64_t c_in, F&& f) {
  parallel_run(
      [&](int ith, int nth) {
        int64_t c0, c1;
        split_range(c_in, ith, nth, 1, &c0, &c1);
        if (c0 < c1) f(c0, c1);
      },
      c_in);
}

// dx[i] = 0 where x[i] is not > 0, over [begin, end): ReLU's backward when x is a ReLU output.
void mask_by_relu(float* dx, const float* x, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i++) dx[i] = x[i] > 0.0f ? dx[i] : 0.0f;
}

// ---- Small planes: the whole batch as one GEMM. ----
// With a few output pixels per image (the 2x2 and 4x4 maps of a 32x32 input) one image's GEMM has too
// few columns to fill the 16-wide panels, so the images' im2col matrices go side by side into one
// (kdim, n*plane) matrix and each pass is one threaded GEMM over the whole batch (K is never split, so
// the sums keep a fixed order). Layout changes between (n, c, plane) and (c, n*plane) are plain copies.
// At 8x8 and up the per-image paths measured as fast or faster (Winograd from 14x14).
constexpr int64_t kBatchedMaxPlane = 32;
constexpr int64_t kBatchedMaxFloats = int64_t{1} << 25;  // per workspace (128 MiB)

bool batched_small_planes(const ConvShape& s) {
  const int64_t cols = s.n * plane_of(s);
  return s.n > 1 && plane_of(s) <= kBatchedMaxPlane && kdim_of(s) * cols <= kBatchedMaxFloats &&
         s.c_out * cols <= kBatchedMaxFloats;
}

// cols (kdim, n*plane) = the im2col matrices of all images, image b in columns [b*plane, (b+1)*plane).
void im2col_batch(float* cols, const float* x, const ConvShape& s) {
  const int64_t plane = plane_of(s), x_size = s.c_in * s.h * s.w;
  parallel_run(
      [&](int ith, int nth) {
        int64_t b0, b1;
        split_range(s.n, ith, nth, 1, &b0, &b1);
        for (int64_t b = b0; b < b1; b++) im2col(cols + b * plane, x + b * x_size, s, 0, s.c_in, s.n * plane);
      },
      s.n);
}

// Copies between images (n, c, plane) and one matrix (c, n*plane): one plane-long row per image and channel.
template <bool kToImages>
void relayout(float* dst, const float* src, int64_t n, int64_t c, int64_t plane) {
  parallel_run(
      [&](int ith, int nth) {
        int64_t b0, b1;
        split_range(n, ith, nth, 1, &b0, &b1);
        for (int64_t b = b0; b < b1; b++)
          for (int64_t ch = 0; ch < c; ch++) {
            const int64_t image_at = (b * c + ch) * plane, matrix_at = ch * n * plane + b * plane;
            std::memcpy(dst + (kToImages ? image_at : matrix_at), src + (kToImages ? matrix_at : image_at),
                        plane * sizeof(float));
          }
      },
      n);
}

void batched_forward(float* y, const float* x, const float* w, const ConvShape& s, GemmEpilogue ep) {
  const int64_t cols_n = s.n * plane_of(s);
  float* cols = thread_scratch(0, kdim_of(s) * cols_n);
  float* out = thread_scratch(1, s.c_out * cols_n);
  im2col_batch(cols, x, s);
  sgemm(out, cols_n, w, kdim_of(s), cols, cols_n, s.c_out, cols_n, kdim_of(s), false, false, 0.0f, ep);
  relayout<true>(y, out, s.n, s.c_out, plane_of(s));
}

void batched_backward_input(float* dx, const float* dy, const float* w, const float* relu_x, const ConvShape& s) {
  const int64_t plane = plane_of(s), cols_n = s.n * plane, x_size = s.c_in * s.h * s.w;
  float* grads = thread_scratch(1, s.c_out * cols_n);
  float* cols = thread_scratch(0, kdim_of(s) * cols_n);
  relayout<false>(grads, dy, s.n, s.c_out, plane);
  sgemm(cols, cols_n, w, kdim_of(s), grads, cols_n, kdim_of(s), cols_n, s.c_out, true, false, 0.0f);
  parallel_run(
      [&](int ith, int nth) {
        int64_t b0, b1;
        split_range(s.n, ith, nth, 1, &b0, &b1);
        for (int64_t b = b0; b < b1; b++) {
          col2im(dx + b * x_size, cols + b * plane, s, 0, s.c_in, cols_n);
          if (relu_x) mask_by_relu(dx + b * x_size, relu_x + b * x_size, 0, x_size);
        }
      },
      s.n);
}

void batched_backward_weight(float* dw, const float* dy, const float* x, const ConvShape& s) {
  const int64_t cols_n = s.n * plane_of(s);
  float* cols = thread_scratch(0, kdim_of(s) * cols_n);
  float* grads = thread_scratch(1, s.c_out * cols_n);
  im2col_batch(cols, x, s);
  relayout<false>(grads, dy, s.n, s.c_out, plane_of(s));
  sgemm(dw, kdim_of(s), grads, cols_n, cols, cols_n, s.c_out, kdim_of(s), cols_n, false, true, 0.0f);
}

// ---- Algorithm choice: Winograd or im2col + GEMM, timed once per machine, shape and pass. ----
// The measurement is recorded in the kernel cache file, so every later process on this machine (same CPU,
// ISA and thread count) computes with the same kernels and gets bit-identical results.
std::atomic<ConvAlgorithm> g_algorithm{ConvAlgorithm::Auto};

// The whole-batch GEMM for small planes, unless Winograd is forced (tests compare the algorithms).
bool use_batched(const ConvShape& s) {
  return g_algorithm != ConvAlgorithm::Winograd && g_algorithm != ConvAlgorithm::Winograd4 && batched_small_planes(s);
}

// Matrices derived from a layer's weights (Winograd's transformed weights, the dense matrix of a tiny
// plane), kept for the weights they came from. Inference calls each layer with the same weights again and
// again, and deriving them (a transform, a repack) costs as much as a batch-1 convolution of a 14x14
// plane; a training step derives them once for the forward pass and again for the input gradient. An
// entry is found by its key (what is derived, for which shape) and by comparing the weights themselves,
// not their address, so weights updated in place (an optimiser step) always miss, and a miss costs one
// extra copy of the weights. Each JS thread calling the addon has its own cache; a returned pointer stays
// valid until that thread's next call.
using DerivedKey = std::array<int64_t, 14>;
struct DerivedWeights {
  DerivedKey key;
  std::vector<float> w, u;
  uint64_t last_use;
  const float* source;  // the array it was made from
};
constexpr size_t kDerivedCacheEntries = 32;
constexpr int64_t kDerivedCacheFloats = int64_t{1} << 26;  // 256 MiB of weights and derived floats per thread

// The derived matrix for (key, w[0, w_size)): from the cache, or make(u) fills `floats` new ones.
const float* derived_weights(const DerivedKey& key, const float* w, int64_t w_size, int64_t floats,
                             const std::function<void(float* u)>& make) {
  static thread_local std::vector<DerivedWeights> cache;
  static thread_local uint64_t clock = 0;
  for (DerivedWeights& e : cache)
    if (e.key == key && static_cast<int64_t>(e.w.size()) == w_size &&
        std::memcmp(e.w.data(), w, w_size * sizeof(float)) == 0) {
      e.last_use = ++clock;
      return e.u.data();
    }
  // The same array with new contents (an optimiser step, every training step): the entry is remade in
  // place, without new memory (whose pages would be faulted in and zeroed again).
  for (DerivedWeights& e : cache)
    if (e.key == key && e.source == w && static_cast<int64_t>(e.w.size()) == w_size &&
        static_cast<int64_t>(e.u.size()) == floats) {
      std::memcpy(e.w.data(), w, w_size * sizeof(float));
      make(e.u.data());
      e.last_use = ++clock;
      return e.u.data();
    }
  const int64_t entry_floats = w_size + floats;
  int64_t held = 0;
  for (const DerivedWeights& e : cache) held += static_cast<int64_t>(e.w.size() + e.u.size());
  // Evict the least recently used entries until this one fits (it may replace an entry of its own shape).
  while (!cache.empty() && (cache.size() >= kDerivedCacheEntries || held + entry_floats > kDerivedCacheFloats)) {
    auto oldest = std::min_element(cache.begin(), cache.end(), [](const DerivedWeights& a, const DerivedWeights& b) {
      return a.last_use < b.last_use;
    });
    held -= static_cast<int64_t>(oldest->w.size() + oldest->u.size());
    cache.erase(oldest);
  }
  DerivedWeights e{key, std::vector<float>(w, w + w_size), std::vector<float>(static_cast<size_t>(floats)), ++clock, w};
  make(e.u.data());
  if (entry_floats > kDerivedCacheFloats) {
    // Too large to keep: hand out a buffer that lives until the next call.
    static thread_local std::vector<float> uncached;
    uncached.swap(e.u);
    return uncached.data();
  }
  cache.push_back(std::move(e));
  return cache.back().u.data();
}

// Winograd's transformed weights for output tiles `tile` (2 or 4), of the filters or (flipped) of the
// input gradient's filters: (cIn, cOut, 3, 3), each turned by 180 degrees.
const float* transformed_weights_of(const float* w, int64_t c_out, int64_t c_in, bool flipped, int tile) {
  const int64_t w_size = 9 * c_out * c_in;
  const int64_t rows = flipped ? c_in : c_out, cols = flipped ? c_out : c_in;
  const int64_t floats = tile == 4 ? winograd4_weights_size(rows, cols) : winograd_weights_size(rows, cols);
  const DerivedKey key{tile, flipped ? 1 : 0, c_out, c_in};
  return derived_weights(key, w, w_size, floats, [&](float* u) {
    const float* g = w;
    static thread_local std::vector<float> turned;
    if (flipped) {
      turned.resize(static_cast<size_t>(w_size));
      for (int64_t co = 0; co < c_out; co++)
        for (int64_t ci = 0; ci < c_in; ci++)
          for (int k = 0; k < 9; k++) turned[(ci * c_out + co) * 9 + (8 - k)] = w[(co * c_in + ci) * 9 + k];
      g = turned.data();
    }
    if (tile == 4) return winograd4_prepare_weights(u, g, rows, cols);
    winograd_prepare_weights(u, g, rows, cols);
  });
}

// ---- Tiny planes: the convolution as one dense matrix. ----
// With at most 4 input and 4 output pixels per image (the 2x2 and 1x1 maps of a 32x32 input), a
// convolution is a small linear map from an image's cIn x Q inputs to its cOut x P outputs: the matrix D
// ((cIn, Q), (cOut, P)) holds each filter tap at the (input, output) pixel pair it connects and zeros
// where a tap falls in the padding. NCHW images are already the rows of X (n, cIn Q) and Y (n, cOut P),
// so the whole batch is one GEMM per pass with no im2col: Y = X D, dX = dY D^T, dD = X^T dY (folded back
// onto the taps). On a 2x2 map D has 4/9 of im2col's multiplies (the padding's are skipped), and no
// transforms; on 1x1 it keeps only the centre tap.
constexpr int64_t kDenseMaxPlane = 4;
constexpr int64_t kDenseMaxFloats = int64_t{1} << 24;

bool dense_applies(const ConvShape& s) {
  return g_algorithm == ConvAlgorithm::Auto && s.n > 0 && s.c_in > 0 && s.c_out > 0 && s.h * s.w <= kDenseMaxPlane &&
         plane_of(s) <= kDenseMaxPlane && s.c_in * s.h * s.w * s.c_out * plane_of(s) <= kDenseMaxFloats;
}

// The (input pixel q, output pixel p, tap k) triples of the geometry: D's entry for channels (ci, co) at
// row ci Q + q, column co P + p is w's tap k of filter (co, ci). Each (q, p) pair meets through at most
// one tap.
struct DenseLinks {
  struct Link {
    int64_t q, p, k;
  };
  Link link[kDenseMaxPlane * kDenseMaxPlane];
  int count = 0;
};

DenseLinks dense_links(const ConvShape& s) {
  DenseLinks links;
  for (int64_t oy = 0; oy < s.out_h; oy++)
    for (int64_t ox = 0; ox < s.out_w; ox++)
      for (int64_t ki = 0; ki < s.kh; ki++) {
        const int64_t iy = oy * s.stride_h - s.pad_h + ki;
        if (iy < 0 || iy >= s.h) continue;
        for (int64_t kj = 0; kj < s.kw; kj++) {
          const int64_t ix = ox * s.stride_w - s.pad_w + kj;
          if (ix >= 0 && ix < s.w) links.link[links.count++] = {iy * s.w + ix, oy * s.out_w + ox, ki * s.kw + kj};
        }
      }
  return links;
}

// D ((cIn Q), (cOut P)) from w (kept in the derived-weights cache), written along its rows.
const float* dense_matrix(const float* w, const ConvShape& s) {
  const int64_t q_size = s.h * s.w, p_size = plane_of(s), cols = s.c_out * p_size, taps = s.kh * s.kw;
  const DerivedKey key{0,  2,          s.c_out,    s.c_in,   s.h,      s.w,       s.kh,
                       s.kw, s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.out_h, s.out_w};
  return derived_weights(key, w, s.c_out * s.c_in * taps, s.c_in * q_size * cols, [&](float* d) {
    const DenseLinks links = dense_links(s);
    // Every (q, p) pair is linked on a 2x2 map with padding 1; otherwise the unlinked entries are zeros.
    if (links.count < q_size * p_size) std::fill(d, d + s.c_in * q_size * cols, 0.0f);
    for (int64_t ci = 0; ci < s.c_in; ci++)
      for (int l = 0; l < links.count; l++) {
        float* row = d + (ci * q_size + links.link[l].q) * cols + links.link[l].p;
        const float* taps_of = w + ci * taps + links.link[l].k;
        for (int64_t co = 0; co < s.c_out; co++) row[co * p_size] = taps_of[co * s.c_in * taps];
      }
  });
}

void dense_forward(float* y, const float* x, const float* w, const float* bias, const ConvShape& s, bool relu) {
  const int64_t rows = s.c_in * s.h * s.w, cols = s.c_out * plane_of(s), plane = plane_of(s);
  sgemm(y, cols, x, rows, dense_matrix(w, s), cols, s.n, cols, rows, false, false, 0.0f);
  if (!bias && !relu) return;
  for (int64_t b = 0; b < s.n; b++)
    for (int64_t co = 0; co < s.c_out; co++) {
      float* yc = y + b * cols + co * plane;
      const float bv = bias ? bias[co] : 0.0f;
      for (int64_t p = 0; p < plane; p++) {
        const float v = yc[p] + bv;
        yc[p] = relu && v < 0.0f ? 0.0f : v;
      }
    }
}

void dense_backward_input(float* dx, const float* dy, const float* w, const float* relu_x, const ConvShape& s) {
  const int64_t rows = s.c_in * s.h * s.w, cols = s.c_out * plane_of(s);
  sgemm(dx, rows, dy, cols, dense_matrix(w, s), cols, s.n, rows, cols, false, true, 0.0f);
  if (relu_x) mask_by_relu(dx, relu_x, 0, s.n * rows);
}

void dense_backward_weight(float* dw, const float* dy, const float* x, const ConvShape& s) {
  const int64_t rows = s.c_in * s.h * s.w, cols = s.c_out * plane_of(s);
  static thread_local std::vector<float> dd;
  dd.resize(static_cast<size_t>(rows * cols));
  sgemm(dd.data(), cols, x, rows, dy, cols, rows, cols, s.n, true, false, 0.0f);
  // Each tap sums its (q, p) pairs in the links' order.
  std::memset(dw, 0, s.c_out * kdim_of(s) * sizeof(float));
  const int64_t q_size = s.h * s.w, p_size = plane_of(s), taps = s.kh * s.kw;
  const DenseLinks links = dense_links(s);
  for (int64_t ci = 0; ci < s.c_in; ci++)
    for (int l = 0; l < links.count; l++) {
      const float* row = dd.data() + (ci * q_size + links.link[l].q) * cols + links.link[l].p;
      float* taps_of = dw + ci * taps + links.link[l].k;
      for (int64_t co = 0; co < s.c_out; co++) taps_of[co * s.c_in * taps] += row[co * p_size];
    }
}


// Part of every kernel-cache key: 2 = Winograd weight gradient, vector transforms at the image edges;
// 3 = vector output and gradient transforms at the edges too; 4 = several small images per Winograd call;
// 5 = choices timed on a group of images, longer weight-gradient tile chunks; 6 = F(4x4,3x3) a third
// choice; 7 = Winograd buffers without cache-set aliasing; 8 = GEMM blocks of KC 384, MC 240; 9 = F(4x4)
// lanes over several images on maps of 1-2 tiles across; 10 = F(4x4) weight gradients; 11 = 16-tile
// Winograd transforms at the avx512 level.
constexpr int kKernelRevision = 11;

// The passes, as named in the kernel cache.
constexpr const char* kForward = "forward";
constexpr const char* kBackwardInput = "backward-input";
constexpr const char* kBackwardWeight = "backward-weight";
// The mode of the small-plane choice (whole-batch GEMM against Winograd over groups of images).
constexpr const char* kSmallPlanes = "small-planes";

std::string key_of(const ConvShape& s, const char* pass, const char* mode = nullptr) {
  char shape[160];
  // kKernelRevision changes when a kernel's speed changes enough to revisit recorded choices.
  std::snprintf(shape, sizeof shape, "|conv3x3 %s %s|cin=%lld,cout=%lld,h=%lld,w=%lld,pad=%lld,%lld|r%d", pass,
                mode ? mode : split_over_batch(s.n) ? "batch-split" : "per-image",
                static_cast<long long>(s.c_in), static_cast<long long>(s.c_out), static_cast<long long>(s.h),
                static_cast<long long>(s.w), static_cast<long long>(s.pad_h), static_cast<long long>(s.pad_w),
                kKernelRevision);
  return kernel_cache_machine_key() + shape;
}

template <typename F>
double seconds(F&& f) {
  const auto t = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The kernel-cache names of the three ways, and the Winograd output tile each means (0: not Winograd).
constexpr const char* kDirectName = "direct";
constexpr const char* kWinograd2Name = "winograd";
constexpr const char* kWinograd4Name = "winograd4";
int tile_of_name(const std::string& name) { return name == kWinograd4Name ? 4 : name == kWinograd2Name ? 2 : 0; }

// The forced or recorded way for this pass without measuring: 0, 2 or 4, or -1 when Auto has not measured
// it yet.
int known_winograd_tile(const ConvShape& s, const char* pass, const char* mode = nullptr) {
  if (g_algorithm == ConvAlgorithm::Direct) return 0;
  if (g_algorithm == ConvAlgorithm::Winograd) return 2;
  if (g_algorithm == ConvAlgorithm::Winograd4) return 4;
  const std::string known = kernel_cache_get(key_of(s, pass, mode));
  return known.empty() ? -1 : tile_of_name(known);
}

// Which way this pass runs: 0 (im2col/direct), 2 (Winograd F(2x2,3x3)) or 4 (F(4x4,3x3)).
// In Auto mode, unless the cache already knows, the first call times every way (each run five times,
// interleaved, keeping the fastest: the choice is kept for good, so it must survive a busy machine);
// `direct` and `winograd(tile)` compute the same thing: one group of images (what one Winograd call gets)
// on the calling thread, one image over the threads, or the whole batch (small planes).
template <typename D, typename W>
int winograd_tile(const ConvShape& s, const char* pass, D&& direct, W&& winograd, const char* mode = nullptr) {
  const int known = known_winograd_tile(s, pass, mode);
  if (known >= 0) return known;
  // The first runs also warm caches and workspaces.
  double td = seconds(direct), t2 = seconds([&] { winograd(2); }), t4 = seconds([&] { winograd(4); });
  for (int i = 0; i < 4; i++) {
    td = std::min(td, seconds(direct));
    t2 = std::min(t2, seconds([&] { winograd(2); }));
    t4 = std::min(t4, seconds([&] { winograd(4); }));
  }
  const char* best = t2 < td ? kWinograd2Name : kDirectName;
  if (t4 < std::min(td, t2)) best = kWinograd4Name;
  return tile_of_name(kernel_cache_put(key_of(s, pass, mode), best));
}

int64_t tiles_of(const ConvShape& s, int tile) { return tile == 4 ? winograd4_tiles(s) : winograd_tiles(s); }

// Images per Winograd call: enough that a call has about 256 F(2x2) or 128 F(4x4) tiles (the GEMMs of a
// 14x14 image alone would get 49 columns), few enough that a group's output is still in cache for what
// follows.
int64_t winograd_group(const ConvShape& s, int tile) {
  return std::max<int64_t>(1, (tile == 4 ? 128 : 256) / tiles_of(s, tile));
}

// `images` images of y = conv(x) by Winograd with this output tile, tiles [t0, t1) (-1: all); with
// `pool`, max-pooled 2x2 into it instead of y.
void winograd_images(int tile, float* y, const float* x, int64_t images, const float* u, const float* bias,
                     const ConvShape& s, bool relu, int64_t t0 = 0, int64_t t1 = -1,
                     const PoolTarget* pool = nullptr) {
  if (tile == 4) return winograd4_forward_images(y, x, images, u, bias, s, relu, t0, t1, pool);
  winograd_forward_images(y, x, images, u, bias, s, relu, t0, t1, pool);
}

// Where image b's output goes: y, or with `pool` its pooled outputs (cOut, outH / 2, outW / 2).
PoolTarget pooled_image(const PoolTarget* pool, const ConvShape& s, int64_t b) {
  const int64_t pooled = s.c_out * (s.out_h / 2) * (s.out_w / 2);
  return PoolTarget{pool->y + b * pooled, pool->argmax + b * pooled};
}

// Winograd over the whole batch: each thread a contiguous run of images, a group at a time; with `pool`,
// max-pooled 2x2 into it instead of y.
void winograd_forward_batch(int tile, float* y, const float* x, const float* u, const float* bias, const ConvShape& s,
                            bool relu, const PoolTarget* pool = nullptr) {
  const int64_t plane = plane_of(s), x_size = s.c_in * s.h * s.w, group = winograd_group(s, tile);
  parallel_run(
      [&](int ith, int nth) {
        int64_t b0, b1;
        split_range(s.n, ith, nth, 1, &b0, &b1);
        for (int64_t b = b0; b < b1; b += group) {
          const PoolTarget pb = pool ? pooled_image(pool, s, b) : PoolTarget{};
          winograd_images(tile, pool ? nullptr : y + b * s.c_out * plane, x + b * x_size, std::min(group, b1 - b), u,
                          bias, s, relu, 0, -1, pool ? &pb : nullptr);
        }
      },
      s.n);
}

// Image b alone, its tiles split over the threads (an uneven batch); with `pool`, pooled into it.
void winograd_one_image(int tile, float* y, const float* x, int64_t b, const float* u, const float* bias,
                        const ConvShape& s, bool relu, const PoolTarget* pool = nullptr) {
  const int64_t tiles = tiles_of(s, tile);
  const PoolTarget pb = pool ? pooled_image(pool, s, b) : PoolTarget{};
  parallel_run(
      [&](int ith, int nth) {
        int64_t t0, t1;
        split_range(tiles, ith, nth, 8, &t0, &t1);
        if (t0 < t1)
          winograd_images(tile, pool ? nullptr : y + b * s.c_out * plane_of(s), x + b * s.c_in * s.h * s.w, 1, u,
                          bias, s, relu, t0, t1, pool ? &pb : nullptr);
      },
      (tiles + 7) / 8);
}

// The input gradient the same way (st: the transposed shape; u: flipped, transformed weights), with
// ReLU's mask applied to each group while it is in cache.
void winograd_backward_input_batch(int tile, float* dx, const float* dy, const float* u, const ConvShape& st,
                                   const float* relu_x, const ConvShape& s) {
  const int64_t plane = plane_of(s), x_size = s.c_in * s.h * s.w, group = winograd_group(st, tile);
  parallel_run(
      [&](int ith, int nth) {
        int64_t b0, b1;
        split_range(s.n, ith, nth, 1, &b0, &b1);
        for (int64_t b = b0; b < b1; b += group) {
          const int64_t g = std::min(group, b1 - b);
          winograd_images(tile, dx + b * x_size, dy + b * s.c_out * plane, g, u, nullptr, st, false);
          if (relu_x) mask_by_relu(dx + b * x_size, relu_x + b * x_size, 0, g * x_size);
        }
      },
      s.n);
}

const float* transformed_weights(const float* w, int64_t c_out, int64_t c_in, int tile) {
  return transformed_weights_of(w, c_out, c_in, false, tile);
}

// The input gradient of a 3x3 stride-1 conv is the 3x3 conv of dy with the kernel flipped and cIn/cOut
// swapped, padded by 2 - pad: the shape that conv runs on.
ConvShape transposed_shape(const ConvShape& s) {
  return ConvShape{s.n, s.c_out, s.out_h, s.out_w, s.c_in, 3, 3, 1, 1, 2 - s.pad_h, 2 - s.pad_w, s.h, s.w};
}

// The input gradient's transformed weights (the filters flipped, cIn and cOut swapped).
const float* flipped_transformed_weights(const float* w, int64_t c_out, int64_t c_in, int tile) {
  return transformed_weights_of(w, c_out, c_in, true, tile);
}

bool winograd_backward_applies(const ConvShape& s) {
  return winograd_applies(s) && s.pad_h <= 2 && s.pad_w <= 2;
}

}  // namespace

void set_conv_algorithm(ConvAlgorithm a) { g_algorithm = a; }

const char* conv_kernel_name(const ConvShape& s, bool backward) {
  if (dense_applies(s)) return "dense (tiny plane)";
  if (use_batched(s)) {
    const bool applies = (backward ? winograd_backward_applies(s) : winograd_applies(s)) && split_over_batch(s.n);
    if (!applies) return "im2col+gemm (batch)";
    const int tile = known_winograd_tile(s, backward ? kBackwardInput : kForward, kSmallPlanes);
    return tile < 0     ? "not measured yet"
           : tile == 4 ? "winograd F(4x4,3x3) (image groups)"
           : tile == 2 ? "winograd F(2x2,3x3) (image groups)"
                       : "im2col+gemm (batch)";
  }
  if (!backward && direct_small_applies(s)) return "direct (few taps)";
  if (!backward && is_pointwise(s)) return "gemm (1x1)";
  // The input gradient of one image at a time (uneven batches) always runs as GEMM + col2im.
  const bool applies = backward ? winograd_backward_applies(s) && split_over_batch(s.n) : winograd_applies(s);
  if (!applies) return "im2col+gemm";
  const int tile = known_winograd_tile(s, backward ? kBackwardInput : kForward);
  return tile < 0     ? "not measured yet"
         : tile == 4 ? "winograd F(4x4,3x3)"
         : tile == 2 ? "winograd F(2x2,3x3)"
                     : "im2col+gemm";
}

const char* conv_weight_kernel_name(const ConvShape& s) {
  // The same order of choices as conv2d_backward_weight.
  if (dense_applies(s)) return "dense (tiny plane)";
  if (use_batched(s)) {
    if (!(s.n > 0 && winograd_applies(s) && split_over_batch(s.n) && kdim_of(s) > kSmallKdim))
      return "im2col+gemm (batch)";
    const int tile = known_winograd_tile(s, kBackwardWeight, kSmallPlanes);
    return tile < 0     ? "not measured yet"
           : tile == 4 ? "winograd F(4x4,3x3) (batch)"
           : tile == 2 ? "winograd F(2x2,3x3) (batch)"
                       : "im2col+gemm (batch)";
  }
  if (s.n > 0 && winograd_applies(s) && split_over_batch(s.n) && kdim_of(s) > kSmallKdim) {
    const int tile = known_winograd_tile(s, kBackwardWeight);
    if (tile < 0) return "not measured yet";
    if (tile == 2) return "winograd F(2x2,3x3)";
    if (tile == 4) return "winograd F(4x4,3x3)";
  }
  if (!split_over_batch(s.n)) return "im2col+gemm";
  if (is_pointwise(s)) return "gemm (1x1)";
  return kdim_of(s) <= kSmallKdim ? "direct (few taps)" : "im2col+gemm";
}

void conv2d_forward(float* y, const float* x, const float* w, const float* bias, const ConvShape& s, bool relu) {
  const int64_t kdim = kdim_of(s), plane = plane_of(s), x_size = s.c_in * s.h * s.w;
  const bool pointwise = is_pointwise(s);
  const GemmEpilogue ep{bias, relu};
  auto u_of = [&](int tile) { return transformed_weights(w, s.c_out, s.c_in, tile); };
  if (dense_applies(s)) return dense_forward(y, x, w, bias, s, relu);
  if (use_batched(s)) {
    // Small planes: the whole batch as one GEMM, or Winograd over groups of images, as measured.
    if (s.n > 0 && winograd_applies(s) && split_over_batch(s.n)) {
      const int tile = winograd_tile(
          s, kForward, [&] { batched_forward(y, x, w, s, ep); },
          [&](int t) { winograd_forward_batch(t, y, x, u_of(t), bias, s, relu); }, kSmallPlanes);
      if (tile) return winograd_forward_batch(tile, y, x, u_of(tile), bias, s, relu);
    }
    return batched_forward(y, x, w, s, ep);
  }
  if (s.n > 0 && s.c_in > 0 && direct_small_applies(s)) return direct_small_forward(y, x, w, bias, s, relu);
  if (split_over_batch(s.n)) {
    int tile = 0;
    if (s.n > 0 && winograd_applies(s)) {
      // Timed on one group of images (what a Winograd call gets), on the calling thread.
      const int64_t g = std::min(winograd_group(s, 2), s.n);
      tile = winograd_tile(
          s, kForward,
          [&] {
            for (int64_t b = 0; b < g; b++) {
              const ImageB ib{x + b * x_size, &s};
              sgemm_serial_source(y + b * s.c_out * plane, plane, w, kdim, false, BSource{pack_cols, &ib}, s.c_out,
                                  plane, kdim, 0.0f, ep);
            }
          },
          [&](int t) { winograd_images(t, y, x, g, u_of(t), bias, s, relu); });
    }
    if (tile) return winograd_forward_batch(tile, y, x, u_of(tile), bias, s, relu);
    parallel_run(
        [&](int ith, int nth) {
          for (int64_t b = ith; b < s.n; b += nth) {
            const float* xb = x + b * x_size;
            float* yb = y + b * s.c_out * plane;
            if (pointwise) {
              sgemm_serial(yb, plane, w, kdim, xb, plane, s.c_out, plane, kdim, false, false, 0.0f, ep);
              continue;
            }
            const ImageB ib{xb, &s};
            sgemm_serial_source(yb, plane, w, kdim, false, BSource{pack_cols, &ib}, s.c_out, plane, kdim, 0.0f, ep);
          }
        },
        s.n);
    return;
  }
  // Image by image, each one split over the threads: Winograd by tile ranges, or im2col + threaded GEMM.
  float* cols = pointwise ? nullptr : thread_scratch(0, kdim * plane);
  auto direct = [&](int64_t b) {
    const float* xb = x + b * x_size;
    if (!pointwise) parallel_channels(s.c_in, [&](int64_t c0, int64_t c1) { im2col(cols, xb, s, c0, c1, plane); });
    sgemm(y + b * s.c_out * plane, plane, w, kdim, pointwise ? xb : cols, plane, s.c_out, plane, kdim, false, false,
          0.0f, ep);
  };
  auto winograd = [&](int tile, int64_t b) { winograd_one_image(tile, y, x, b, u_of(tile), bias, s, relu); };
  const int tile = s.n > 0 && winograd_applies(s)
                       ? winograd_tile(s, kForward, [&] { direct(0); }, [&](int t) { winograd(t, 0); })
                       : 0;
  for (int64_t b = 0; b < s.n; b++) {
    if (tile) winograd(tile, b);
    else direct(b);
  }
}

constexpr int64_t kPooledMinPlane = 400;

bool conv2d_relu_pool_forward(float* y, int32_t* argmax, const float* x, const float* w, const float* bias,
                              const ConvShape& s) {
  if (s.n <= 0 || s.c_in <= 0 || dense_applies(s) || use_batched(s)) return false;
  // A grayscale first layer: the few-taps kernel, pooled as its rows are computed (where conv2d_forward
  // would run it).
  if (direct_small_applies(s)) {
    if (s.out_h < 2 || s.out_w < 2) return false;
    direct_small_pool_forward(y, argmax, x, w, bias, s);
    return true;
  }
  // Otherwise only where conv2d_forward would run Winograd by image groups or tile ranges, and has measured so.
  if (!winograd_applies(s)) return false;
  // In Auto mode, only on planes of 20x20 and more: there the pool pass it saves is large (at 112x112 the
  // pooled layer takes 65.5 ms against 70.0 for the conv alone); on 16x16 and 8x8 planes, measured at batch
  // 128, the conv and a separate pool of its cache-resident output are 20-25% faster.
  if (g_algorithm == ConvAlgorithm::Auto && plane_of(s) < kPooledMinPlane) return false;
  const int tile = known_winograd_tile(s, kForward);
  if (tile <= 0) return false;
  const float* u = transformed_weights(w, s.c_out, s.c_in, tile);
  const PoolTarget pool{y, argmax};
  if (split_over_batch(s.n)) {
    winograd_forward_batch(tile, nullptr, x, u, bias, s, true, &pool);
    return true;
  }
  for (int64_t b = 0; b < s.n; b++) winograd_one_image(tile, nullptr, x, b, u, bias, s, true, &pool);
  return true;
}

void conv2d_backward_input(float* dx, const float* dy, const float* w, const float* relu_x, const ConvShape& s) {
  const int64_t kdim = kdim_of(s), plane = plane_of(s), x_size = s.c_in * s.h * s.w;
  const bool pointwise = is_pointwise(s);
  auto u_of = [&](int tile) { return flipped_transformed_weights(w, s.c_out, s.c_in, tile); };
  const ConvShape st = transposed_shape(s);
  if (dense_applies(s)) return dense_backward_input(dx, dy, w, relu_x, s);
  if (use_batched(s)) {
    if (s.n > 0 && winograd_backward_applies(s) && split_over_batch(s.n)) {
      const int tile = winograd_tile(
          s, kBackwardInput, [&] { batched_backward_input(dx, dy, w, relu_x, s); },
          [&](int t) { winograd_backward_input_batch(t, dx, dy, u_of(t), st, relu_x, s); }, kSmallPlanes);
      if (tile) return winograd_backward_input_batch(tile, dx, dy, u_of(tile), st, relu_x, s);
    }
    return batched_backward_input(dx, dy, w, relu_x, s);
  }
  if (split_over_batch(s.n)) {
    int tile = 0;
    if (s.n > 0 && winograd_backward_applies(s)) {
      float* cols0 = thread_scratch(0, kdim * plane);
      const int64_t g = std::min(winograd_group(st, 2), s.n);
      tile = winograd_tile(
          s, kBackwardInput,
          [&] {
            for (int64_t b = 0; b < g; b++) {
              sgemm_serial(cols0, plane, w, kdim, dy + b * s.c_out * plane, plane, kdim, plane, s.c_out, true, false,
                           0.0f);
              col2im(dx + b * x_size, cols0, s, 0, s.c_in, plane);
            }
          },
          [&](int t) { winograd_images(t, dx, dy, g, u_of(t), nullptr, st, false); });
    }
    if (tile) return winograd_backward_input_batch(tile, dx, dy, u_of(tile), st, relu_x, s);
    parallel_run(
        [&](int ith, int nth) {
          float* cols = pointwise ? nullptr : thread_scratch(0, kdim * plane);
          for (int64_t b = ith; b < s.n; b += nth) {
            float* dxb = dx + b * x_size;
            sgemm_serial(pointwise ? dxb : cols, plane, w, kdim, dy + b * s.c_out * plane, plane, kdim, plane, s.c_out,
                         true, false, 0.0f);
            if (!pointwise) col2im(dxb, cols, s, 0, s.c_in, plane);
            if (relu_x) mask_by_relu(dxb, relu_x + b * x_size, 0, x_size);
          }
        },
        s.n);
    return;
  }
  float* cols = pointwise ? nullptr : thread_scratch(0, kdim * plane);
  for (int64_t b = 0; b < s.n; b++) {
    float* dxb = dx + b * x_size;
    sgemm(pointwise ? dxb : cols, plane, w, kdim, dy + b * s.c_out * plane, plane, kdim, plane, s.c_out, true, false,
          0.0f);
    const float* xb = relu_x ? relu_x + b * x_size : nullptr;
    parallel_channels(s.c_in, [&](int64_t c0, int64_t c1) {
      if (!pointwise) col2im(dxb, cols, s, c0, c1, plane);
      if (xb) mask_by_relu(dxb, xb, c0 * s.h * s.w, c1 * s.h * s.w);
    });
  }
}

// A private, reused Winograd-domain accumulator for the calling thread (the scratch slots are taken by the
// transforms and GEMMs that fill it).
float* winograd_accumulator(int64_t count) {
  static thread_local std::vector<float> m;
  if (static_cast<int64_t>(m.size()) < count) m.resize(static_cast<size_t>(count));
  return m.data();
}

// How the weight gradient runs: 2 or 4 (Winograd F(2x2) or F(4x4)), or 0 (im2col + GEMM). Winograd needs
// 3x3 stride 1, images split over the threads and more than a few taps per filter; in Auto mode the way is
// measured on the first group of images.
int winograd_weight_tile(const ConvShape& s, const float* dy, const float* x) {
  if (s.n == 0 || !winograd_applies(s) || !split_over_batch(s.n) || kdim_of(s) <= kSmallKdim) return 0;
  const int64_t plane = plane_of(s), kdim = kdim_of(s);
  static thread_local std::vector<float> out;
  out.resize(static_cast<size_t>(s.c_out * kdim));
  const int64_t x_size = s.c_in * s.h * s.w;
  // Timed on the calling thread over the images of one Winograd call of either tile size (the larger
  // group), each way in its own steps: image by image, or F(2x2)'s and F(4x4)'s groups. The direct way
  // writes `out`; Winograd's accumulator is turned into weights once per batch, which is not timed.
  const int64_t g = std::min(std::max(winograd_group(s, 2), winograd_group(s, 4)), s.n);
  return winograd_tile(
      s, kBackwardWeight,
      [&] {
        for (int64_t b = 0; b < g; b++) {
          const ImageB ib{x + b * x_size, &s};
          sgemm_serial_source(out.data(), kdim, dy + b * s.c_out * plane, plane, false,
                              BSource{pack_cols_transposed, &ib}, s.c_out, kdim, plane, b == 0 ? 0.0f : 1.0f);
        }
      },
      [&](int tile) {
        const bool four = tile == 4;
        float* m = winograd_accumulator(four ? winograd4_weight_acc_size(s.c_out, s.c_in)
                                             : winograd_weight_acc_size(s.c_out, s.c_in));
        const int64_t group = winograd_group(s, tile);
        for (int64_t b = 0; b < g; b += group) {
          const int64_t images = std::min(group, g - b);
          if (four)
            winograd4_weight_grad_images(m, dy + b * s.c_out * plane, x + b * x_size, images, s, b > 0);
          else
            winograd_weight_grad_images(m, dy + b * s.c_out * plane, x + b * x_size, images, s, b > 0);
        }
        // (The transform back, G^T M G, runs once per batch, not per group: it is left out.)
      });
}

// The weight gradient by Winograd with this output tile (2 or 4) over the whole batch: each thread sums its
// images' tiles into a private Winograd-domain M (16 or 36, cOut, cIn); the partial sums are added in
// thread order, then each filter is transformed back (G^T M G).
void winograd_weight_batch(int tile, float* dw, const float* dy, const float* x, const ConvShape& s) {
  const int64_t plane = plane_of(s), x_size = s.c_in * s.h * s.w;
  const bool four = tile == 4;
  const int64_t m_size = four ? winograd4_weight_acc_size(s.c_out, s.c_in) : winograd_weight_acc_size(s.c_out, s.c_in);
  float* partial[256] = {};
  parallel_run_together(
      [&](int ith, int nth) {
        float* acc = winograd_accumulator(m_size);
        partial[ith] = acc;
        bool first = true;
        int64_t b0, b1;
        split_range(s.n, ith, nth, 1, &b0, &b1);
        const int64_t group = winograd_group(s, tile);
        for (int64_t b = b0; b < b1; b += group) {
          const float* dyb = dy + b * s.c_out * plane;
          const int64_t images = std::min(group, b1 - b);
          if (four)
            winograd4_weight_grad_images(acc, dyb, x + b * x_size, images, s, !first);
          else
            winograd_weight_grad_images(acc, dyb, x + b * x_size, images, s, !first);
          first = false;
        }
        if (first) std::memset(acc, 0, m_size * sizeof(float));
        barrier(nth);
        int64_t i0, i1;
        split_range(m_size, ith, nth, 16, &i0, &i1);
        for (int t = 1; t < nth; t++)
          for (int64_t i = i0; i < i1; i++) partial[0][i] += partial[t][i];
        barrier(nth);
        int64_t f0, f1;
        split_range(s.c_out * s.c_in, ith, nth, 1, &f0, &f1);
        if (four)
          winograd4_weight_grad_finish(dw, partial[0], s.c_out, s.c_in, f0, f1);
        else
          winograd_weight_grad_finish(dw, partial[0], s.c_out, s.c_in, f0, f1);
      },
      std::min<int64_t>(s.n, 256));
}

// dw = the sum over the batch of image_fn(acc, b, beta), which adds image b's weight gradient to acc (or
// overwrites it, beta 0). Images go to the threads in contiguous runs, as the kernels that wrote dy split
// them (a line of dy written on one core and read on the other costs a transfer between the cores' caches);
// thread 0 accumulates into dw, the others into private partial sums, then all add them up.
template <typename ImageFn>
void weight_grad_by_images(float* dw, const ConvShape& s, ImageFn&& image_fn) {
  const int64_t w_size = s.c_out * kdim_of(s);
  float* partial[256] = {};
  parallel_run_together(
      [&](int ith, int nth) {
        float* acc = ith == 0 ? dw : thread_scratch(1, w_size);
        partial[ith] = acc;
        bool first = true;
        int64_t b0, b1;
        split_range(s.n, ith, nth, 1, &b0, &b1);
        for (int64_t b = b0; b < b1; b++) {
          image_fn(acc, b, first ? 0.0f : 1.0f);
          first = false;
        }
        if (first) std::memset(acc, 0, w_size * sizeof(float));
        barrier(nth);
        int64_t i0, i1;
        split_range(w_size, ith, nth, 16, &i0, &i1);
        for (int t = 1; t < nth; t++)
          for (int64_t i = i0; i < i1; i++) dw[i] += partial[t][i];
      },
      std::min<int64_t>(std::max<int64_t>(s.n, 1), 256));
}

// db[co] = the sum over images, in order and in double, of sums (n, cOut): each image's channel sums.
void bias_grad_of_sums(float* db, const float* sums, const ConvShape& s) {
  for (int64_t co = 0; co < s.c_out; co++) {
    double sum = 0.0;
    for (int64_t b = 0; b < s.n; b++) sum += sums[b * s.c_out + co];
    db[co] = static_cast<float>(sum);
  }
}

void conv2d_backward_weight(float* dw, float* db, const float* dy, const float* x, const ConvShape& s) {
  const int64_t kdim = kdim_of(s), plane = plane_of(s), x_size = s.c_in * s.h * s.w;
  const int64_t w_size = s.c_out * kdim;
  const bool pointwise = is_pointwise(s);
  if (dense_applies(s)) {
    dense_backward_weight(dw, dy, x, s);
  } else if (use_batched(s)) {
    // Small planes: the whole batch as one GEMM, or Winograd over the batch, as measured.
    int tile = 0;
    if (s.n > 0 && winograd_applies(s) && split_over_batch(s.n) && kdim_of(s) > kSmallKdim)
      tile = winograd_tile(
          s, kBackwardWeight, [&] { batched_backward_weight(dw, dy, x, s); },
          [&](int t) { winograd_weight_batch(t, dw, dy, x, s); }, kSmallPlanes);
    if (tile)
      winograd_weight_batch(tile, dw, dy, x, s);
    else
      batched_backward_weight(dw, dy, x, s);
  } else if (const int tile = winograd_weight_tile(s, dy, x)) {
    winograd_weight_batch(tile, dw, dy, x, s);
  } else if (split_over_batch(s.n)) {
    weight_grad_by_images(dw, s, [&](float* acc, int64_t b, float beta) {
      const float* xb = x + b * x_size;
      const float* dyb = dy + b * s.c_out * plane;
      if (pointwise) return sgemm_serial(acc, kdim, dyb, plane, xb, plane, s.c_out, kdim, plane, false, true, beta);
      if (kdim <= kSmallKdim) return small_kdim_weight_grad(acc, dyb, xb, s, beta);
      const ImageB ib{xb, &s};
      sgemm_serial_source(acc, kdim, dyb, plane, false, BSource{pack_cols_transposed, &ib}, s.c_out, kdim, plane,
                          beta);
    });
  } else {
    float* cols = pointwise ? nullptr : thread_scratch(0, kdim * plane);
    if (s.n == 0) std::memset(dw, 0, w_size * sizeof(float));
    for (int64_t b = 0; b < s.n; b++) {
      const float* xb = x + b * x_size;
      if (!pointwise) parallel_channels(s.c_in, [&](int64_t c0, int64_t c1) { im2col(cols, xb, s, c0, c1, plane); });
      sgemm(dw, kdim, dy + b * s.c_out * plane, plane, pointwise ? xb : cols, plane, s.c_out, kdim, plane, false, true,
            b == 0 ? 0.0f : 1.0f);
    }
  }
  if (db) {
    // Each image's channel sums on the thread that holds that image (as above), then summed over the
    // images in order: the same value whatever the thread count.
    float* sums = thread_scratch(2, static_cast<size_t>(std::max<int64_t>(s.n * s.c_out, 1)));
    parallel_run(
        [&](int ith, int nth) {
          int64_t b0, b1;
          split_range(s.n, ith, nth, 1, &b0, &b1);
          for (int64_t b = b0; b < b1; b++)
            for (int64_t co = 0; co < s.c_out; co++)
              sums[b * s.c_out + co] = sum_lanes(dy + (b * s.c_out + co) * plane, plane);
        },
        s.n);
    bias_grad_of_sums(db, sums, s);
  }
}

bool conv2d_pool_backward_weight(float* dw, float* db, const float* dy, const int32_t* argmax, const float* relu_y,
                                 const float* x, const ConvShape& s) {
  // Where conv2d_backward_weight runs the few-taps kernel over images split across the threads.
  if (s.n <= 0 || s.c_in <= 0 || s.out_h < 2 || s.out_w < 2 || kdim_of(s) > kSmallKdim || is_pointwise(s) ||
      dense_applies(s) || use_batched(s) || !split_over_batch(s.n))
    return false;
  const int64_t plane = plane_of(s), x_size = s.c_in * s.h * s.w;
  const PoolShape one{1, s.c_out, s.out_h, s.out_w, 2, 2, 2, 2, 0, 0, s.out_h / 2, s.out_w / 2};
  const int64_t pooled = s.c_out * one.out_h * one.out_w;
  float* sums = db ? thread_scratch(3, static_cast<size_t>(s.n * s.c_out)) : nullptr;
  weight_grad_by_images(dw, s, [&](float* acc, int64_t b, float beta) {
    // The image's conv gradient, as max_pool2d_backward writes it (run serially: this is inside a task),
    // into a buffer the thread reuses for every image, then the image's weight and bias gradients from it.
    float* dconv = thread_scratch(5, static_cast<size_t>(s.c_out * plane));
    max_pool2d_backward(dconv, dy + b * pooled, argmax + b * pooled, relu_y ? relu_y + b * pooled : nullptr, one);
    small_kdim_weight_grad(acc, dconv, x + b * x_size, s, beta);
    if (sums)
      for (int64_t co = 0; co < s.c_out; co++) sums[b * s.c_out + co] = sum_lanes(dconv + co * plane, plane);
  });
  if (db) bias_grad_of_sums(db, sums, s);
  return true;
}

const char* direct_conv_kernel_name() {
  // The few-taps forward (a grayscale first layer); its weight gradient runs the avx2+fma code at avx512.
  if (isa_at_least(Isa::Avx512)) return "forward 16 pixels per vector, avx512; weight gradient avx2+fma";
  return isa_at_least(Isa::Avx2Fma) ? "avx2+fma" : "portable C++";
}

}  // namespace vgg
