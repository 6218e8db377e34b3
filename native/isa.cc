#include "isa.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace vgg {
namespace {

constexpr int kFeatures = static_cast<int>(Feature::AmxBf16) + 1;
const char* const kFeatureNames[kFeatures] = {"avx2",     "fma",         "avx512f",  "avx512bw", "avx512vl",
                                              "avx512dq", "avx512_bf16", "amx-tile", "amx-bf16"};

struct CpuState {
  bool has[kFeatures] = {};
  // Why a feature the CPU reports cannot be used (the OS does not save its registers, or refused AMX).
  std::string os_note;
};

#if defined(__x86_64__) || defined(__i386__)
// XCR0: which register state the OS saves on a context switch (XGETBV with ECX = 0).
unsigned long long xcr0() {
  unsigned int lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

// Linux keeps AMX tile data off until the process asks (arch_prctl ARCH_REQ_XCOMP_PERM for
// XFEATURE_XTILEDATA); without the grant the first tile instruction faults.
bool request_amx_permission() {
#if defined(__linux__) && defined(__x86_64__)
  constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
  unsigned long long granted = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &granted) != 0) return false;
  return (granted >> kXfeatureXtiledata) & 1;
#else
  return false;
#endif
}
#endif

CpuState probe() {
  CpuState s;
#if defined(__x86_64__) || defined(__i386__)
  unsigned int a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return s;
  const bool fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
  // Leaf 7 subleaf 0: AVX2, AVX-512 F/DQ/BW/VL (EBX), AMX (EDX); subleaf 1: AVX512-BF16 (EAX).
  unsigned int b7 = 0, c7 = 0, d7 = 0, a71 = 0;
  if (__get_cpuid_count(7, 0, &a, &b7, &c7, &d7)) __get_cpuid_count(7, 1, &a71, &b, &c, &d);
  const unsigned long long xcr = osxsave ? xcr0() : 0;
  const bool ymm = (xcr & 0x6) == 0x6;            // SSE and AVX state
  const bool zmm = ymm && (xcr & 0xe0) == 0xe0;   // opmask, ZMM0-15 upper halves, ZMM16-31
  const bool tiles = (xcr & 0x60000) == 0x60000;  // XTILECFG and XTILEDATA
  auto set = [&](Feature f, bool cpu, bool os, const char* os_what) {
    s.has[static_cast<int>(f)] = cpu && os;
    if (cpu && !os && s.os_note.find(os_what) == std::string::npos)
      s.os_note += std::string(s.os_note.empty() ? "" : "; ") + os_what;
  };
  const char* no_ymm = "the OS does not enable AVX (YMM) register state (XCR0)";
  const char* no_zmm = "the OS does not enable AVX-512 (ZMM and opmask) register state (XCR0)";
  set(Feature::Avx2, avx && ((b7 >> 5) & 1), ymm, no_ymm);
  set(Feature::Fma, fma && avx, ymm, no_ymm);
  set(Feature::Avx512F, (b7 >> 16) & 1, zmm, no_zmm);
  set(Feature::Avx512DQ, (b7 >> 17) & 1, zmm, no_zmm);
  set(Feature::Avx512BW, (b7 >> 30) & 1, zmm, no_zmm);
  set(Feature::Avx512VL, (b7 >> 31) & 1, zmm, no_zmm);
  set(Feature::Avx512Bf16, (a71 >> 5) & 1, zmm, no_zmm);
  const bool amx_cpu = ((d7 >> 24) & 1) && ((d7 >> 22) & 1);
  const bool amx_os = tiles && amx_cpu && request_amx_permission();
  const char* no_tiles = tiles ? "Linux refused AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM)"
                               : "the OS does not enable AMX tile state (XCR0)";
  set(Feature::AmxTile, (d7 >> 24) & 1, amx_os, no_tiles);
  set(Feature::AmxBf16, (d7 >> 22) & 1, amx_os, no_tiles);
#endif
  return s;
}

const CpuState& state() {
  static const CpuState s = probe();
  return s;
}

bool supports(Isa level) { return missing_for(level).empty(); }

struct Choice {
  Isa isa = Isa::Portable;
  std::string error;
};

Choice choose() {
  Choice ch;
  ch.isa = best_isa();
  const char* forced = std::getenv("VGG_NATIVE_ISA");
  if (!forced || !*forced) return ch;
  for (Isa level : {Isa::Portable, Isa::Avx2Fma, Isa::Avx512, Isa::Amx}) {
    if (std::strcmp(forced, isa_name(level)) != 0) continue;
    if (supports(level)) {
      ch.isa = level;
    } else {
      ch.error = std::string("VGG_NATIVE_ISA=") + forced + " needs " + missing_for(level) +
                 ", which this CPU lacks" + (state().os_note.empty() ? "" : " (" + state().os_note + ")") +
                 "; the best level here is " + isa_name(best_isa()) + ". Unset VGG_NATIVE_ISA or choose a level this CPU has.";
      ch.isa = Isa::Portable;
    }
    return ch;
  }
  ch.error = std::string("Expected VGG_NATIVE_ISA to be \"portable\", \"avx2\", \"avx512\" or \"amx\" but received \"") +
             forced + "\"; hint: unset it to use the best level this CPU has (" + isa_name(best_isa()) + ")";
  ch.isa = Isa::Portable;
  return ch;
}

const Choice& choice() {
  static const Choice c = choose();
  return c;
}

}  // namespace

bool cpu_has(Feature f) { return state().has[static_cast<int>(f)]; }

std::string missing_for(Isa level) {
  std::string missing;
  auto need = [&](Feature f) {
    if (!cpu_has(f)) missing += std::string(missing.empty() ? "" : ", ") + kFeatureNames[static_cast<int>(f)];
  };
  if (level >= Isa::Avx2Fma) {
    need(Feature::Avx2);
    need(Feature::Fma);
  }
  if (level >= Isa::Avx512)
    for (Feature f : {Feature::Avx512F, Feature::Avx512BW, Feature::Avx512VL, Feature::Avx512DQ}) need(f);
  if (level >= Isa::Amx) {
    need(Feature::AmxTile);
    need(Feature::AmxBf16);
  }
  return missing;
}

Isa best_isa() {
  for (Isa level : {Isa::Amx, Isa::Avx512, Isa::Avx2Fma})
    if (supports(level)) return level;
  return Isa::Portable;
}

Isa active_isa() { return choice().isa; }

const std::string& isa_error() { return choice().error; }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx2Fma: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Amx: return "amx";
    default: return "portable";
  }
}

}  // namespace vgg
