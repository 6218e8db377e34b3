// The AVX-512 micro-kernels of the packed SGEMM (gemm.cc's driver calls them at the avx512 level).
// A tile is kAvx512MR rows of packed A (kc, kAvx512MR) by one or two 16-column B micro-panels, the second
// kc * 16 floats after the first, as the driver packs them (so B's packing is the same at every level).
// Each C element is summed as the AVX2 kernel sums it (an FMA per k in order from zero, then + C, + bias,
// ReLU), so the two levels give the same bits.
#pragma once
#include <cstdint>

namespace vgg {

/** Rows of the AVX-512 kernel's tile (and of its packed A panels). */
constexpr int64_t kAvx512MR = 12;
/** The most B micro-panels (of 16 columns) one tile spans. */
constexpr int64_t kAvx512Panels = 2;

/**
 * c (rows, 16 * panels) row stride ldc = pa (kc, kAvx512MR) packed x panels B micro-panels (kc, 16), plus c
 * when `accumulate`, then bias (rows) and ReLU when given. rows in [1, kAvx512MR], panels in [1, kAvx512Panels].
 */
using GemmMicroKernel = void (*)(float* c, int64_t ldc, const float* pa, const float* pb, int64_t kc,
                                 bool accumulate, const float* bias, bool relu);
GemmMicroKernel avx512_micro_kernel(int64_t rows, int64_t panels);

}  // namespace vgg
