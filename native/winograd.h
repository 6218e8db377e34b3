// Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions: 16 multiplies per 2x2 output tile and channel pair
// instead of 36, as 16 GEMMs between transformed weights and transformed input tiles.
#pragma once
#include <cstdint>

#include "conv2d.h"

namespace vgg {

/** Whether the Winograd path applies to this geometry (3x3 kernel, stride 1). */
bool winograd_applies(const ConvShape& s);

// One image: y (cOut, outH, outW) = conv(x (cIn, h, w), w) + bias, then ReLU when `relu`. u holds the
// weights from winograd_prepare_weights; runs on the calling thread. Only the 2x2 output tiles
// [tile_begin, tile_end) (row-major over the tile grid; -1 = all) are written, so threads can share an image.
void winograd_forward_image(float* y, const float* x, const float* u, const float* bias, const ConvShape& s, bool relu,
                            int64_t tile_begin = 0, int64_t tile_end = -1);
/** Number of 2x2 output tiles of one image. */
int64_t winograd_tiles(const ConvShape& s);
/** Floats needed by winograd_prepare_weights. */
int64_t winograd_weights_size(int64_t c_out, int64_t c_in);
// u = the 16 matrices U_e (cOut, cIn) of G g G^T over every 3x3 filter g of w (cOut, cIn, 3, 3), each
// packed once for the GEMM (they are reused by every tile chunk of every image).
void winograd_prepare_weights(float* u, const float* w, int64_t c_out, int64_t c_in);

}  // namespace vgg
