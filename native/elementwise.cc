// Memory-bound loops the compiler vectorises (`ivdep`: outputs may alias inputs element for element, which
// is safe, and without it GCC falls back to a scalar, branchy loop whenever they do); large arrays are split over the threads in 64-byte
// aligned chunks (16 floats) so no two threads write the same cache line.
#include "elementwise.h"

#include <cmath>
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

void dropout_mask(float* mask, int64_t len, double p, float keep, uint32_t* state) {
  // u = r / 2^32 >= p exactly when the integer r >= ceil(p 2^32) (p 2^32 is exact in double): compared as
  // integers and selected with a bit mask, since a branch on a coin flip mispredicts half the time.
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(p * 4294967296.0));
  uint32_t keep_bits;
  std::memcpy(&keep_bits, &keep, sizeof keep_bits);
  uint32_t s0 = state[0], s1 = state[1], s2 = state[2], s3 = state[3];
  auto rotl = [](uint32_t x, int k) { return (x << k) | (x >> (32 - k)); };
  for (int64_t i = 0; i < len; i++) {
    const uint32_t result = rotl(s1 * 5u, 7) * 9u;
    const uint32_t t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    const uint32_t bits = keep_bits & (0u - static_cast<uint32_t>(result >= threshold));
    std::memcpy(mask + i, &bits, sizeof bits);
  }
  state[0] = s0, state[1] = s1, state[2] = s2, state[3] = s3;
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

// Compiled without target flags: the baseline x86-64 vector width whatever the level.
const char* elementwise_kernel_name() { return "compiler-vectorised, baseline (sse2)"; }

}  // namespace vgg
