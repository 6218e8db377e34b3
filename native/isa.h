// Which instruction set the kernels use, chosen once at run time: AVX2+FMA when the CPU has it, else the
// portable C++ path. VGG_NATIVE_ISA=portable forces the portable path (tests check both).
#pragma once

namespace vgg {

enum class Isa { Portable, Avx2Fma };

Isa active_isa();
const char* isa_name(Isa isa);

}  // namespace vgg
