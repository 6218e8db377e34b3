// The MPI side of the optional vgg_mpi addon, with no Node-API in it: one communication thread makes every
// MPI call (MPI_THREAD_FUNNELED, the thread that initialised MPI), in the order the jobs were queued, so
// the collectives are issued in the same order on every rank whatever the JavaScript side awaits.
// Collectives are non-blocking (MPI_Iallreduce, MPI_Ibcast, ...) and polled with MPI_Test, which lets a
// wait end on a timeout or an abort instead of hanging on a rank that is gone.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace vggmpi {

enum class DType { F32, F64 };
enum class ReduceOp { Sum, Min, Max };

struct WorldInfo {
  int rank = 0;
  int size = 1;
  std::string host;
  std::string library;
  std::string error;  // non-empty when MPI_Init failed
};

/** One queued operation. Buffers are owned by the caller (JavaScript typed arrays kept alive). */
struct Job {
  enum Kind { Allreduce, Broadcast, Allgather, Barrier } kind = Barrier;
  DType dtype = DType::F32;
  ReduceOp op = ReduceOp::Sum;
  std::vector<void*> buffers;
  std::vector<size_t> lengths;  // elements per buffer
  int root = 0;
  std::string text;  // Allgather: this rank's string
  // Results, written by the communication thread.
  std::string error;
  std::vector<std::string> gathered;
  double seconds = 0;
  uint64_t id = 0;
};

class Communicator {
 public:
  /** Called on the communication thread when a job has finished (error empty on success). */
  using Done = std::function<void(Job*)>;

  /** Starts the thread and initialises MPI on it; blocks until MPI_Init_thread returned. */
  WorldInfo start(double timeout_seconds, int poll_us, Done done);
  /** Queues a job; ownership passes to the communicator until `done` is called with it. */
  void submit(Job* job);
  /** Ends MPI normally (MPI_Finalize) after the queued jobs, and joins the thread. */
  void finalize();
  /** MPI_Abort(code) as soon as the thread is free: a running wait stops at its next poll. */
  void abort(int code);
  bool started() const { return thread_.joinable(); }

 private:
  void loop();
  void run(Job* job);
  bool wait(void* request, const char* what, std::string& error);
  bool allreduce(Job* job);
  bool broadcast(Job* job);
  bool allgather(Job* job);

  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Job*> queue_;
  bool stop_ = false;
  std::atomic<bool> abort_requested_{false};
  std::atomic<int> abort_code_{1};
  double timeout_seconds_ = 300;
  int poll_us_ = 20;
  /** Set when a collective failed or timed out: later ones cannot match up across ranks any more. */
  std::string broken_;
  std::vector<char> staging_;
  Done done_;
  WorldInfo info_;
};

}  // namespace vggmpi
