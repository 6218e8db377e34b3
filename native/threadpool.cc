// Persistent thread pool: a generation counter wakes the workers, a done counter reports back.
#include "threadpool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace vgg {
namespace {

constexpr int kSpinIterations = 20000;
// How long an idle worker keeps polling for the next run before it sleeps. Waking a sleeping thread costs
// 0.1-0.5 ms on a virtual machine, as much as a whole kernel of a batch-1 inference (measured: a 100 MB
// GEMV took 2.0 ms with the worker polling and 2.4 ms after it had gone to sleep), and the JS work
// between two kernels is usually well under this.
constexpr auto kSpinTime = std::chrono::microseconds(2000);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct alignas(64) PaddedAtomic {
  std::atomic<int64_t> value{0};
};

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
    for (int i = 1; i < n; i++) workers_.emplace_back([this, i, start] { worker_loop(i, start); });
  }

  void run(const TaskFn& fn, int nth) {
    // A nested call (from inside a task), or one from a second JS thread while the pool is busy, runs
    // serially on its own thread: every kernel is correct for any nth.
    if (nth <= 1 || size_ == 1 || in_task_ || !busy_.try_lock()) {
      fn(0, 1);
      return;
    }
    std::lock_guard<std::mutex> busy(busy_, std::adopt_lock);
    in_task_ = true;
    if (nth > size_) nth = size_;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &fn;
      task_nth_ = nth;
      done_.value.store(0, std::memory_order_relaxed);
      generation_.value.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    fn(0, nth);
    // Every worker (not only the nth-1 participants) checks in, so none can still read task_ after we return.
    const int64_t expected = size_ - 1;
    int spins = 0;
    while (done_.value.load(std::memory_order_acquire) != expected) {
      if (++spins > kSpinIterations) std::this_thread::yield();
    }
    in_task_ = false;
  }

  void barrier(int nth) {
    if (nth <= 1) return;
    const int64_t gen = barrier_gen_.value.load(std::memory_order_acquire);
    if (barrier_count_.value.fetch_add(1, std::memory_order_acq_rel) == nth - 1) {
      barrier_count_.value.store(0, std::memory_order_relaxed);
      barrier_gen_.value.fetch_add(1, std::memory_order_release);
      return;
    }
    int spins = 0;
    while (barrier_gen_.value.load(std::memory_order_acquire) == gen) {
      if (++spins > kSpinIterations) std::this_thread::yield();
    }
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

  void worker_loop(int ith, int64_t seen) {
    for (;;) {
      const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
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
      seen++;
      const TaskFn* task = task_;
      const int nth = task_nth_;
      in_task_ = true;
      if (ith < nth) (*task)(ith, nth);
      in_task_ = false;
      done_.value.fetch_add(1, std::memory_order_acq_rel);
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
  PaddedAtomic generation_;
  PaddedAtomic done_;
  PaddedAtomic barrier_count_;
  PaddedAtomic barrier_gen_;
};

thread_local bool Pool::in_task_ = false;

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers must not be joined during static teardown
  return *p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }

void parallel_run(const TaskFn& fn, int64_t max_tasks) {
  int nth = pool().size();
  if (max_tasks < nth) nth = max_tasks < 1 ? 1 : static_cast<int>(max_tasks);
  pool().run(fn, nth);
}

void barrier(int nth) { pool().barrier(nth); }

}  // namespace vgg
