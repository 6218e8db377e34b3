// The Winograd transforms at the avx512 level (winograd_avx512.cc): 16 tiles per zmm vector, one lane per
// tile, with the same arithmetic per lane as the 8-tile kernels (the same bits). A group of cnt < 16
// tiles is read and written through opmasks instead of a buffer. Callers run them only where
// isa_at_least(Isa::Avx512); the file is compiled with that level's target attribute.
#pragma once
#include <cstdint>

#include "conv2d.h"
#include "winograd.h"

#if defined(__x86_64__) || defined(__i386__)
namespace vgg {

// F(4x4,3x3), cnt <= 16 adjacent tiles of one tile row. Input: v[e * e_stride + l] for the 36 points of
// the tiles whose 6x6 patches start at row iy0, column ix0 + 4 l of the plane xc (h, w), read straight from
// it (no zero-padded strip): what lies outside the plane counts as 0.
void winograd4_input16_image_avx512(float* v, int64_t e_stride, const float* xc, int64_t h, int64_t w, int64_t iy0,
                                    int64_t ix0, int64_t cnt);
// Output: y (row stride `row`) rows [0, rows) and columns [0, cols) of A^T M A + bias (ReLU), from M's 36
// points at mt[e * e_stride] (16 lanes readable).
void winograd4_output16_avx512(float* y, int64_t row, const float* mt, int64_t e_stride, float bv, bool relu,
                               int64_t rows, int64_t cols);
// Pooled output of tiles (ty, tx .. tx + cnt): max-pool 2x2 values and flat argmax, as pool_math.
void winograd4_pool16_avx512(float* yp, int32_t* ap, const ConvShape& s, int64_t ty, int64_t tx, int64_t cnt,
                             const float* mt, int64_t e_stride, float bv, bool relu);
// Weight gradient: w[e * e_stride + l] for the 36 points of A dY A^T of the 4x4 dY tiles at p + 4 l (row
// stride out_w), of which rows [0, rows) and columns [0, cols) lie inside (the rest read as 0).
void winograd4_grad16_avx512(float* w, int64_t e_stride, const float* p, int64_t out_w, int64_t rows, int64_t cols,
                             int64_t cnt);
// The same for maps of 1-2 tiles across, the lanes taking any 16 consecutive tiles (winograd4_math.h).
void winograd4_input_gathered16_avx512(float* dst, int64_t e_stride, const float* x, const ConvShape& s, int64_t ci,
                                       int64_t t, int64_t cnt);
void winograd4_output_gathered16_avx512(float* y, const ConvShape& s, int64_t co, int64_t t, int64_t cnt,
                                        const float* mt, int64_t e_stride, float bv, bool relu);
void winograd4_pool_gathered16_avx512(const PoolTarget& pool, const ConvShape& s, int64_t co, int64_t t, int64_t cnt,
                                      const float* mt, int64_t e_stride, float bv, bool relu);
void winograd4_grad_gathered16_avx512(float* dst, int64_t e_stride, const float* dy, const ConvShape& s, int64_t co,
                                      int64_t t, int64_t cnt);

// F(2x2,3x3), cnt <= 16 adjacent tiles. Input: the 16 points of the 4x4 patches at p + 2 l (row stride
// `row`, 2 * 16 + 2 floats readable per row).
void winograd2_input16_avx512(float* v, int64_t e_stride, const float* p, int64_t row, int64_t cnt);
// Output: rows [0, rows) and columns [0, cols) of the tiles' 2x2 outputs at y (row stride out_w).
void winograd2_output16_avx512(float* y, int64_t out_w, const float* mt, int64_t e_stride, float bv, bool relu,
                               int64_t rows, int64_t cols);
// Weight gradient: the 16 points of A dY A^T of the 2x2 dY tiles at p + 2 l (row stride `row`, 32 floats
// readable per row, zeros past the map).
void winograd2_grad16_avx512(float* w, int64_t e_stride, const float* p, int64_t row, int64_t cnt);

}  // namespace vgg
#endif
