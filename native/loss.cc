#include "loss.h"

#include <cmath>
#include <limits>

namespace vgg {

double softmax_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int64_t n, int64_t c) {
  double loss = 0.0;
  for (int64_t i = 0; i < n; i++) {
    const float* row = logits + i * c;
    float* drow = dlogits + i * c;
    const int64_t t = targets[i];
    double max = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < c; j++)
      if (row[j] > max) max = row[j];
    double sum = 0.0;
    for (int64_t j = 0; j < c; j++) sum += std::exp(row[j] - max);
    const double log_sum = std::log(sum) + max;
    loss += log_sum - row[t];
    for (int64_t j = 0; j < c; j++)
      drow[j] = static_cast<float>((std::exp(row[j] - log_sum) - (j == t ? 1.0 : 0.0)) / static_cast<double>(n));
  }
  return n > 0 ? loss / static_cast<double>(n) : std::nan("");
}

}  // namespace vgg
