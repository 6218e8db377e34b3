// bf16 rounding (float32 -> bf16 held as float32) and the choice of the bf16 GEMM's path.
#include "bf16.h"

#include <cstdlib>
#include <cstring>

#include "isa.h"
#include "threadpool.h"

namespace vgg {
namespace {

// TDPBF16PS needs the amx level, VDPBF16PS the avx512 level (so VGG_NATIVE_ISA=avx2 or portable also means
// the emulation) and the AVX512_BF16 feature, which is not a level of its own (isa.h).
Bf16Path detect() {
  const char* forced = std::getenv("VGG_BF16");
  if (forced && std::strcmp(forced, "emulate") == 0) return Bf16Path::Emulation;
  const bool vdpbf16ps = isa_at_least(Isa::Avx512) && cpu_has(Feature::Avx512Bf16);
  if (forced && std::strcmp(forced, "avx512bf16") == 0) return vdpbf16ps ? Bf16Path::Avx512Bf16 : Bf16Path::Emulation;
  if (isa_at_least(Isa::Amx) && vdpbf16ps) return Bf16Path::Amx;
  if (vdpbf16ps) return Bf16Path::Avx512Bf16;
  return Bf16Path::Emulation;
}

// The rounding as bf16_bits does it (branch-free, so the compiler turns it into vector code).
inline void round_span(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const uint32_t u = static_cast<uint32_t>(bf16_bits(x[i])) << 16;
    std::memcpy(y + i, &u, 4);
  }
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f,avx512bw,avx512vl"))) void round_span_avx512(float* y, const float* x, int64_t n) {
  round_span(y, x, n);
}
#endif

void round_range(float* y, const float* x, int64_t n) {
#if defined(__x86_64__) || defined(__i386__)
  if (bf16_path() != Bf16Path::Emulation) return round_span_avx512(y, x, n);
#endif
  round_span(y, x, n);
}

}  // namespace

Bf16Path bf16_path() {
  static const Bf16Path path = detect();
  return path;
}

const char* bf16_path_name(Bf16Path path) {
  return path == Bf16Path::Amx ? "amx" : path == Bf16Path::Avx512Bf16 ? "avx512bf16" : "emulation";
}

void round_to_bf16(float* y, const float* x, int64_t n) {
  constexpr int64_t kPerTask = int64_t{1} << 16;  // below this a second thread costs more than it saves
  if (n <= kPerTask) return round_range(y, x, n);
  parallel_run(
      [&](int ith, int nth) {
        int64_t begin, end;
        split_range(n, ith, nth, 16, &begin, &end);
        round_range(y + begin, x + begin, end - begin);
      },
      n / kPerTask);
}

}  // namespace vgg
