// Per-thread scratch buffers that grow on demand and are reused across calls (and training steps), so a
// kernel never allocates per call once the largest layer has been seen.
#pragma once
#include <cstddef>
#include <cstdlib>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace vgg {

/**
 * size bytes, 64-byte aligned; from 1 MiB up, 2 MiB aligned and marked for transparent huge pages (Linux),
 * so a buffer that should stay in the L2 cache is physically contiguous and its sets do not depend on
 * where the kernel happened to place 4 KiB pages. Free with std::free.
 */
inline void* workspace_alloc(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  if (bytes < (size_t{1} << 20)) return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, rounded);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p) madvise(p, rounded, MADV_HUGEPAGE);
#endif
  return p;
}

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
    buffers.data[slot] = static_cast<float*>(workspace_alloc(bytes));
    buffers.size[slot] = buffers.data[slot] ? count : 0;
  }
  return buffers.data[slot];
}

}  // namespace vgg
