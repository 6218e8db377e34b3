// Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions: 16 multiplies per 2x2 output tile and channel pair
// instead of 36, as 16 GEMMs between transformed weights and transformed input tiles.
#pragma once
#include <algorithm>
#include <cstdint>

#include "workspace.h"

#include "conv2d.h"

namespace vgg {

// A pooled epilogue's output: max_pool2d(kernel 2, stride 2) of the (bias-added, ReLU'd) convolution,
// y and argmax (cOut, outH / 2, outW / 2) per image, image after image, argmax the flat index into the
// outH x outW plane (as max_pool2d_forward writes it). The convolution's own output is then not written.
struct PoolTarget {
  float* y;
  int32_t* argmax;
};

// Shared by the transforms of both tile sizes: `rows` rows of one input plane xc, from row iy0 on, into a
// strip of rows strip_w wide whose column j holds x column j - padW, zeros outside the image.
void fill_strip(float* strip, int64_t strip_w, int rows, const float* xc, const ConvShape& s, int64_t iy0);
// packed = the `points` transformed matrices U_e (cOut, cIn) of the 3x3 filters w (cOut, cIn, 3, 3), each
// in the layout the GEMMs read (pack_a_all's): filters8(g, nb, out) writes the points of nb <= 8 filters
// (filter l at g + 9 l) at out[e * 8 + l], and each value goes straight to its packed place. Split over
// the threads by blocks of filters.
void transform_weights(float* packed, const float* w, int64_t c_out, int64_t c_in, int points,
                       void (*filters8)(const float* g, int64_t nb, float* out));

// The input transform's loop for output tiles kTile x kTile (F(kTile x kTile, 3x3)): for every input
// channel and every run of tiles along a tile row among tiles [t0, t0 + nt) (numbered image after image,
// each image `tiles` tiles, `tiles_w` to a row), the kTile + 2 input rows go into a zero-padded strip
// (thread scratch slot 4), then transform(dst, e_stride, p, strip_w, cnt) writes the points of cnt <=
// kLanes adjacent tiles whose patches start at p (the strip has kLanes kTile + 4 readable floats past p).
// V is (kPoints, cIn, chunk) with stride e_stride between points.
template <int kTile, int kLanes, typename Transform>
void transform_input_tiles(float* v, int64_t e_stride, const float* x, const ConvShape& s, int64_t t0, int64_t nt,
                           int64_t chunk, int64_t tiles_w, int64_t tiles, Transform&& transform) {
  const int64_t x_size = s.c_in * s.h * s.w;
  // kTile tiles_w + 2 columns are read; kLanes kTile + 4 more so the last group stays inside.
  const int64_t strip_w = kTile * tiles_w + 2 + kLanes * kTile + 4;
  float* strip = thread_scratch(4, (kTile + 2) * strip_w);
  for (int64_t ci = 0; ci < s.c_in; ci++) {
    for (int64_t t = 0; t < nt;) {
      // Tile t0 + t is tile tt of image b; a run stays inside one tile row of one image.
      const int64_t b = (t0 + t) / tiles, tt = (t0 + t) - b * tiles;
      const int64_t ty = tt / tiles_w, tx = tt - ty * tiles_w;
      const int64_t run = std::min(nt - t, tiles_w - tx);
      fill_strip(strip, strip_w, kTile + 2, x + b * x_size + ci * s.h * s.w, s, kTile * ty - s.pad_h);
      for (int64_t k = 0; k < run; k += kLanes)
        transform(v + ci * chunk + t + k, e_stride, strip + kTile * (tx + k), strip_w, std::min<int64_t>(kLanes, run - k));
      t += run;
    }
  }
}

// An 8-tile transform8(dst, e_stride, p, strip_w) run on cnt <= 8 tiles: a short group goes through a
// small buffer.
template <int kPoints, typename Transform8>
inline void transform8_some(Transform8&& transform8, float* dst, int64_t e_stride, const float* p, int64_t strip_w,
                            int64_t cnt) {
  if (cnt == 8) return transform8(dst, e_stride, p, strip_w);
  float tmp[kPoints * 8];
  transform8(tmp, 8, p, strip_w);
  for (int e = 0; e < kPoints; e++)
    for (int64_t j = 0; j < cnt; j++) dst[e * e_stride + j] = tmp[e * 8 + j];
}

/** Whether the Winograd path applies to this geometry (3x3 kernel, stride 1). */
bool winograd_applies(const ConvShape& s);

// `images` consecutive images (x and y advance by one image each): y (cOut, outH, outW) = conv(x (cIn, h,
// w), w) + bias, then ReLU when `relu`. u holds the weights from winograd_prepare_weights; runs on the
// calling thread. Tiles are numbered image after image, so the GEMMs of small images (14x14 and below) get
// full tile chunks; only the 2x2 output tiles [tile_begin, tile_end) (-1 = all) are written, so threads
// can share an image.
// With `pool`, the pooled output goes there and y is not used.
void winograd_forward_images(float* y, const float* x, int64_t images, const float* u, const float* bias,
                             const ConvShape& s, bool relu, int64_t tile_begin = 0, int64_t tile_end = -1,
                             const PoolTarget* pool = nullptr);
/** Number of 2x2 output tiles of one image. */
int64_t winograd_tiles(const ConvShape& s);
/** Floats needed by winograd_prepare_weights. */
int64_t winograd_weights_size(int64_t c_out, int64_t c_in);
// u = the 16 matrices U_e (cOut, cIn) of G g G^T over every 3x3 filter g of w (cOut, cIn, 3, 3), each
// packed once for the GEMM (they are reused by every tile chunk of every image).
void winograd_prepare_weights(float* u, const float* w, int64_t c_out, int64_t c_in);

// Weight gradient, by the same identity read backwards: for one 2x2 tile of dY and the 4x4 input patch d
// of the forward pass, dW (3x3) = G^T [ (A dY A^T) .* (B^T d B) ] G. Summed over tiles, that is 16 GEMMs
// M_e (cOut, cIn) += (A dY A^T)_e (cOut, tiles) x (B^T d B)_e (cIn, tiles)^T, then one G^T M G per filter.
/** Floats of the Winograd-domain accumulator M (16, cOut, cIn). */
int64_t winograd_weight_acc_size(int64_t c_out, int64_t c_in);
// m (16, cOut, cIn) = (accumulate ? m : 0) + the tiles' sum over `images` consecutive images of dy (cOut,
// outH, outW) and x (cIn, h, w), their tiles in one numbering. Runs on the calling thread.
void winograd_weight_grad_images(float* m, const float* dy, const float* x, int64_t images, const ConvShape& s,
                                 bool accumulate);
// dw filters [f0, f1) of (cOut * cIn), each (3, 3), = G^T M G, from m (16, cOut, cIn).
void winograd_weight_grad_finish(float* dw, const float* m, int64_t c_out, int64_t c_in, int64_t f0, int64_t f1);

// F(4x4,3x3) (winograd4.cc): the same interface with 4x4 output tiles (36 GEMMs per tile chunk).
int64_t winograd4_tiles(const ConvShape& s);
int64_t winograd4_weights_size(int64_t c_out, int64_t c_in);
void winograd4_prepare_weights(float* u, const float* w, int64_t c_out, int64_t c_in);
void winograd4_forward_images(float* y, const float* x, int64_t images, const float* u, const float* bias,
                              const ConvShape& s, bool relu, int64_t tile_begin = 0, int64_t tile_end = -1,
                              const PoolTarget* pool = nullptr);
// The weight gradient's accumulator M (36, cOut, cIn), its tile sums and G^T M G, as the F(2x2) functions.
int64_t winograd4_weight_acc_size(int64_t c_out, int64_t c_in);
void winograd4_weight_grad_images(float* m, const float* dy, const float* x, int64_t images, const ConvShape& s,
                                  bool accumulate);
void winograd4_weight_grad_finish(float* dw, const float* m, int64_t c_out, int64_t c_in, int64_t f0, int64_t f1);

/** The Winograd transforms in use (both tile sizes), for `vgg info`. */
const char* winograd_kernel_name();

}  // namespace vgg
