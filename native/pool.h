// Max pooling over NCHW planes; argmax records the flat (h, w) index of each window's maximum.
#pragma once
#include <cstdint>

namespace vgg {

struct PoolShape {
  int64_t n, c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w, out_h, out_w;
};

// One 2x2 window (a b / c d) by the rule of max_pool2d_forward (row by row, a NaN ends its row and
// replaces any earlier choice): its value, and which of a, b, c, d it is (0-3). Shared with the kernels
// that pool in their epilogue (Winograd's output transforms).
inline float max_of_window(float a, float b, float c, float d, int* which) {
  const bool take_b = a == a && (b > a || b != b);
  float best = take_b ? b : a;
  int idx = take_b ? 1 : 0;
  const bool take_c = c > best || c != c;
  best = take_c ? c : best;
  idx = take_c ? 2 : idx;
  const bool take_d = c == c && (d > best || d != d);
  best = take_d ? d : best;
  *which = take_d ? 3 : idx;
  return best;
}

// One pooled row of a convolution's epilogue: the 2x2 stride-2 windows over the row pair (from, from + ld)
// of a conv plane out_w wide, each value + add and ReLU'd (a NaN stays NaN), into y[0, out_w / 2) with
// argmax indices into the conv plane (row 2 * oy2 on), by max_of_window's rule: what max_pool2d_forward
// writes for the ReLU'd plane. Shared by the fused conv + ReLU + pool kernels (bf16, few-taps float32).
void relu_pool_row_pair(float* y, int32_t* argmax, const float* from, int64_t ld, float add, int64_t oy2,
                        int64_t out_w);

// y and argmax are (n, c, outH, outW); x is (n, c, h, w). Padding acts as -inf; NaN propagates.
void max_pool2d_forward(float* y, int32_t* argmax, const float* x, const PoolShape& s);
// dx is (n, c, h, w), overwritten; dy and argmax are (n, c, outH, outW). Out-of-range indices are ignored.
// relu_y (n, c, outH, outW) or null: the pooled output when x is a ReLU output; a window whose max is not
// > 0 then passes no gradient, so dx equals ReLU's backward applied to the plain result (fused).
void max_pool2d_backward(float* dx, const float* dy, const int32_t* argmax, const float* relu_y, const PoolShape& s);

/** The 2x2 max-pool kernels in use, for `vgg info`. */
const char* max_pool_kernel_name();

}  // namespace vgg
