// Parallel over channels; sums accumulate in double (per row in float, then added in double).
#include "batchnorm.h"

#include <cmath>

#include "threadpool.h"

namespace vgg {

void batch_norm_forward_train(float* y, float* save_mean, float* save_inv_std, const float* x, const float* gamma,
                              const float* beta, int64_t n, int64_t c, int64_t hw, double eps) {
  const double count = static_cast<double>(n * hw);
  parallel_run(
      [&](int ith, int nth) {
        int64_t c0, c1;
        split_range(c, ith, nth, 1, &c0, &c1);
        for (int64_t ch = c0; ch < c1; ch++) {
          double sum = 0.0;
          for (int64_t b = 0; b < n; b++) {
            const float* row = x + (b * c + ch) * hw;
            for (int64_t p = 0; p < hw; p++) sum += row[p];
          }
          const double mean = sum / count;
          double sq = 0.0;
          for (int64_t b = 0; b < n; b++) {
            const float* row = x + (b * c + ch) * hw;
            for (int64_t p = 0; p < hw; p++) {
              const double d = row[p] - mean;
              sq += d * d;
            }
          }
          const double inv_std = 1.0 / std::sqrt(sq / count + eps);
          save_mean[ch] = static_cast<float>(mean);
          save_inv_std[ch] = static_cast<float>(inv_std);
          // (x - mean) * scale + beta in double: x * scale + shift would cancel badly when the variance is small.
          const double scale = gamma[ch] * inv_std, shift = beta[ch];
          for (int64_t b = 0; b < n; b++) {
            const float* row = x + (b * c + ch) * hw;
            float* out = y + (b * c + ch) * hw;
            for (int64_t p = 0; p < hw; p++) out[p] = static_cast<float>((row[p] - mean) * scale + shift);
          }
        }
      },
      c);
}

void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* gamma,
                         const float* save_mean, const float* save_inv_std, int64_t n, int64_t c, int64_t hw) {
  const double m = static_cast<double>(n * hw);
  parallel_run(
      [&](int ith, int nth) {
        int64_t c0, c1;
        split_range(c, ith, nth, 1, &c0, &c1);
        for (int64_t ch = c0; ch < c1; ch++) {
          const float mean = save_mean[ch], inv_std = save_inv_std[ch];
          double sum_dy = 0.0, sum_dy_xhat = 0.0;
          for (int64_t b = 0; b < n; b++) {
            const float* g = dy + (b * c + ch) * hw;
            const float* row = x + (b * c + ch) * hw;
            for (int64_t p = 0; p < hw; p++) {
              sum_dy += g[p];
              sum_dy_xhat += static_cast<double>(g[p]) * (static_cast<double>(row[p]) - mean) * inv_std;
            }
          }
          dgamma[ch] = static_cast<float>(sum_dy_xhat);
          dbeta[ch] = static_cast<float>(sum_dy);
          const double k = static_cast<double>(gamma[ch]) * inv_std / m;
          for (int64_t b = 0; b < n; b++) {
            const float* g = dy + (b * c + ch) * hw;
            const float* row = x + (b * c + ch) * hw;
            float* out = dx + (b * c + ch) * hw;
            for (int64_t p = 0; p < hw; p++) {
              const double xhat = (static_cast<double>(row[p]) - mean) * inv_std;
              out[p] = static_cast<float>(k * (m * g[p] - sum_dy - xhat * sum_dy_xhat));
            }
          }
        }
      },
      c);
}

}  // namespace vgg
