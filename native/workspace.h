// Per-thread scratch buffers that grow on demand and are reused across calls (and training steps), so a
// kernel never allocates per call once the largest layer has been seen.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace vgg {

/** A 64-byte aligned buffer of at least `count` floats, private to the calling thread; `slot` picks one of 4. */
inline float* thread_scratch(int slot, size_t count) {
  struct Buffers {
    float* data[4] = {};
    size_t size[4] = {};
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

// Asks the kernel to back a large, not yet touched output buffer with 2 MiB pages. A fresh Float32Array of
// hundreds of MB comes from mmap and costs a page fault (and a page zeroing) per 4 KiB on first write:
// ~0.5 ms per MB, more than the kernels that write it. With transparent huge pages in "madvise" mode one
// fault covers 2 MiB (~3x less time). Only whole 2 MiB pages inside the buffer are advised; a hint, never
// an error. VGG_HUGE_PAGES=0 turns it off.
inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const bool enabled = [] {
    const char* v = std::getenv("VGG_HUGE_PAGES");
    return !(v && v[0] == '0');
  }();
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (!enabled || bytes < 4 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace vgg
