// A persistent pool of worker threads. parallel_run(fn) calls fn(ith, nth) once on each of nth threads
// (the calling thread is ith = 0) and returns when all are done. Workers spin briefly, then sleep, so
// back-to-back kernel launches cost microseconds and an idle pool costs no CPU; at a barrier or at the end
// of a run a thread polls as long, then sleeps, so one that waits for a preempted one frees its core.
#pragma once
#include <cstdint>
#include <functional>

namespace vgg {

using TaskFn = std::function<void(int ith, int nth)>;

/** Number of threads parallel_run uses (>= 1). */
int num_threads();
/** Resizes the pool to n threads (n >= 1); the workers are created here, never per call. */
void set_num_threads(int n);
/**
 * How long a kernel thread polls before it sleeps, in microseconds (default 2000): idle workers for the next
 * run, and threads at a barrier or waiting for the end of a run.
 */
void set_idle_spin_us(int64_t us);
/** Runs fn(ith, nth) for ith in [0, nth) with nth = min(num_threads(), max_tasks), and waits for all. */
void parallel_run(const TaskFn& fn, int64_t max_tasks = INT32_MAX);
/** Blocks until all nth threads of the current parallel_run have reached it (call from inside fn only). */
void barrier(int nth);

/** The [begin, end) share of thread ith out of nth over `total` items, in multiples of `align`. */
inline void split_range(int64_t total, int ith, int nth, int64_t align, int64_t* begin, int64_t* end) {
  int64_t blocks = (total + align - 1) / align;
  int64_t b0 = blocks * ith / nth, b1 = blocks * (ith + 1) / nth;
  *begin = b0 * align < total ? b0 * align : total;
  *end = b1 * align < total ? b1 * align : total;
}

}  // namespace vgg
