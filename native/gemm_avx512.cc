// AVX-512 micro-kernels: an MR x (16 * NP) tile of C in MR * NP zmm accumulators (24 of the 32 at 12x32),
// each k step one broadcast of A per row (folded into the FMA as an embedded broadcast) and NP loads of B.
#include "gemm_avx512.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's _mm512_max_ps passes _mm512_undefined_ps(), which -Wmaybe-uninitialized reports at every use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <array>
#include <utility>

#define VGG_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))

namespace vgg {
namespace {

constexpr int64_t MR = kAvx512MR, NR = 16;

template <int Rows, int NP>
VGG_AVX512 void micro(float* c, int64_t ldc, const float* pa, const float* pb, int64_t kc, bool accumulate,
                      const float* bias, bool relu) {
  __m512 acc[Rows][NP];
#pragma GCC unroll 24
  for (int r = 0; r < Rows; r++)
#pragma GCC unroll 3
    for (int q = 0; q < NP; q++) acc[r][q] = _mm512_setzero_ps();
  // Touch the C tile early so its cache lines arrive while the k loop runs.
#pragma GCC unroll 24
  for (int r = 0; r < Rows; r++)
#pragma GCC unroll 3
    for (int q = 0; q < NP; q++) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + q * NR), _MM_HINT_T0);
  const int64_t panel = kc * NR;  // the next B panel starts here
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; p++) {
    __m512 b[NP];
#pragma GCC unroll 3
    for (int q = 0; q < NP; q++) b[q] = _mm512_load_ps(pb + q * panel);
#pragma GCC unroll 24
    for (int r = 0; r < Rows; r++) {
      const __m512 a = _mm512_set1_ps(pa[r]);
#pragma GCC unroll 3
      for (int q = 0; q < NP; q++) acc[r][q] = _mm512_fmadd_ps(a, b[q], acc[r][q]);
    }
    pa += MR;
    pb += NR;
  }
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 24
  for (int r = 0; r < Rows; r++) {
    float* cr = c + r * ldc;
#pragma GCC unroll 3
    for (int q = 0; q < NP; q++) {
      // The AVX2 kernel's order: + C, + bias, then max(0, v) (which keeps a NaN v).
      __m512 v = acc[r][q];
      if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(cr + q * NR));
      if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(bias[r]));
      if (relu) v = _mm512_max_ps(zero, v);
      _mm512_storeu_ps(cr + q * NR, v);
    }
  }
}

template <int NP, int... Rows>
constexpr std::array<GemmMicroKernel, sizeof...(Rows)> table(std::integer_sequence<int, Rows...>) {
  return {micro<Rows + 1, NP>...};
}

}  // namespace

GemmMicroKernel avx512_micro_kernel(int64_t rows, int64_t panels) {
  static constexpr auto one = table<1>(std::make_integer_sequence<int, MR>());
  static constexpr auto two = table<2>(std::make_integer_sequence<int, MR>());
  return (panels == 1 ? one : two)[rows - 1];
}

}  // namespace vgg

#else

namespace vgg {
GemmMicroKernel avx512_micro_kernel(int64_t, int64_t) { return nullptr; }
}  // namespace vgg

#endif
