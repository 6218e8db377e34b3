// Softmax cross-entropy, mean over the batch.
#pragma once
#include <cstdint>

namespace vgg {

// dlogits (n, c) = (softmax(logits) - onehot(targets)) / n; logits is (n, c); targets (n) in [0, c)
// (checked by the caller). Returns the mean loss. Computed in double, like the reference.
double softmax_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int64_t n, int64_t c);

}  // namespace vgg
