// Parallel over channels. Each channel's rows are streamed a few times (statistics, then the output):
// sums run in 8 float lanes over blocks of 256 values, and the blocks are added in double, so the loops
// vectorise and the error does not grow with the 6.4M values a channel has at 224x224, batch 128.
#include "batchnorm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "isa.h"
#include "threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VGG_X86 1
#endif

namespace vgg {
namespace {

constexpr int64_t kBlock = 256;
constexpr int kLanes = 8;

// Adds sum(u) to *s1 and sum(v) to *s2 over p in [0, len), where terms(p, u, v) sets the two terms of p: in
// 8 float lanes per block of kBlock values (u, v float), the block's tail and the blocks' sums in double.
template <typename Terms>
void block_sums(int64_t len, Terms&& terms, double* s1, double* s2) {
  for (int64_t p0 = 0; p0 < len; p0 += kBlock) {
    const int64_t p1 = std::min(len, p0 + kBlock);
    float a[kLanes] = {}, b[kLanes] = {};
    int64_t p = p0;
    for (; p + kLanes <= p1; p += kLanes)
      for (int l = 0; l < kLanes; l++) {
        float u, v;
        terms(p + l, u, v);
        a[l] += u;
        b[l] += v;
      }
    double t1 = 0.0, t2 = 0.0;
    for (int l = 0; l < kLanes; l++) t1 += a[l], t2 += b[l];
    for (; p < p1; p++) {
      double u, v;
      terms(p, u, v);
      t1 += u;
      t2 += v;
    }
    *s1 += t1;
    *s2 += t2;
  }
}

// A channel's moments, merged block by block (Chan, Golub and LeVeque): count, mean, and the sum of
// squared deviations from the mean. Merging keeps the variance exact-ish whatever the mean's size.
struct Moments {
  double n = 0.0, mean = 0.0, m2 = 0.0;
  void merge(double nb, double mean_b, double m2_b) {
    const double total = n + nb, delta = mean_b - mean;
    mean += delta * nb / total;
    m2 += m2_b + delta * delta * (n * nb / total);
    n = total;
  }
};

// Adds x[0:len) to m one block of kBlock values at a time: the block's sum, then its deviations from that
// block mean (both in float lanes while the block sits in L1), so x is read from memory once.
void row_moments(const float* x, int64_t len, Moments* m) {
  for (int64_t p0 = 0; p0 < len; p0 += kBlock) {
    const int64_t nb = std::min(kBlock, len - p0);
    const float* xb = x + p0;
    double sum = 0.0, unused = 0.0;
    block_sums(
        nb,
        [=](int64_t p, auto& u, auto& v) {
          u = xb[p];
          v = 0;
        },
        &sum, &unused);
    const float shift = static_cast<float>(sum / static_cast<double>(nb));
    double dev = 0.0, sq = 0.0;
    block_sums(
        nb,
        [=](int64_t p, auto& u, auto& v) {
          using T = std::remove_reference_t<decltype(u)>;
          const T d = static_cast<T>(xb[p]) - shift;
          u = d, v = d * d;
        },
        &dev, &sq);
    // shift is the block mean rounded to float: correct for the rest.
    m->merge(static_cast<double>(nb), shift + dev / static_cast<double>(nb),
             std::max(0.0, sq - dev * dev / static_cast<double>(nb)));
  }
}

#ifdef VGG_X86
// Sum of the 8 lanes, in double.
__attribute__((target("avx2,fma"))) inline double lanes_sum(__m256 v) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  double s = 0.0;
  for (float f : t) s += f;
  return s;
}

// row_moments with AVX2: the same per-block scheme (a float sum, then deviations from the block mean),
// in two vector accumulators per sum; the block's tail past a multiple of 8 is added in double.
__attribute__((target("avx2,fma"))) void row_moments_avx2(const float* x, int64_t len, Moments* m) {
  for (int64_t p0 = 0; p0 < len; p0 += kBlock) {
    const int64_t nb = std::min(kBlock, len - p0), vec = nb / 16 * 16;
    const float* xb = x + p0;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (int64_t p = 0; p < vec; p += 16) {
      s0 = _mm256_add_ps(s0, _mm256_loadu_ps(xb + p));
      s1 = _mm256_add_ps(s1, _mm256_loadu_ps(xb + p + 8));
    }
    double sum = lanes_sum(_mm256_add_ps(s0, s1));
    for (int64_t p = vec; p < nb; p++) sum += xb[p];
    const float shift = static_cast<float>(sum / static_cast<double>(nb));
    const __m256 vs = _mm256_set1_ps(shift);
    __m256 d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps(), q0 = _mm256_setzero_ps(), q1 = _mm256_setzero_ps();
    for (int64_t p = 0; p < vec; p += 16) {
      const __m256 a = _mm256_sub_ps(_mm256_loadu_ps(xb + p), vs), b = _mm256_sub_ps(_mm256_loadu_ps(xb + p + 8), vs);
      d0 = _mm256_add_ps(d0, a);
      d1 = _mm256_add_ps(d1, b);
      q0 = _mm256_fmadd_ps(a, a, q0);
      q1 = _mm256_fmadd_ps(b, b, q1);
    }
    double dev = lanes_sum(_mm256_add_ps(d0, d1)), sq = lanes_sum(_mm256_add_ps(q0, q1));
    for (int64_t p = vec; p < nb; p++) {
      const double d = static_cast<double>(xb[p]) - shift;
      dev += d;
      sq += d * d;
    }
    m->merge(static_cast<double>(nb), shift + dev / static_cast<double>(nb),
             std::max(0.0, sq - dev * dev / static_cast<double>(nb)));
  }
}

// grad_sums with AVX2: sum(g) and sum(g * (x - mean)) over x[0:len), in float lanes per block, then double.
__attribute__((target("avx2,fma"))) void grad_sums_avx2(const float* g, const float* x, int64_t len, float mean,
                                                        double* s1, double* s2) {
  const __m256 vm = _mm256_set1_ps(mean);
  for (int64_t p0 = 0; p0 < len; p0 += kBlock) {
    const int64_t nb = std::min(kBlock, len - p0), vec = nb / 16 * 16;
    const float *gb = g + p0, *xb = x + p0;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
    for (int64_t p = 0; p < vec; p += 16) {
      const __m256 g0 = _mm256_loadu_ps(gb + p), g1 = _mm256_loadu_ps(gb + p + 8);
      a0 = _mm256_add_ps(a0, g0);
      a1 = _mm256_add_ps(a1, g1);
      b0 = _mm256_fmadd_ps(g0, _mm256_sub_ps(_mm256_loadu_ps(xb + p), vm), b0);
      b1 = _mm256_fmadd_ps(g1, _mm256_sub_ps(_mm256_loadu_ps(xb + p + 8), vm), b1);
    }
    double t1 = lanes_sum(_mm256_add_ps(a0, a1)), t2 = lanes_sum(_mm256_add_ps(b0, b1));
    for (int64_t p = vec; p < nb; p++) {
      t1 += gb[p];
      t2 += static_cast<double>(gb[p]) * (static_cast<double>(xb[p]) - mean);
    }
    *s1 += t1;
    *s2 += t2;
  }
}
#endif

// The per-row statistics on the instruction set the kernels use.
void moments_of_row(const float* x, int64_t len, Moments* m, bool avx2) {
#ifdef VGG_X86
  if (avx2) return row_moments_avx2(x, len, m);
#endif
  (void)avx2;
  row_moments(x, len, m);
}

// Outputs of at least this many bytes are written with streaming stores: they cannot stay in the caches
// (32 MB of L3 here) for the next op anyway, and the stores then skip reading each line first.
constexpr double kStreamBytes = 16.0 * 1024 * 1024;

// The output passes, one row of len values at a time. The forward: out = (x - mean) * scale + shift, then
// ReLU's !(v <= 0) ? v : 0 (NaN kept, as relu) when `relu`. The backward: out = a * g + b * (x - mean) + k.
// With `stream`, 32-byte aligned vector stores bypass the caches; the results are the same either way.
void normalize_row_portable(float* out, const float* x, int64_t len, float mean, float scale, float shift,
                            bool relu) {
#pragma GCC ivdep
  for (int64_t p = 0; p < len; p++) out[p] = (x[p] - mean) * scale + shift;
  if (relu) {
#pragma GCC ivdep
    for (int64_t p = 0; p < len; p++) out[p] = !(out[p] <= 0.0f) ? out[p] : 0.0f;
  }
}

void grad_row_portable(float* out, const float* g, const float* x, int64_t len, float mean, float a, float b,
                       float k) {
#pragma GCC ivdep
  for (int64_t p = 0; p < len; p++) out[p] = a * g[p] + b * (x[p] - mean) + k;
}

#ifdef VGG_X86
// Values before `out` reaches a 32-byte boundary (len at most).
inline int64_t lead_of(const float* out, int64_t len) {
  return std::min(len, static_cast<int64_t>(((32 - (reinterpret_cast<uintptr_t>(out) & 31)) & 31) / 4));
}

__attribute__((target("avx2,fma"))) void normalize_row_stream_avx2(float* out, const float* x, int64_t len,
                                                                    float mean, float scale, float shift, bool relu) {
  int64_t p = lead_of(out, len);
  normalize_row_portable(out, x, p, mean, scale, shift, relu);
  const __m256 vs = _mm256_set1_ps(scale), vt = _mm256_set1_ps(shift), vm = _mm256_set1_ps(mean);
  const __m256 zero = _mm256_setzero_ps();
  for (; p + 8 <= len; p += 8) {
    // Same operation order as the portable loop (no FMA contraction there either).
    __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + p), vm), vs), vt);
    if (relu) v = _mm256_andnot_ps(_mm256_cmp_ps(v, zero, _CMP_LE_OQ), v);
    _mm256_stream_ps(out + p, v);
  }
  normalize_row_portable(out + p, x + p, len - p, mean, scale, shift, relu);
}

__attribute__((target("avx2,fma"))) void grad_row_stream_avx2(float* out, const float* g, const float* x,
                                                               int64_t len, float mean, float a, float b, float k) {
  int64_t p = lead_of(out, len);
  grad_row_portable(out, g, x, p, mean, a, b, k);
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vk = _mm256_set1_ps(k), vm = _mm256_set1_ps(mean);
  for (; p + 8 <= len; p += 8) {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + p), vm);
    const __m256 t = _mm256_add_ps(_mm256_mul_ps(va, _mm256_loadu_ps(g + p)), _mm256_mul_ps(vb, d));
    _mm256_stream_ps(out + p, _mm256_add_ps(t, vk));
  }
  grad_row_portable(out + p, g + p, x + p, len - p, mean, a, b, k);
}
#endif

void normalize_row(float* out, const float* x, int64_t len, float mean, float scale, float shift, bool relu,
                   bool stream) {
#ifdef VGG_X86
  if (stream && isa_at_least(Isa::Avx2Fma)) return normalize_row_stream_avx2(out, x, len, mean, scale, shift, relu);
#endif
  (void)stream;
  normalize_row_portable(out, x, len, mean, scale, shift, relu);
}

void grad_row(float* out, const float* g, const float* x, int64_t len, float mean, float a, float b, float k,
              bool stream) {
#ifdef VGG_X86
  if (stream && isa_at_least(Isa::Avx2Fma)) return grad_row_stream_avx2(out, g, x, len, mean, a, b, k);
#endif
  (void)stream;
  grad_row_portable(out, g, x, len, mean, a, b, k);
}

// Orders the streaming stores before whatever reads the output next (end of a thread's share).
void stream_fence(bool stream) {
#ifdef VGG_X86
  if (stream) _mm_sfence();
#endif
  (void)stream;
}

// Adds sum(g[p]) to *s1 and sum(g[p] * (x[p] - mean)) to *s2, over one row.
void grad_sums(const float* g, const float* x, int64_t len, float mean, double* s1, double* s2) {
  block_sums(
      len,
      [=](int64_t p, auto& u, auto& v) {
        using T = std::remove_reference_t<decltype(u)>;
        u = g[p], v = static_cast<T>(g[p]) * (static_cast<T>(x[p]) - mean);
      },
      s1, s2);
}

void grad_sums_of_row(const float* g, const float* x, int64_t len, float mean, double* s1, double* s2, bool avx2) {
#ifdef VGG_X86
  if (avx2) return grad_sums_avx2(g, x, len, mean, s1, s2);
#endif
  (void)avx2;
  grad_sums(g, x, len, mean, s1, s2);
}

}  // namespace

void batch_norm_forward_train(float* y, float* save_mean, float* save_inv_std, const float* x, const float* gamma,
                              const float* beta, int64_t n, int64_t c, int64_t hw, double eps, bool relu) {
  const double count = static_cast<double>(n * hw);
  const bool stream = static_cast<double>(n * c * hw) * sizeof(float) >= kStreamBytes;
  const bool avx2 = isa_at_least(Isa::Avx2Fma);
  parallel_run(
      [&](int ith, int nth) {
        int64_t c0, c1;
        split_range(c, ith, nth, 1, &c0, &c1);
        for (int64_t ch = c0; ch < c1; ch++) {
          // One pass over x for the statistics (merged per block, so no cancellation when |mean| >> std).
          Moments m;
          for (int64_t b = 0; b < n; b++) moments_of_row(x + (b * c + ch) * hw, hw, &m, avx2);
          const float mean_f = static_cast<float>(m.mean);
          const double var = std::max(0.0, m.m2 / count);
          const double inv_std = 1.0 / std::sqrt(var + eps);
          save_mean[ch] = mean_f;
          save_inv_std[ch] = static_cast<float>(inv_std);
          const float scale = static_cast<float>(gamma[ch] * inv_std), shift = beta[ch];
          for (int64_t b = 0; b < n; b++)
            normalize_row(y + (b * c + ch) * hw, x + (b * c + ch) * hw, hw, mean_f, scale, shift, relu, stream);
        }
        stream_fence(stream);
      },
      c);
}

void channel_affine(float* y, const float* x, const float* scale, const float* shift, int64_t n, int64_t c,
                    int64_t hw, bool relu) {
  // Rows of hw values, one per (image, channel), split over the threads (in place is fine: each value is
  // read once, then written at the same index).
  const int64_t rows = n * c;
  parallel_run(
      [&](int ith, int nth) {
        int64_t r0, r1;
        split_range(rows, ith, nth, 1, &r0, &r1);
        for (int64_t r = r0; r < r1; r++) normalize_row_portable(y + r * hw, x + r * hw, hw, 0.0f, scale[r % c], shift[r % c], relu);
      },
      static_cast<double>(rows) * static_cast<double>(hw) < 32768 ? 1 : rows);
}

void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* gamma,
                         const float* save_mean, const float* save_inv_std, int64_t n, int64_t c, int64_t hw) {
  const double m = static_cast<double>(n * hw);
  const bool stream = static_cast<double>(n * c * hw) * sizeof(float) >= kStreamBytes;
  const bool avx2 = isa_at_least(Isa::Avx2Fma);
  parallel_run(
      [&](int ith, int nth) {
        int64_t c0, c1;
        split_range(c, ith, nth, 1, &c0, &c1);
        for (int64_t ch = c0; ch < c1; ch++) {
          const float mean = save_mean[ch];
          const double inv_std = save_inv_std[ch];
          double sum_dy = 0.0, sum_dy_xm = 0.0;  // sum(dy), sum(dy * (x - mean))
          for (int64_t b = 0; b < n; b++)
            grad_sums_of_row(dy + (b * c + ch) * hw, x + (b * c + ch) * hw, hw, mean, &sum_dy, &sum_dy_xm, avx2);
          dgamma[ch] = static_cast<float>(sum_dy_xm * inv_std);
          dbeta[ch] = static_cast<float>(sum_dy);
          // dx = gamma invStd (dy - sum(dy) / m - xhat sum(dy xhat) / m) = ka dy + kb (x - mean) + kc.
          const double ka = gamma[ch] * inv_std;
          const float a = static_cast<float>(ka), bx = static_cast<float>(-ka * inv_std * inv_std * sum_dy_xm / m),
                      k0 = static_cast<float>(-ka * sum_dy / m);
          for (int64_t b = 0; b < n; b++)
            grad_row(dx + (b * c + ch) * hw, dy + (b * c + ch) * hw, x + (b * c + ch) * hw, hw, mean, a, bx, k0, stream);
        }
        stream_fence(stream);
      },
      c);
}

const char* batch_norm_kernel_name() { return isa_at_least(Isa::Avx2Fma) ? "avx2+fma" : "portable C++"; }

}  // namespace vgg
