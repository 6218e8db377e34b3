// Parallel over channels. Each channel's rows are streamed a few times (statistics, then the output):
// sums run in 8 float lanes over blocks of 256 values, and the blocks are added in double, so the loops
// vectorise and the error does not grow with the 6.4M values a channel has at 224x224, batch 128.
#include "batchnorm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "threadpool.h"

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

// Adds sum(x[p] - shift) to *s1 and sum((x[p] - shift)^2) to *s2, over one row.
void row_sums(const float* x, int64_t len, float shift, double* s1, double* s2) {
  block_sums(
      len,
      [=](int64_t p, auto& u, auto& v) {
        using T = std::remove_reference_t<decltype(u)>;
        const T d = static_cast<T>(x[p]) - shift;
        u = d, v = d * d;
      },
      s1, s2);
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

}  // namespace

void batch_norm_forward_train(float* y, float* save_mean, float* save_inv_std, const float* x, const float* gamma,
                              const float* beta, int64_t n, int64_t c, int64_t hw, double eps) {
  const double count = static_cast<double>(n * hw);
  parallel_run(
      [&](int ith, int nth) {
        int64_t c0, c1;
        split_range(c, ith, nth, 1, &c0, &c1);
        for (int64_t ch = c0; ch < c1; ch++) {
          // Two passes: the mean, then the squared deviations from it (no cancellation when |mean| >> std).
          double sum = 0.0, unused = 0.0;
          for (int64_t b = 0; b < n; b++) row_sums(x + (b * c + ch) * hw, hw, 0.0f, &sum, &unused);
          const double mean = sum / count;
          const float mean_f = static_cast<float>(mean);
          double dev = 0.0, sq = 0.0;
          for (int64_t b = 0; b < n; b++) row_sums(x + (b * c + ch) * hw, hw, mean_f, &dev, &sq);
          // The deviations were taken from mean rounded to float: remove that offset's share exactly.
          const double var = std::max(0.0, sq / count - (dev / count) * (dev / count));
          const double inv_std = 1.0 / std::sqrt(var + eps);
          save_mean[ch] = mean_f;
          save_inv_std[ch] = static_cast<float>(inv_std);
          // (x - mean) * scale + beta: x * scale + shift would cancel badly when the variance is small.
          const float scale = static_cast<float>(gamma[ch] * inv_std), shift = beta[ch];
          for (int64_t b = 0; b < n; b++) {
            const float* row = x + (b * c + ch) * hw;
            float* out = y + (b * c + ch) * hw;
#pragma GCC ivdep
            for (int64_t p = 0; p < hw; p++) out[p] = (row[p] - mean_f) * scale + shift;
          }
        }
      },
      c);
}

void channel_affine(float* y, const float* x, const float* scale, const float* shift, int64_t n, int64_t c,
                    int64_t hw) {
  // Rows of hw values, one per (image, channel), split over the threads (in place is fine: each value is
  // read once, then written at the same index).
  const int64_t rows = n * c;
  parallel_run(
      [&](int ith, int nth) {
        int64_t r0, r1;
        split_range(rows, ith, nth, 1, &r0, &r1);
        for (int64_t r = r0; r < r1; r++) {
          const float a = scale[r % c], b = shift[r % c];
          const float* in = x + r * hw;
          float* out = y + r * hw;
#pragma GCC ivdep
          for (int64_t p = 0; p < hw; p++) out[p] = in[p] * a + b;
        }
      },
      static_cast<double>(rows) * static_cast<double>(hw) < 32768 ? 1 : rows);
}

void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* gamma,
                         const float* save_mean, const float* save_inv_std, int64_t n, int64_t c, int64_t hw) {
  const double m = static_cast<double>(n * hw);
  parallel_run(
      [&](int ith, int nth) {
        int64_t c0, c1;
        split_range(c, ith, nth, 1, &c0, &c1);
        for (int64_t ch = c0; ch < c1; ch++) {
          const float mean = save_mean[ch];
          const double inv_std = save_inv_std[ch];
          double sum_dy = 0.0, sum_dy_xm = 0.0;  // sum(dy), sum(dy * (x - mean))
          for (int64_t b = 0; b < n; b++)
            grad_sums(dy + (b * c + ch) * hw, x + (b * c + ch) * hw, hw, mean, &sum_dy, &sum_dy_xm);
          dgamma[ch] = static_cast<float>(sum_dy_xm * inv_std);
          dbeta[ch] = static_cast<float>(sum_dy);
          // dx = gamma invStd (dy - sum(dy) / m - xhat sum(dy xhat) / m) = ka dy + kb (x - mean) + kc.
          const double ka = gamma[ch] * inv_std;
          const float a = static_cast<float>(ka), bx = static_cast<float>(-ka * inv_std * inv_std * sum_dy_xm / m),
                      k0 = static_cast<float>(-ka * sum_dy / m);
          for (int64_t b = 0; b < n; b++) {
            const float* g = dy + (b * c + ch) * hw;
            const float* row = x + (b * c + ch) * hw;
            float* out = dx + (b * c + ch) * hw;
#pragma GCC ivdep
            for (int64_t p = 0; p < hw; p++) out[p] = a * g[p] + bx * (row[p] - mean) + k0;
          }
        }
      },
      c);
}

}  // namespace vgg
