// Persistent thread pool: a generation counter wakes the workers, tasks are claimed from a counter (the
// calling thread takes those no worker has), and a run ends once the workers inside it have left.
#include "threadpool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace vgg {
namespace {

// How long a kernel thread polls before it sleeps until woken (set_idle_spin_us): an idle worker for the
// next run, and any thread at a barrier or waiting for the end of a run. Waking a sleeping thread costs
// 0.1-0.5 ms on a virtual machine (its vCPU has halted), as much as a whole kernel of a batch-1 inference
// (measured: a 100 MB GEMV took 2.0 ms with the worker polling and 2.4 ms after it had gone to sleep), and
// the JS work between two kernels is usually well under this; with a 50 us poll at barriers, training at
// 224/128 on 2 threads ran at 57 images/s instead of 127 (the Xeon, quiet). A server, whose kernel
// threads share the cores with its HTTP thread, sets it short: past the poll a waiter is waiting for a
// thread that was preempted, and sleeping gives its core to that one.
std::atomic<int64_t> g_idle_spin_us{2000};

// Marks of other work wanting the cores (mark_cores_busy), one per server whose cores are shared now:
// while any is set, every parallel_run runs serially.
std::atomic<int> g_cores_busy{0};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct alignas(64) PaddedAtomic {
  std::atomic<int64_t> value{0};
};

// A 32-bit counter that threads can sleep on until it moves (a futex on Linux; elsewhere they yield).
struct alignas(64) WaitWord {
  std::atomic<int32_t> value{0};
  std::atomic<int32_t> sleepers{0};

  // Returns once value != seen: polls for the spin time, then sleeps.
  void wait_while(int32_t seen) {
    const auto spin_until =
        std::chrono::steady_clock::now() + std::chrono::microseconds(g_idle_spin_us.load(std::memory_order_relaxed));
    int spins = 0;
    while (value.load(std::memory_order_acquire) == seen) {
      cpu_relax();
      if ((++spins & 63) != 0 || std::chrono::steady_clock::now() < spin_until) continue;
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      // seq_cst on both sides: either the waker sees this sleeper, or this load sees the new value.
      while (value.load(std::memory_order_seq_cst) == seen) sleep_on(seen);
      sleepers.fetch_sub(1, std::memory_order_relaxed);
      return;
    }
  }

  // Moves the value on and wakes the sleepers, if any.
  void advance() {
    value.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) > 0) wake_all();
  }

  // Counts down; the one that reaches zero wakes the sleepers, if any.
  void leave() {
    if (value.fetch_sub(1, std::memory_order_seq_cst) == 1 && sleepers.load(std::memory_order_seq_cst) > 0)
      wake_all();
  }

  // Returns once the value is `want` (it moves only towards it: up by advance, down by leave).
  void wait_for(int32_t want) {
    for (int32_t v; (v = value.load(std::memory_order_acquire)) != want;) wait_while(v);
  }

 private:
  void sleep_on(int32_t seen) {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<int32_t*>(&value), FUTEX_WAIT_PRIVATE, seen, nullptr, nullptr, 0);
#else
    std::this_thread::yield();
#endif
  }
  void wake_all() {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<int32_t*>(&value), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
#endif
  }
};
static_assert(sizeof(std::atomic<int32_t>) == sizeof(int32_t), "a futex is a plain 32-bit word");

class Pool {
 public:
  Pool() { resize(default_threads()); }
  ~Pool() { stop_workers(); }

  int size() const { return size_; }

  void resize(int n) {
    std::lock_guard<std::mutex> busy(busy_);  // waits for a run in progress on another JS thread
    if (n < 1) n = 1;
    if (n == size_) return;
    stop_workers();
    size_ = n;
    stopping_ = false;
    // Each worker starts from the generation current now, so a run issued before it is scheduled still wakes it.
    const int64_t start = generation_.value.load(std::memory_order_acquire);
    for (int i = 1; i < n; i++) workers_.emplace_back([this, start] { worker_loop(start); });
  }

  // Tasks 0..nth-1 of fn: the caller takes task 0, then (independent tasks) claims the rest one at a time
  // alongside the workers, so a task no worker has started by then (one asleep, or preempted by another
  // process) runs on the caller instead of being waited for; tasks that meet at barrier() (together) each
  // run on a thread of their own. Which thread runs a task never changes what it computes.
  void run(const TaskFn& fn, int nth, bool together) {
    // A nested call (from inside a task), one from a second JS thread while the pool is busy, and every
    // call while the cores are marked busy run serially on their own thread: every kernel is correct for
    // any nth.
    if (nth <= 1 || size_ == 1 || in_task_ || g_cores_busy.load(std::memory_order_relaxed) > 0 || !busy_.try_lock()) {
      fn(0, 1);
      return;
    }
    std::lock_guard<std::mutex> busy(busy_, std::adopt_lock);
    in_task_ = true;
    if (nth > size_) nth = size_;
    const int64_t run = ++runs_;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &fn;
      task_nth_ = nth;
      together_ = together;
      next_task_.value.store(1, std::memory_order_relaxed);
      tasks_done_.value.store(0, std::memory_order_relaxed);
      open_.value.store(run, std::memory_order_seq_cst);
      generation_.value.store(run, std::memory_order_release);
    }
    wake_.notify_all();
    fn(0, nth);
    if (together) {
      tasks_done_.wait_for(nth - 1);
    } else {
      run_unclaimed(fn, nth);
    }
    // Closed: a worker that wakes from now on leaves without reading task_. Then wait for those inside
    // (seq_cst with the workers' entry: either a worker's entry is seen here, or it sees the run closed).
    open_.value.store(0, std::memory_order_seq_cst);
    inside_.wait_for(0);
    in_task_ = false;
  }

  // Claims the tasks of the current run one at a time and runs them, until none is left (independent runs).
  void run_unclaimed(const TaskFn& fn, int nth) {
    for (int64_t t; (t = next_task_.value.fetch_add(1, std::memory_order_relaxed)) < nth;)
      fn(static_cast<int>(t), nth);
  }

  void barrier(int nth) {
    if (nth <= 1) return;
    if (!together_) {
      std::fprintf(stderr, "vgg-ts native: barrier() inside parallel_run; use parallel_run_together\n");
      std::abort();
    }
    const int32_t gen = barrier_gen_.value.load(std::memory_order_acquire);
    if (barrier_count_.value.fetch_add(1, std::memory_order_acq_rel) == nth - 1) {
      barrier_count_.value.store(0, std::memory_order_relaxed);
      barrier_gen_.advance();
      return;
    }
    barrier_gen_.wait_while(gen);
  }

 private:
  static int default_threads() {
    const char* env = std::getenv("VGG_NUM_THREADS");
    if (env && *env) {
      char* end = nullptr;
      long v = std::strtol(env, &end, 10);
      if (end && *end == '\0' && v >= 1 && v <= 256) return static_cast<int>(v);
    }
    unsigned hc = std::thread::hardware_concurrency();
    return hc == 0 ? 1 : static_cast<int>(hc);
  }

  void worker_loop(int64_t seen) {
    for (;;) {
      const auto spin_until =
          std::chrono::steady_clock::now() + std::chrono::microseconds(g_idle_spin_us.load(std::memory_order_relaxed));
      int spins = 0;
      while (generation_.value.load(std::memory_order_acquire) == seen && !stopping_.load()) {
        cpu_relax();
        // The clock is read every 64 polls; past the spin time the worker sleeps until the next run.
        if ((++spins & 63) == 0 && std::chrono::steady_clock::now() > spin_until) {
          std::unique_lock<std::mutex> lock(mutex_);
          wake_.wait(lock, [&] {
            return generation_.value.load(std::memory_order_acquire) != seen || stopping_.load();
          });
        }
      }
      if (stopping_.load()) return;
      // The latest run (a worker that slept through some joins only the one published last).
      seen = generation_.value.load(std::memory_order_acquire);
      inside_.value.fetch_add(1, std::memory_order_seq_cst);
      if (open_.value.load(std::memory_order_seq_cst) == seen) {
        const TaskFn* task = task_;
        const int nth = task_nth_;
        in_task_ = true;
        if (together_) {
          const int64_t t = next_task_.value.fetch_add(1, std::memory_order_relaxed);
          if (t < nth) {
            (*task)(static_cast<int>(t), nth);
            tasks_done_.advance();
          }
        } else {
          run_unclaimed(*task, nth);
        }
        in_task_ = false;
      }
      inside_.leave();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  static thread_local bool in_task_;
  int size_ = 0;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::mutex busy_;  // held by the thread whose run() owns the workers
  std::condition_variable wake_;
  std::atomic<bool> stopping_{false};
  const TaskFn* task_ = nullptr;
  int task_nth_ = 1;
  bool together_ = false;
  int64_t runs_ = 0;           // runs published (the calling thread's; busy_ serialises them)
  PaddedAtomic generation_;    // the last run published: workers wait for it to move
  PaddedAtomic open_;          // the run that workers may still join, 0 once its tasks are all taken
  PaddedAtomic next_task_;     // the next task to claim
  WaitWord tasks_done_;        // tasks finished by workers (together runs)
  WaitWord inside_;            // workers inside the current run
  PaddedAtomic barrier_count_;
  WaitWord barrier_gen_;
};

thread_local bool Pool::in_task_ = false;

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers must not be joined during static teardown
  return *p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }
void set_idle_spin_us(int64_t us) { g_idle_spin_us.store(us < 0 ? 0 : us, std::memory_order_relaxed); }

void mark_cores_busy(bool busy) {
  if (busy) {
    g_cores_busy.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // Never below zero: a stray clear cannot cancel a later mark.
  int v = g_cores_busy.load(std::memory_order_relaxed);
  while (v > 0 && !g_cores_busy.compare_exchange_weak(v, v - 1, std::memory_order_relaxed)) {
  }
}

static int tasks_for(int64_t max_tasks) {
  const int nth = pool().size();
  return max_tasks < nth ? (max_tasks < 1 ? 1 : static_cast<int>(max_tasks)) : nth;
}

void parallel_run(const TaskFn& fn, int64_t max_tasks) { pool().run(fn, tasks_for(max_tasks), false); }

void parallel_run_together(const TaskFn& fn, int64_t max_tasks) { pool().run(fn, tasks_for(max_tasks), true); }

void barrier(int nth) { pool().barrier(nth); }

}  // namespace vgg
