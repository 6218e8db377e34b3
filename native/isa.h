// Which instruction set the kernels use, chosen once at run time from CPUID and the state the OS saves
// (XGETBV; for AMX also Linux's permission for tile data). Levels are ordered: each includes the ones below.
//   portable  plain C++ (any CPU)
//   avx2      AVX2 + FMA, with the OS saving YMM state
//   avx512    AVX-512 F/BW/VL/DQ, with the OS saving ZMM and opmask state
//   amx       avx512 plus AMX-TILE and AMX-BF16, tile state enabled and granted (arch_prctl)
// AVX512-BF16 is a feature (cpu_has(Feature::Avx512Bf16)), not a level. VGG_NATIVE_ISA=portable|avx2|
// avx512|amx forces a level; a level the CPU lacks is refused (isa_error() says which feature is missing,
// and the addon then fails to load with that message). Kernel code for a level is compiled with that
// level's target attribute, so the addon loads on a CPU without it.
#pragma once
#include <string>

namespace vgg {

enum class Isa { Portable, Avx2Fma, Avx512, Amx };

/** CPU features as this process may use them: the CPUID bit and, for register state, the OS's support. */
enum class Feature { Avx2, Fma, Avx512F, Avx512BW, Avx512VL, Avx512DQ, Avx512Bf16, AmxTile, AmxBf16 };

/** The level in use: the best the CPU and OS allow, or VGG_NATIVE_ISA's (Portable when it was refused). */
Isa active_isa();
/** True where the active level includes `level` (kernels test this, e.g. isa_at_least(Isa::Avx2Fma)). */
inline bool isa_at_least(Isa level) { return active_isa() >= level; }
/** The best level this CPU and OS support, whatever VGG_NATIVE_ISA says. */
Isa best_isa();
/** Whether the CPU (and the OS, for register state) supports `f`, whatever level is active. */
bool cpu_has(Feature f);
/** "portable", "avx2", "avx512" or "amx": the names VGG_NATIVE_ISA takes. */
const char* isa_name(Isa isa);
/** The CPU features that `level` needs and this machine lacks, comma-separated ("" when it has them all). */
std::string missing_for(Isa level);
/** Why VGG_NATIVE_ISA was refused (unknown name, or a level the CPU lacks), or "" when it was not. */
const std::string& isa_error();

}  // namespace vgg
