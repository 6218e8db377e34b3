// Convolution kernels (NCHW, weight (cOut, cIn, kh, kw)): forward as im2col + GEMM with bias and ReLU fused
// into the GEMM's store, backward-input as GEMM + col2im, backward-weight as GEMM over im2col'd input.
#pragma once
#include <cstdint>

namespace vgg {

struct ConvShape {
  int64_t n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, pad_h, pad_w, out_h, out_w;
};

/** How 3x3 stride-1 convolutions are computed: measured per shape once per machine and recorded in the
 * kernel cache (Auto; see kernel_cache.h), or forced. */
// Winograd: F(2x2,3x3) wherever it applies; Winograd4: F(4x4,3x3) wherever it applies.
enum class ConvAlgorithm { Auto, Direct, Winograd, Winograd4 };
void set_conv_algorithm(ConvAlgorithm a);
/** The kernel used for this geometry's forward (backward = false) or input-gradient pass, as a name. */
const char* conv_kernel_name(const ConvShape& s, bool backward);
/** The kernel used for this geometry's weight gradient, as a name. */
const char* conv_weight_kernel_name(const ConvShape& s);

// y is (n, cOut, outH, outW); x is (n, cIn, h, w); w is (cOut, cIn*kh*kw); bias is (cOut) or null.
void conv2d_forward(float* y, const float* x, const float* w, const float* bias, const ConvShape& s, bool relu);
// y and argmax (n, cOut, outH / 2, outW / 2) = max_pool2d(relu(conv2d(x) + bias), kernel 2, stride 2) and
// its argmax (flat index into the outH x outW plane), without writing the convolution's output, when the
// convolution runs as Winograd (pooled in the output transform); returns false, writing nothing, otherwise
// (including before this shape's kernel choice is measured), and the caller pools separately.
bool conv2d_relu_pool_forward(float* y, int32_t* argmax, const float* x, const float* w, const float* bias,
                              const ConvShape& s);
// dx is (n, cIn, h, w), overwritten; dy is (n, cOut, outH, outW); w is (cOut, cIn*kh*kw).
// relu_x (n, cIn, h, w) or null: the input x when it is a ReLU output; dx is then zeroed where x is not
// > 0 (ReLU's backward fused, done per image while it is still in cache).
void conv2d_backward_input(float* dx, const float* dy, const float* w, const float* relu_x, const ConvShape& s);
// dw is (cOut, cIn*kh*kw) and db (cOut) or null, both overwritten; dy is (n, cOut, outH, outW); x is (n, cIn, h, w).
void conv2d_backward_weight(float* dw, float* db, const float* dy, const float* x, const ConvShape& s);
// conv2d_backward_weight's dw and db for conv + ReLU + 2x2 stride-2 max-pool, from the pooled gradient dy
// and the forward's argmax and output relu_y (n, cOut, outH / 2, outW / 2; relu_y may be null): the bits
// max_pool2d_backward then conv2d_backward_weight give, without writing the conv's gradient. Returns false,
// writing nothing, except for the few-taps kernel (at most 16 taps per filter: a grayscale first layer).
bool conv2d_pool_backward_weight(float* dw, float* db, const float* dy, const int32_t* argmax, const float* relu_y,
                                 const float* x, const ConvShape& s);

/** The direct (small-filter first layer) convolution in use, for `vgg info`. */
const char* direct_conv_kernel_name();

}  // namespace vgg
