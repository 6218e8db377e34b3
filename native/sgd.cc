// d = grad + wd * param; buf = first ? d : momentum * buf + (1 - dampening) * d;
// d = nesterov ? d + momentum * buf : buf; param -= lr * d. Arithmetic in double, like the reference.
// At the avx512 level eight elements at a time in zmm doubles: the same operations in the same order
// (multiplies and adds, never fused into FMAs), so the same bits.
#include "sgd.h"

#include "isa.h"
#include "threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's conversion intrinsics pass an undefined vector, which -Wmaybe-uninitialized reports at each use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define VGG_X86 1
#endif

namespace vgg {
namespace {

void sgd_range(float* param, const float* grad, float* buf, int64_t i0, int64_t i1, const SgdParams& o,
               bool use_momentum) {
  for (int64_t i = i0; i < i1; i++) {
    double d = static_cast<double>(grad[i]) + o.weight_decay * param[i];
    if (use_momentum) {
      const double b = o.first_step ? d : o.momentum * buf[i] + (1.0 - o.dampening) * d;
      buf[i] = static_cast<float>(b);
      d = o.nesterov ? d + o.momentum * static_cast<float>(b) : static_cast<float>(b);
    }
    param[i] = static_cast<float>(param[i] - o.lr * d);
  }
}

#ifdef VGG_X86
// fp-contract=off: GCC would otherwise fuse the multiplies and adds into FMAs (one rounding fewer than the
// reference's), since AVX-512F has them.
__attribute__((target("avx512f,avx512dq,avx512vl"), optimize("fp-contract=off"))) void sgd_range_avx512(
    float* param, const float* grad, float* buf, int64_t i0, int64_t i1, const SgdParams& o, bool use_momentum) {
  const __m512d wd = _mm512_set1_pd(o.weight_decay), lr = _mm512_set1_pd(o.lr), mom = _mm512_set1_pd(o.momentum);
  const __m512d damp = _mm512_set1_pd(1.0 - o.dampening);
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m512d p = _mm512_cvtps_pd(_mm256_loadu_ps(param + i));
    __m512d d = _mm512_add_pd(_mm512_cvtps_pd(_mm256_loadu_ps(grad + i)), _mm512_mul_pd(wd, p));
    if (use_momentum) {
      const __m512d b = o.first_step ? d
                                     : _mm512_add_pd(_mm512_mul_pd(mom, _mm512_cvtps_pd(_mm256_loadu_ps(buf + i))),
                                                     _mm512_mul_pd(damp, d));
      const __m256 bf = _mm512_cvtpd_ps(b);
      _mm256_storeu_ps(buf + i, bf);
      const __m512d bd = _mm512_cvtps_pd(bf);
      d = o.nesterov ? _mm512_add_pd(d, _mm512_mul_pd(mom, bd)) : bd;
    }
    _mm256_storeu_ps(param + i, _mm512_cvtpd_ps(_mm512_sub_pd(p, _mm512_mul_pd(lr, d))));
  }
  sgd_range(param, grad, buf, i, i1, o, use_momentum);
}
#endif

}  // namespace

void sgd_step(float* param, const float* grad, float* buf, int64_t len, const SgdParams& o) {
  const bool use_momentum = o.momentum != 0.0 && buf != nullptr;
  parallel_run(
      [&](int ith, int nth) {
        int64_t i0, i1;
        split_range(len, ith, nth, 16, &i0, &i1);
#ifdef VGG_X86
        if (isa_at_least(Isa::Avx512)) return sgd_range_avx512(param, grad, buf, i0, i1, o, use_momentum);
#endif
        sgd_range(param, grad, buf, i0, i1, o, use_momentum);
      },
      len / (1 << 15) + 1);
}

const char* sgd_kernel_name() {
  return isa_at_least(Isa::Avx512) ? "avx512 (8 doubles per vector)" : "compiler-vectorised double, baseline (sse2)";
}

}  // namespace vgg
