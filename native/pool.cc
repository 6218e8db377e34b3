// Max pooling, parallel over the n*c planes (each thread owns whole planes, so no write is shared).
#include "pool.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "threadpool.h"

namespace vgg {

void max_pool2d_forward(float* y, int32_t* argmax, const float* x, const PoolShape& s) {
  const int64_t planes = s.n * s.c, in_plane = s.h * s.w, out_plane = s.out_h * s.out_w;
  parallel_run(
      [&](int ith, int nth) {
        int64_t p0, p1;
        split_range(planes, ith, nth, 1, &p0, &p1);
        for (int64_t pl = p0; pl < p1; pl++) {
          const float* xp = x + pl * in_plane;
          float* yp = y + pl * out_plane;
          int32_t* ap = argmax + pl * out_plane;
          for (int64_t oy = 0; oy < s.out_h; oy++)
            for (int64_t ox = 0; ox < s.out_w; ox++) {
              float best = -std::numeric_limits<float>::infinity();
              int64_t best_idx = -1;
              for (int64_t ki = 0; ki < s.kh; ki++) {
                const int64_t iy = oy * s.stride_h - s.pad_h + ki;
                if (iy < 0 || iy >= s.h) continue;
                for (int64_t kj = 0; kj < s.kw; kj++) {
                  const int64_t ix = ox * s.stride_w - s.pad_w + kj;
                  if (ix < 0 || ix >= s.w) continue;
                  const float v = xp[iy * s.w + ix];
                  // Same rule as the reference: the first NaN of a window row wins, NaN propagates.
                  if (v > best || std::isnan(v) || best_idx < 0) {
                    best = v;
                    best_idx = iy * s.w + ix;
                    if (std::isnan(v)) break;
                  }
                }
              }
              yp[oy * s.out_w + ox] = best;
              ap[oy * s.out_w + ox] = static_cast<int32_t>(best_idx);
            }
        }
      },
      planes);
}

void max_pool2d_backward(float* dx, const float* dy, const int32_t* argmax, const PoolShape& s) {
  const int64_t planes = s.n * s.c, in_plane = s.h * s.w, out_plane = s.out_h * s.out_w;
  parallel_run(
      [&](int ith, int nth) {
        int64_t p0, p1;
        split_range(planes, ith, nth, 1, &p0, &p1);
        for (int64_t pl = p0; pl < p1; pl++) {
          float* dxp = dx + pl * in_plane;
          std::memset(dxp, 0, in_plane * sizeof(float));
          const float* dyp = dy + pl * out_plane;
          const int32_t* ap = argmax + pl * out_plane;
          for (int64_t p = 0; p < out_plane; p++) {
            const int64_t idx = ap[p];
            if (idx >= 0 && idx < in_plane) dxp[idx] += dyp[p];
          }
        }
      },
      planes);
}

}  // namespace vgg
