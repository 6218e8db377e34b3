// Memory-bound loops the compiler vectorises (`ivdep`: outputs may alias inputs element for element, which
// is safe, and without it GCC falls back to a scalar, branchy loop whenever they do); large arrays are split over the threads in 64-byte
// aligned chunks (16 floats) so no two threads write the same cache line.
#include "elementwise.h"

#include <cstring>

#include "threadpool.h"

namespace vgg {
namespace {

constexpr int64_t kParallelMin = 1 << 15;  // below this, a thread hand-off costs more than it saves

template <typename F>
void for_chunks(int64_t len, F&& body) {
  if (len < kParallelMin) return body(0, len);
  parallel_run(
      [&](int ith, int nth) {
        int64_t i0, i1;
        split_range(len, ith, nth, 16, &i0, &i1);
        if (i0 < i1) body(i0, i1);
      },
      len / kParallelMin + 1);
}

}  // namespace

void relu_forward(float* y, const float* x, int64_t len) {
  // !(v <= 0) keeps NaN, like the reference.
  for_chunks(len, [=](int64_t i0, int64_t i1) {
#pragma GCC ivdep
    for (int64_t i = i0; i < i1; i++) y[i] = !(x[i] <= 0.0f) ? x[i] : 0.0f;
  });
}

void relu_backward(float* dx, const float* dy, const float* y, int64_t len) {
  for_chunks(len, [=](int64_t i0, int64_t i1) {
#pragma GCC ivdep
    for (int64_t i = i0; i < i1; i++) {
      // A bit mask rather than a multiply, so a NaN gradient under a zero output still gives 0.
      uint32_t g;
      std::memcpy(&g, dy + i, sizeof g);
      g &= y[i] > 0.0f ? 0xffffffffu : 0u;
      std::memcpy(dx + i, &g, sizeof g);
    }
  });
}

void mul(float* y, const float* x, const float* mask, int64_t len) {
  for_chunks(len, [=](int64_t i0, int64_t i1) {
#pragma GCC ivdep
    for (int64_t i = i0; i < i1; i++) y[i] = x[i] * mask[i];
  });
}

void add_inplace(float* y, const float* x, int64_t len) {
  for_chunks(len, [=](int64_t i0, int64_t i1) {
#pragma GCC ivdep
    for (int64_t i = i0; i < i1; i++) y[i] += x[i];
  });
}

void add_row_bias(float* y, const float* bias, int64_t rows, int64_t cols) {
  if (rows * cols < kParallelMin) {
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < cols; j++) y[r * cols + j] += bias[j];
    return;
  }
  parallel_run(
      [&](int ith, int nth) {
        int64_t r0, r1;
        split_range(rows, ith, nth, 1, &r0, &r1);
        for (int64_t r = r0; r < r1; r++)
          for (int64_t j = 0; j < cols; j++) y[r * cols + j] += bias[j];
      },
      rows);
}

}  // namespace vgg
