#include "isa.h"

#include <cstdlib>
#include <cstring>

namespace vgg {
namespace {

Isa detect() {
  const char* forced = std::getenv("VGG_NATIVE_ISA");
  if (forced && std::strcmp(forced, "portable") == 0) return Isa::Portable;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2Fma;
#endif
  return Isa::Portable;
}

}  // namespace

Isa active_isa() {
  static const Isa isa = detect();
  return isa;
}

const char* isa_name(Isa isa) { return isa == Isa::Avx2Fma ? "avx2+fma" : "portable"; }

}  // namespace vgg
