// Max pooling, parallel over the n*c planes (each thread owns whole planes, so no write is shared).
#include "pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "isa.h"
#include "threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VGG_X86 1
#endif

namespace vgg {

namespace {

// The 2x2 stride-2 unpadded window of VGG, every window inside the image: the generic rule unrolled into
// selects (no unpredictable branches). Row by row: a NaN ends its row and replaces any earlier choice.
// This one does output columns [ox0, outW) of row oy.
void max_pool_2x2_row(float* yp, int32_t* ap, const float* xp, const PoolShape& s, int64_t oy, int64_t ox0) {
  const float* r0 = xp + 2 * oy * s.w;
  const float* r1 = r0 + s.w;
  for (int64_t ox = ox0; ox < s.out_w; ox++) {
      int idx;
      const float best = max_of_window(r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1], &idx);
      yp[oy * s.out_w + ox] = best;
      ap[oy * s.out_w + ox] = static_cast<int32_t>((2 * oy + (idx >> 1)) * s.w + 2 * ox + (idx & 1));
  }
}


#ifdef VGG_X86
// Columns 0, 2, .., 14 (even) or 1, 3, .., 15 (odd) of the 16 floats lo:hi, in order.
__attribute__((target("avx2,fma"))) inline __m256 even(__m256 lo, __m256 hi) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
}
__attribute__((target("avx2,fma"))) inline __m256 odd(__m256 lo, __m256 hi) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
}

// The same rule on 8 outputs at a time: even/odd columns de-interleaved, selects as blends.
__attribute__((target("avx2,fma"))) void max_pool_2x2_avx2(float* yp, int32_t* ap, const float* xp,
                                                           const PoolShape& s) {
  const __m256i lane2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i off_b = _mm256_set1_epi32(1), off_c = _mm256_set1_epi32(static_cast<int32_t>(s.w));
  const __m256i off_d = _mm256_set1_epi32(static_cast<int32_t>(s.w + 1));
  for (int64_t oy = 0; oy < s.out_h; oy++) {
    const float* r0 = xp + 2 * oy * s.w;
    const float* r1 = r0 + s.w;
    int64_t ox = 0;
    for (; ox + 8 <= s.out_w; ox += 8) {
      const __m256 lo0 = _mm256_loadu_ps(r0 + 2 * ox), hi0 = _mm256_loadu_ps(r0 + 2 * ox + 8);
      const __m256 lo1 = _mm256_loadu_ps(r1 + 2 * ox), hi1 = _mm256_loadu_ps(r1 + 2 * ox + 8);
      const __m256 a = even(lo0, hi0), b = odd(lo0, hi0), c = even(lo1, hi1), d = odd(lo1, hi1);
      const __m256 nan_a = _mm256_cmp_ps(a, a, _CMP_UNORD_Q), nan_b = _mm256_cmp_ps(b, b, _CMP_UNORD_Q);
      const __m256 nan_c = _mm256_cmp_ps(c, c, _CMP_UNORD_Q), nan_d = _mm256_cmp_ps(d, d, _CMP_UNORD_Q);
      const __m256 take_b = _mm256_andnot_ps(nan_a, _mm256_or_ps(_mm256_cmp_ps(b, a, _CMP_GT_OQ), nan_b));
      __m256 best = _mm256_blendv_ps(a, b, take_b);
      __m256i off = _mm256_and_si256(_mm256_castps_si256(take_b), off_b);
      const __m256 take_c = _mm256_or_ps(_mm256_cmp_ps(c, best, _CMP_GT_OQ), nan_c);
      best = _mm256_blendv_ps(best, c, take_c);
      off = _mm256_blendv_epi8(off, off_c, _mm256_castps_si256(take_c));
      const __m256 take_d = _mm256_andnot_ps(nan_c, _mm256_or_ps(_mm256_cmp_ps(d, best, _CMP_GT_OQ), nan_d));
      best = _mm256_blendv_ps(best, d, take_d);
      off = _mm256_blendv_epi8(off, off_d, _mm256_castps_si256(take_d));
      const __m256i base = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(2 * oy * s.w + 2 * ox)), lane2);
      _mm256_storeu_ps(yp + oy * s.out_w + ox, best);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ap + oy * s.out_w + ox), _mm256_add_epi32(base, off));
    }
    max_pool_2x2_row(yp, ap, xp, s, oy, ox);
  }
}
#endif

#ifdef VGG_X86
#define VGG_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))
// The AVX2 kernel's rule on 16 outputs at a time, its lane masks as opmasks (the same picks, so the same
// outputs and argmax).
VGG_AVX512 void max_pool_2x2_avx512(float* yp, int32_t* ap, const float* xp, const PoolShape& s) {
  const __m512i lane2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_lanes = _mm512_add_epi32(lane2, _mm512_set1_epi32(1));
  const __m512i off_b = _mm512_set1_epi32(1), off_c = _mm512_set1_epi32(static_cast<int32_t>(s.w));
  const __m512i off_d = _mm512_set1_epi32(static_cast<int32_t>(s.w + 1));
  for (int64_t oy = 0; oy < s.out_h; oy++) {
    const float* r0 = xp + 2 * oy * s.w;
    const float* r1 = r0 + s.w;
    int64_t ox = 0;
    for (; ox + 16 <= s.out_w; ox += 16) {
      const __m512 lo0 = _mm512_loadu_ps(r0 + 2 * ox), hi0 = _mm512_loadu_ps(r0 + 2 * ox + 16);
      const __m512 lo1 = _mm512_loadu_ps(r1 + 2 * ox), hi1 = _mm512_loadu_ps(r1 + 2 * ox + 16);
      const __m512 a = _mm512_permutex2var_ps(lo0, lane2, hi0), b = _mm512_permutex2var_ps(lo0, odd_lanes, hi0);
      const __m512 c = _mm512_permutex2var_ps(lo1, lane2, hi1), d = _mm512_permutex2var_ps(lo1, odd_lanes, hi1);
      const __mmask16 nan_a = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), nan_b = _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
      const __mmask16 nan_c = _mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q), nan_d = _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q);
      const __mmask16 take_b = static_cast<__mmask16>(~nan_a & (_mm512_cmp_ps_mask(b, a, _CMP_GT_OQ) | nan_b));
      __m512 best = _mm512_mask_blend_ps(take_b, a, b);
      __m512i off = _mm512_maskz_mov_epi32(take_b, off_b);
      const __mmask16 take_c = static_cast<__mmask16>(_mm512_cmp_ps_mask(c, best, _CMP_GT_OQ) | nan_c);
      best = _mm512_mask_blend_ps(take_c, best, c);
      off = _mm512_mask_blend_epi32(take_c, off, off_c);
      const __mmask16 take_d =
          static_cast<__mmask16>(~nan_c & (_mm512_cmp_ps_mask(d, best, _CMP_GT_OQ) | nan_d));
      best = _mm512_mask_blend_ps(take_d, best, d);
      off = _mm512_mask_blend_epi32(take_d, off, off_d);
      const __m512i base = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(2 * oy * s.w + 2 * ox)), lane2);
      _mm512_storeu_ps(yp + oy * s.out_w + ox, best);
      _mm512_storeu_si512(ap + oy * s.out_w + ox, _mm512_add_epi32(base, off));
    }
    max_pool_2x2_row(yp, ap, xp, s, oy, ox);
  }
}
#endif

// relu_pool_row_pair's windows [ox2_begin, out_w / 2), one at a time.
void relu_pool_row_pair_scalar(float* y, int32_t* argmax, const float* from, int64_t ld, float add, int64_t oy2,
                               int64_t out_w, int64_t ox2_begin) {
  for (int64_t ox2 = ox2_begin; ox2 < out_w / 2; ox2++) {
    const float* p = from + 2 * ox2;
    int idx;
    const float best = max_of_window(std::max(p[0] + add, 0.0f), std::max(p[1] + add, 0.0f),
                                     std::max(p[ld] + add, 0.0f), std::max(p[ld + 1] + add, 0.0f), &idx);
    y[ox2] = best;
    argmax[ox2] = static_cast<int32_t>((2 * oy2 + idx / 2) * out_w + 2 * ox2 + idx % 2);
  }
}

#ifdef VGG_X86
// 16 windows at a time: even and odd columns split by permutes, the same choice per lane as the scalar
// rule, the row's last windows scalar. (GCC 12's _mm512_max_ps passes _mm512_undefined_ps(), which
// -Wmaybe-uninitialized reports at every use.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
VGG_AVX512 void relu_pool_row_pair_avx512(float* y, int32_t* argmax, const float* from, int64_t ld, float add,
                                          int64_t oy2, int64_t out_w) {
  const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
  const __m512 bias = _mm512_set1_ps(add), zero = _mm512_setzero_ps();
  const __m512i lane2 = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(2));
  const int64_t windows = out_w / 2;
  int64_t ox2 = 0;
  for (; ox2 + 16 <= windows; ox2 += 16) {
    const float* p = from + 2 * ox2;
    // max(0, v): a NaN stays NaN (the second operand is returned when either is NaN).
    const __m512 top0 = _mm512_loadu_ps(p), top1 = _mm512_loadu_ps(p + 16);
    const __m512 bot0 = _mm512_loadu_ps(p + ld), bot1 = _mm512_loadu_ps(p + ld + 16);
    const __m512 a = _mm512_max_ps(zero, _mm512_add_ps(_mm512_permutex2var_ps(top0, evens, top1), bias));
    const __m512 b = _mm512_max_ps(zero, _mm512_add_ps(_mm512_permutex2var_ps(top0, odds, top1), bias));
    const __m512 c = _mm512_max_ps(zero, _mm512_add_ps(_mm512_permutex2var_ps(bot0, evens, bot1), bias));
    const __m512 d = _mm512_max_ps(zero, _mm512_add_ps(_mm512_permutex2var_ps(bot0, odds, bot1), bias));
    const __mmask16 nan_a = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), nan_b = _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
    const __mmask16 nan_c = _mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q), nan_d = _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q);
    const __mmask16 take_b = static_cast<__mmask16>(~nan_a & (_mm512_cmp_ps_mask(b, a, _CMP_GT_OQ) | nan_b));
    __m512 best = _mm512_mask_mov_ps(a, take_b, b);
    __m512i idx = _mm512_mask_mov_epi32(_mm512_setzero_si512(), take_b, _mm512_set1_epi32(1));
    const __mmask16 take_c = static_cast<__mmask16>(_mm512_cmp_ps_mask(c, best, _CMP_GT_OQ) | nan_c);
    best = _mm512_mask_mov_ps(best, take_c, c);
    idx = _mm512_mask_mov_epi32(idx, take_c, _mm512_set1_epi32(static_cast<int>(out_w)));
    const __mmask16 take_d = static_cast<__mmask16>(~nan_c & (_mm512_cmp_ps_mask(d, best, _CMP_GT_OQ) | nan_d));
    best = _mm512_mask_mov_ps(best, take_d, d);
    idx = _mm512_mask_mov_epi32(idx, take_d, _mm512_set1_epi32(static_cast<int>(out_w + 1)));
    const __m512i base = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(2 * oy2 * out_w + 2 * ox2)), lane2);
    _mm512_storeu_ps(y + ox2, best);
    _mm512_storeu_si512(argmax + ox2, _mm512_add_epi32(base, idx));
  }
  relu_pool_row_pair_scalar(y, argmax, from, ld, add, oy2, out_w, ox2);
}
#pragma GCC diagnostic pop
#endif

void max_pool_2x2(float* yp, int32_t* ap, const float* xp, const PoolShape& s) {
#ifdef VGG_X86
  if (isa_at_least(Isa::Avx512)) return max_pool_2x2_avx512(yp, ap, xp, s);
  if (isa_at_least(Isa::Avx2Fma)) return max_pool_2x2_avx2(yp, ap, xp, s);
#endif
  for (int64_t oy = 0; oy < s.out_h; oy++) max_pool_2x2_row(yp, ap, xp, s, oy, 0);
}

}  // namespace

void relu_pool_row_pair(float* y, int32_t* argmax, const float* from, int64_t ld, float add, int64_t oy2,
                        int64_t out_w) {
#ifdef VGG_X86
  if (isa_at_least(Isa::Avx512)) return relu_pool_row_pair_avx512(y, argmax, from, ld, add, oy2, out_w);
#endif
  relu_pool_row_pair_scalar(y, argmax, from, ld, add, oy2, out_w, 0);
}

void max_pool2d_forward(float* y, int32_t* argmax, const float* x, const PoolShape& s) {
  const int64_t planes = s.n * s.c, in_plane = s.h * s.w, out_plane = s.out_h * s.out_w;
  const bool vgg_window = s.kh == 2 && s.kw == 2 && s.stride_h == 2 && s.stride_w == 2 && s.pad_h == 0 &&
                          s.pad_w == 0 && 2 * s.out_h <= s.h && 2 * s.out_w <= s.w;
  parallel_run(
      [&](int ith, int nth) {
        int64_t p0, p1;
        split_range(planes, ith, nth, 1, &p0, &p1);
        for (int64_t pl = p0; pl < p1; pl++) {
          const float* xp = x + pl * in_plane;
          float* yp = y + pl * out_plane;
          int32_t* ap = argmax + pl * out_plane;
          if (vgg_window) {
            max_pool_2x2(yp, ap, xp, s);
            continue;
          }
          for (int64_t oy = 0; oy < s.out_h; oy++)
            for (int64_t ox = 0; ox < s.out_w; ox++) {
              float best = -std::numeric_limits<float>::infinity();
              int64_t best_idx = -1;
              for (int64_t ki = 0; ki < s.kh; ki++) {
                const int64_t iy = oy * s.stride_h - s.pad_h + ki;
                if (iy < 0 || iy >= s.h) continue;
                for (int64_t kj = 0; kj < s.kw; kj++) {
                  const int64_t ix = ox * s.stride_w - s.pad_w + kj;
                  if (ix < 0 || ix >= s.w) continue;
                  const float v = xp[iy * s.w + ix];
                  // Same rule as the reference: the first NaN of a window row wins, NaN propagates.
                  if (v > best || std::isnan(v) || best_idx < 0) {
                    best = v;
                    best_idx = iy * s.w + ix;
                    if (std::isnan(v)) break;
                  }
                }
              }
              yp[oy * s.out_w + ox] = best;
              ap[oy * s.out_w + ox] = static_cast<int32_t>(best_idx);
            }
        }
      },
      planes);
}

namespace {

// The backward of the 2x2 stride-2 window for one plane when every argmax lies in its own window (what
// the forward pass writes): each window's 2x2 block of dx is written once, the gradient at the argmax and
// zeros elsewhere, instead of zeroing the plane and scattering into it. Returns false at the first argmax
// found elsewhere; the caller then rewrites the whole plane the general way. Pooled columns [ox0, outW)
// of row oy.
bool max_pool_2x2_backward_row(float* dxp, const float* dyp, const int32_t* ap, const float* yp, int64_t w,
                               int64_t out_w, int64_t oy, int64_t ox0) {
  float* r0 = dxp + 2 * oy * w;
  float* r1 = r0 + w;
  const int64_t base = 2 * oy * w;
  for (int64_t ox = ox0; ox < out_w; ox++) {
    const int64_t p = oy * out_w + ox;
    const float g = yp && !(yp[p] > 0.0f) ? 0.0f : dyp[p];
    const int64_t off = ap[p] - (base + 2 * ox);
    if (off != 0 && off != 1 && off != w && off != w + 1) return false;
    r0[2 * ox] = off == 0 ? g : 0.0f;
    r0[2 * ox + 1] = off == 1 ? g : 0.0f;
    r1[2 * ox] = off == w ? g : 0.0f;
    r1[2 * ox + 1] = off == w + 1 ? g : 0.0f;
  }
  return true;
}

#ifdef VGG_X86
// 8 windows at a time: the four candidate offsets as lane masks, the blocks interleaved back into rows.
__attribute__((target("avx2,fma"))) bool max_pool_2x2_backward_row_avx2(float* dxp, const float* dyp,
                                                                        const int32_t* ap, const float* yp,
                                                                        int64_t w, int64_t out_w, int64_t oy) {
  float* r0 = dxp + 2 * oy * w;
  float* r1 = r0 + w;
  const __m256i lane2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i one = _mm256_set1_epi32(1), wv = _mm256_set1_epi32(static_cast<int32_t>(w));
  const __m256i w1 = _mm256_set1_epi32(static_cast<int32_t>(w + 1));
  const __m256 zero = _mm256_setzero_ps();
  int64_t ox = 0;
  for (; ox + 8 <= out_w; ox += 8) {
    const int64_t p = oy * out_w + ox;
    __m256 g = _mm256_loadu_ps(dyp + p);
    if (yp) g = _mm256_and_ps(g, _mm256_cmp_ps(_mm256_loadu_ps(yp + p), zero, _CMP_GT_OQ));
    const __m256i start = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(2 * oy * w + 2 * ox)), lane2);
    const __m256i off = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap + p)), start);
    const __m256 m00 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(off, _mm256_setzero_si256()));
    const __m256 m01 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(off, one));
    const __m256 m10 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(off, wv));
    const __m256 m11 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(off, w1));
    const __m256 any = _mm256_or_ps(_mm256_or_ps(m00, m01), _mm256_or_ps(m10, m11));
    if (_mm256_movemask_ps(any) != 0xFF) return false;
    const __m256 a = _mm256_and_ps(m00, g), b = _mm256_and_ps(m01, g);
    const __m256 c = _mm256_and_ps(m10, g), d = _mm256_and_ps(m11, g);
    const __m256 ab_lo = _mm256_unpacklo_ps(a, b), ab_hi = _mm256_unpackhi_ps(a, b);
    const __m256 cd_lo = _mm256_unpacklo_ps(c, d), cd_hi = _mm256_unpackhi_ps(c, d);
    _mm256_storeu_ps(r0 + 2 * ox, _mm256_permute2f128_ps(ab_lo, ab_hi, 0x20));
    _mm256_storeu_ps(r0 + 2 * ox + 8, _mm256_permute2f128_ps(ab_lo, ab_hi, 0x31));
    _mm256_storeu_ps(r1 + 2 * ox, _mm256_permute2f128_ps(cd_lo, cd_hi, 0x20));
    _mm256_storeu_ps(r1 + 2 * ox + 8, _mm256_permute2f128_ps(cd_lo, cd_hi, 0x31));
  }
  return max_pool_2x2_backward_row(dxp, dyp, ap, yp, w, out_w, oy, ox);
}

// 16 windows at a time, as the AVX2 row: the candidate offsets as opmasks, rows re-interleaved by permutes.
VGG_AVX512 bool max_pool_2x2_backward_row_avx512(float* dxp, const float* dyp, const int32_t* ap, const float* yp,
                                                 int64_t w, int64_t out_w, int64_t oy) {
  float* r0 = dxp + 2 * oy * w;
  float* r1 = r0 + w;
  const __m512i lane2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  // Lanes 0, 16, 1, 17, ...: a's and b's first eight interleaved; + 8 for the last eight.
  const __m512i mix_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i mix_hi = _mm512_add_epi32(mix_lo, _mm512_set1_epi32(8));
  const __m512i one = _mm512_set1_epi32(1), wv = _mm512_set1_epi32(static_cast<int32_t>(w));
  const __m512i w1 = _mm512_set1_epi32(static_cast<int32_t>(w + 1));
  // 16 windows per step; the last, shorter step under masks (its lanes past the row neither read nor written).
  for (int64_t ox = 0; ox < out_w; ox += 16) {
    const int64_t p = oy * out_w + ox, left = out_w - ox;
    const __mmask16 lanes = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
    __m512 g = _mm512_maskz_loadu_ps(lanes, dyp + p);
    if (yp)
      g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(lanes, yp + p), _mm512_setzero_ps(), _CMP_GT_OQ), g);
    const __m512i start = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(2 * oy * w + 2 * ox)), lane2);
    const __m512i off = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(lanes, ap + p), start);
    const __mmask16 m00 = _mm512_cmpeq_epi32_mask(off, _mm512_setzero_si512());
    const __mmask16 m01 = _mm512_cmpeq_epi32_mask(off, one), m10 = _mm512_cmpeq_epi32_mask(off, wv);
    const __mmask16 m11 = _mm512_cmpeq_epi32_mask(off, w1);
    if (static_cast<__mmask16>((m00 | m01 | m10 | m11) & lanes) != lanes) return false;
    const __m512 a = _mm512_maskz_mov_ps(m00, g), b = _mm512_maskz_mov_ps(m01, g);
    const __m512 c = _mm512_maskz_mov_ps(m10, g), d = _mm512_maskz_mov_ps(m11, g);
    // 2 * left floats per row: the first 16 from windows 0-7, the next from 8-15.
    const int64_t floats = 2 * std::min<int64_t>(left, 16);
    const __mmask16 lo = floats >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << floats) - 1);
    const __mmask16 hi = floats >= 32 ? static_cast<__mmask16>(0xFFFF)
                         : floats > 16 ? static_cast<__mmask16>((1u << (floats - 16)) - 1)
                                       : static_cast<__mmask16>(0);
    _mm512_mask_storeu_ps(r0 + 2 * ox, lo, _mm512_permutex2var_ps(a, mix_lo, b));
    _mm512_mask_storeu_ps(r0 + 2 * ox + 16, hi, _mm512_permutex2var_ps(a, mix_hi, b));
    _mm512_mask_storeu_ps(r1 + 2 * ox, lo, _mm512_permutex2var_ps(c, mix_lo, d));
    _mm512_mask_storeu_ps(r1 + 2 * ox + 16, hi, _mm512_permutex2var_ps(c, mix_hi, d));
  }
  return true;
}
#endif

bool max_pool_2x2_backward_plane(float* dxp, const float* dyp, const int32_t* ap, const float* yp,
                                 const PoolShape& s) {
  const int64_t w = s.w, out_w = s.out_w;
#ifdef VGG_X86
  const bool avx2 = isa_at_least(Isa::Avx2Fma) && w + 1 <= INT32_MAX / 2;
  const bool avx512 = avx2 && isa_at_least(Isa::Avx512);
#endif
  for (int64_t oy = 0; oy < s.out_h; oy++) {
#ifdef VGG_X86
    if (avx512) {
      if (!max_pool_2x2_backward_row_avx512(dxp, dyp, ap, yp, w, out_w, oy)) return false;
    } else if (avx2) {
      if (!max_pool_2x2_backward_row_avx2(dxp, dyp, ap, yp, w, out_w, oy)) return false;
    } else
#endif
        if (!max_pool_2x2_backward_row(dxp, dyp, ap, yp, w, out_w, oy, 0)) {
      return false;
    }
    // Columns in no window (an odd width's last).
    float* r0 = dxp + 2 * oy * w;
    for (int64_t c = 2 * out_w; c < w; c++) r0[c] = r0[w + c] = 0.0f;
  }
  // Rows below the last window (an odd height).
  std::memset(dxp + 2 * s.out_h * w, 0, (s.h - 2 * s.out_h) * w * sizeof(float));
  return true;
}

}  // namespace

void max_pool2d_backward(float* dx, const float* dy, const int32_t* argmax, const float* relu_y, const PoolShape& s) {
  const int64_t planes = s.n * s.c, in_plane = s.h * s.w, out_plane = s.out_h * s.out_w;
  const bool vgg_window = s.kh == 2 && s.kw == 2 && s.stride_h == 2 && s.stride_w == 2 && s.pad_h == 0 &&
                          s.pad_w == 0 && 2 * s.out_h <= s.h && 2 * s.out_w <= s.w;
  parallel_run(
      [&](int ith, int nth) {
        int64_t p0, p1;
        split_range(planes, ith, nth, 1, &p0, &p1);
        for (int64_t pl = p0; pl < p1; pl++) {
          float* dxp = dx + pl * in_plane;
          if (vgg_window && max_pool_2x2_backward_plane(dxp, dy + pl * out_plane, argmax + pl * out_plane,
                                                        relu_y ? relu_y + pl * out_plane : nullptr, s))
            continue;
          std::memset(dxp, 0, in_plane * sizeof(float));
          const float* dyp = dy + pl * out_plane;
          const float* yp = relu_y ? relu_y + pl * out_plane : nullptr;
          const int32_t* ap = argmax + pl * out_plane;
          for (int64_t p = 0; p < out_plane; p++) {
            const int64_t idx = ap[p];
            if (idx < 0 || idx >= in_plane) continue;
            if (yp && !(yp[p] > 0.0f)) continue;
            dxp[idx] += dyp[p];
          }
        }
      },
      planes);
}

const char* max_pool_kernel_name() {
  return isa_at_least(Isa::Avx512) ? "2x2 avx512" : isa_at_least(Isa::Avx2Fma) ? "2x2 avx2" : "portable C++";
}

}  // namespace vgg
