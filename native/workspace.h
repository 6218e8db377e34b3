// Per-thread scratch buffers that grow on demand and are reused across calls (and training steps), so a
// kernel never allocates per call once the largest layer has been seen.
#pragma once
#include <cstddef>
#include <cstdlib>

namespace vgg {

/** A 64-byte aligned buffer of at least `count` floats, private to the calling thread; `slot` picks one of 6 (4, 5: Winograd input and gradient strips). */
inline float* thread_scratch(int slot, size_t count) {
  struct Buffers {
    float* data[6] = {};
    size_t size[6] = {};
    ~Buffers() {
      for (float* p : data) std::free(p);
    }
  };
  static thread_local Buffers buffers;
  if (buffers.size[slot] < count) {
    std::free(buffers.data[slot]);
    const size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
    buffers.data[slot] = static_cast<float*>(std::aligned_alloc(64, bytes));
    buffers.size[slot] = buffers.data[slot] ? count : 0;
  }
  return buffers.data[slot];
}

}  // namespace vgg
