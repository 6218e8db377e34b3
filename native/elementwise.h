// Element-wise kernels: ReLU and its mask, dropout's masked multiply, adds, and the row-broadcast bias.
#pragma once
#include <cstdint>

namespace vgg {

// y = max(x, 0) with NaN kept; y and x are (len) and may alias.
void relu_forward(float* y, const float* x, int64_t len);
// dx = y > 0 ? dy : 0; dx, dy, y are (len); dx may alias dy.
void relu_backward(float* dx, const float* dy, const float* y, int64_t len);
// y = x * mask; all (len).
void mul(float* y, const float* x, const float* mask, int64_t len);
// Dropout's mask from a xoshiro128** stream (state: its 4 words, advanced): mask[i] = u_i >= p ? keep : 0
// with u_i = (next 32 bits) / 2^32, the same draws in the same order as rng.ts's Generator.random().
void dropout_mask(float* mask, int64_t len, double p, float keep, uint32_t* state);
// y += x; both (len).
void add_inplace(float* y, const float* x, int64_t len);
// y (rows, cols) += bias (cols) on every row.
void add_row_bias(float* y, const float* bias, int64_t rows, int64_t cols);

/** The element-wise loops (ReLU, dropout, add), for `vgg info`. */
const char* elementwise_kernel_name();

}  // namespace vgg
