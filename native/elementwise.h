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
// y += x; both (len).
void add_inplace(float* y, const float* x, int64_t len);
// y (rows, cols) += bias (cols) on every row.
void add_row_bias(float* y, const float* bias, int64_t rows, int64_t cols);

}  // namespace vgg
