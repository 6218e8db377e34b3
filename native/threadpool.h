// A persistent pool of worker threads. parallel_run(fn) calls fn(ith, nth) for each of nth tasks on the
// pool's threads (the calling thread takes ith = 0, and any task no worker has claimed by then) and
// returns when all are done. Workers spin briefly, then sleep, so back-to-back kernel launches cost
// microseconds and an idle pool costs no CPU; at a barrier or at the end of a run a thread polls as long,
// then sleeps, so one that waits for a preempted one frees its core.
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
/**
 * Sets (true) or clears (false) one mark that the cores are busy with other work: a server sets its mark
 * while a second batch runs or requests wait for its HTTP thread. While any mark is set, every
 * parallel_run runs serially on its calling thread, so concurrent batches take a core each and leave the
 * HTTP thread one, instead of the pool's threads and another thread oversubscribing the cores and waiting
 * at the ends of kernels for a preempted thread.
 */
void mark_cores_busy(bool busy);
/**
 * Runs fn(ith, nth) for ith in [0, nth) with nth = min(num_threads(), max_tasks), and waits for all. The
 * tasks are independent: a task that no worker has started when the calling thread is done with its own
 * runs on the calling thread, so a kernel never waits for a worker that is asleep or preempted before it
 * began; several tasks may run one after another on one thread (use thread_scratch within a task only).
 */
void parallel_run(const TaskFn& fn, int64_t max_tasks = INT32_MAX);
/** As parallel_run, but each task runs on a thread of its own, all at once, so that they may meet at barrier(). */
void parallel_run_together(const TaskFn& fn, int64_t max_tasks = INT32_MAX);
/** Blocks until all nth tasks of the current parallel_run_together have reached it (call from inside fn only). */
void barrier(int nth);

/** The [begin, end) share of thread ith out of nth over `total` items, in multiples of `align`. */
inline void split_range(int64_t total, int ith, int nth, int64_t align, int64_t* begin, int64_t* end) {
  int64_t blocks = (total + align - 1) / align;
  int64_t b0 = blocks * ith / nth, b1 = blocks * (ith + 1) / nth;
  *begin = b0 * align < total ? b0 * align : total;
  *end = b1 * align < total ? b1 * align : total;
}

}  // namespace vgg
