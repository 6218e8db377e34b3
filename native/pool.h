// Max pooling over NCHW planes; argmax records the flat (h, w) index of each window's maximum.
#pragma once
#include <cstdint>

namespace vgg {

struct PoolShape {
  int64_t n, c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w, out_h, out_w;
};

// y and argmax are (n, c, outH, outW); x is (n, c, h, w). Padding acts as -inf; NaN propagates.
void max_pool2d_forward(float* y, int32_t* argmax, const float* x, const PoolShape& s);
// dx is (n, c, h, w), overwritten; dy and argmax are (n, c, outH, outW). Out-of-range indices are ignored.
// relu_y (n, c, outH, outW) or null: the pooled output when x is a ReLU output; a window whose max is not
// > 0 then passes no gradient, so dx equals ReLU's backward applied to the plain result (fused).
void max_pool2d_backward(float* dx, const float* dy, const int32_t* argmax, const float* relu_y, const PoolShape& s);

}  // namespace vgg
