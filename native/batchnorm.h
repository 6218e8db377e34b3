// Batch normalisation over (n, c, hw) in training mode, with per-channel statistics.
#pragma once
#include <cstdint>

namespace vgg {

// y (n, c, hw) = gamma * (x - mean) * invStd + beta; save_mean and save_inv_std (c) receive the batch
// mean and 1 / sqrt(var + eps) (biased variance); gamma, beta are (c); x is (n, c, hw). With relu, y is
// max(0, y) (a following ReLU, fused).
void batch_norm_forward_train(float* y, float* save_mean, float* save_inv_std, const float* x, const float* gamma,
                              const float* beta, int64_t n, int64_t c, int64_t hw, double eps, bool relu);
// y (n, c, hw) = x * scale[ch] + shift[ch] per channel (batch norm with fixed statistics), then max(0, y)
// with relu; y may be x.
void channel_affine(float* y, const float* x, const float* scale, const float* shift, int64_t n, int64_t c,
                    int64_t hw, bool relu);
// With xhat = (x - mean) * invStd and m = n*hw: dgamma = sum(dy * xhat), dbeta = sum(dy),
// dx = gamma * invStd / m * (m * dy - dbeta - xhat * dgamma). dx, dy, x are (n, c, hw); the rest (c).
void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* gamma,
                         const float* save_mean, const float* save_inv_std, int64_t n, int64_t c, int64_t hw);

/** The batch-norm statistics and output kernels in use, for `vgg info`. */
const char* batch_norm_kernel_name();

}  // namespace vgg
