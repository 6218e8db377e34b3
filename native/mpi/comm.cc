// The communication thread: MPI_Init_thread, then the job queue (see comm.h).
#include "comm.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <future>

namespace vggmpi {

namespace {

using Clock = std::chrono::steady_clock;

// MPI counts are ints: larger buffers go in pieces of at most 2^28 elements.
constexpr size_t kMaxChunk = size_t{1} << 28;
// An all-reduce goes in pieces of at most 16 MB. Open MPI's non-blocking all-reduce mallocs a temporary
// as large as its message and frees it at the end; glibc serves a request over 32 MB with a fresh mmap,
// so a whole 103 MB gradient faulted in and zeroed about 21,000 new pages (86 MB) on every step (17% of a rank's CPU
// time at 224/128, perf), where pieces under the limit reuse the same heap memory step after step.
constexpr size_t kAllreducePieceBytes = size_t{16} << 20;
constexpr int kGatherChars = 1024;

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, len);
}

MPI_Datatype mpi_type(DType t) { return t == DType::F32 ? MPI_FLOAT : MPI_DOUBLE; }
size_t type_size(DType t) { return t == DType::F32 ? sizeof(float) : sizeof(double); }
MPI_Op mpi_op(ReduceOp op) {
  return op == ReduceOp::Sum ? MPI_SUM : op == ReduceOp::Min ? MPI_MIN : MPI_MAX;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

WorldInfo Communicator::start(double timeout_seconds, int poll_us, Done done) {
  timeout_seconds_ = timeout_seconds;
  poll_us_ = poll_us;
  done_ = std::move(done);
  // Open MPI loads its transports as plugins that expect libmpi's symbols to be global; a Node addon is
  // loaded RTLD_LOCAL, so libmpi is opened again with RTLD_GLOBAL before MPI_Init.
  if (!dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD)) {
    if (!dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL)) dlopen("libmpi.so", RTLD_NOW | RTLD_GLOBAL);
  }
  // Open MPI's non-blocking all-reduce picks ring or recursive doubling by default, half as fast here as
  // Rabenseifner's reduce-scatter + all-gather (64 MB between 2 ranks: 90 vs 34-42 ms, as fast as the
  // blocking MPI_Allreduce), which is also bandwidth-optimal between nodes. A user's setting wins.
  setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "3", 0);
  std::promise<WorldInfo> ready;
  auto result = ready.get_future();
  thread_ = std::thread([this, &ready] {
    WorldInfo info;
    int provided = 0;
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
      info.error = "MPI_Init_thread failed: " + mpi_error(rc);
      ready.set_value(info);
      return;
    }
    // Errors come back as return codes (reported to JavaScript) instead of aborting the process.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &info.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &info.size);
    char name[MPI_MAX_PROCESSOR_NAME];
    int len = 0;
    MPI_Get_processor_name(name, &len);
    info.host.assign(name, len);
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    MPI_Get_library_version(version, &len);
    info.library.assign(version, strnlen(version, len));
    while (!info.library.empty() && (info.library.back() == '\n' || info.library.back() == '\0'))
      info.library.pop_back();
    info_ = info;
    ready.set_value(info);
    loop();
  });
  WorldInfo info = result.get();
  if (!info.error.empty()) thread_.join();
  return info;
}

void Communicator::submit(Job* job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(job);
  }
  cv_.notify_one();
}

void Communicator::finalize() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void Communicator::abort(int code) {
  abort_code_ = code;
  abort_requested_ = true;
  cv_.notify_one();
}

void Communicator::loop() {
  for (;;) {
    Job* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stop_ || abort_requested_ || !queue_.empty(); });
      if (abort_requested_) break;
      if (queue_.empty()) {
        // stop_ with nothing left: a normal end. MPI_Finalize is itself collective, so it is only
        // called while the ranks are still in step.
        lock.unlock();
        if (broken_.empty()) MPI_Finalize();
        return;
      }
      job = queue_.front();
      queue_.pop_front();
    }
    run(job);
    done_(job);
  }
  MPI_Abort(MPI_COMM_WORLD, abort_code_);
  _exit(abort_code_);  // MPI_Abort does not return; this is only in case it did
}

void Communicator::run(Job* job) {
  if (!broken_.empty()) {
    job->error = "an earlier collective failed (" + broken_ + "); the ranks are out of step";
    return;
  }
  auto t0 = Clock::now();
  bool ok = false;
  switch (job->kind) {
    case Job::Allreduce:
      ok = allreduce(job);
      break;
    case Job::Broadcast:
      ok = broadcast(job);
      break;
    case Job::Allgather:
      ok = allgather(job);
      break;
    case Job::Barrier: {
      MPI_Request req;
      int rc = MPI_Ibarrier(MPI_COMM_WORLD, &req);
      if (rc != MPI_SUCCESS) job->error = "MPI_Ibarrier: " + mpi_error(rc);
      else ok = wait(&req, "a barrier", job->error);
      break;
    }
  }
  job->seconds = seconds_since(t0);
  if (!ok) broken_ = job->error;
}

/**
 * Polls a request until it completes, fails, times out or an abort is requested. Open MPI advances a
 * non-blocking collective only inside MPI calls, so the thread tests back to back for the first
 * millisecond (the peers are already there) and then sleeps poll_us between tests (a peer still
 * computing), which leaves the core to the kernels of its own process.
 */
bool Communicator::wait(void* request, const char* what, std::string& error) {
  auto* req = static_cast<MPI_Request*>(request);
  auto t0 = Clock::now();
  auto deadline = t0 + std::chrono::duration<double>(timeout_seconds_);
  for (;;) {
    int flag = 0;
    int rc = MPI_Test(req, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      error = std::string(what) + " failed: " + mpi_error(rc);
      return false;
    }
    if (flag) return true;
    auto now = Clock::now();
    if (abort_requested_) {
      error = std::string(what) + " was abandoned: the job is being aborted";
      return false;
    }
    if (now > deadline) {
      error = std::string(what) + " did not complete within " + std::to_string(int(timeout_seconds_)) +
              " s: another rank has stopped, crashed or is stuck (see its own message; raise the limit with "
              "--mpi-timeout)";
      return false;
    }
    if (now - t0 < std::chrono::milliseconds(1)) sched_yield();
    else usleep(poll_us_);
  }
}

bool Communicator::allreduce(Job* job) {
  const size_t esize = type_size(job->dtype);
  const bool packed = job->buffers.size() > 1;
  char* data = nullptr;
  size_t total = 0;
  for (size_t n : job->lengths) total += n;
  if (packed) {
    staging_.resize(total * esize);
    size_t at = 0;
    for (size_t i = 0; i < job->buffers.size(); i++) {
      std::memcpy(staging_.data() + at, job->buffers[i], job->lengths[i] * esize);
      at += job->lengths[i] * esize;
    }
    data = staging_.data();
  } else if (!job->buffers.empty()) {
    data = static_cast<char*>(job->buffers[0]);
  }
  const size_t piece = kAllreducePieceBytes / esize;
  for (size_t at = 0; at < total; at += piece) {
    int count = static_cast<int>(std::min(piece, total - at));
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, data + at * esize, count, mpi_type(job->dtype), mpi_op(job->op),
                            MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS) {
      job->error = "MPI_Iallreduce: " + mpi_error(rc);
      return false;
    }
    if (!wait(&req, "an all-reduce", job->error)) return false;
  }
  if (packed) {
    size_t at = 0;
    for (size_t i = 0; i < job->buffers.size(); i++) {
      std::memcpy(job->buffers[i], staging_.data() + at, job->lengths[i] * esize);
      at += job->lengths[i] * esize;
    }
  }
  return true;
}

bool Communicator::broadcast(Job* job) {
  const size_t esize = type_size(job->dtype);
  for (size_t i = 0; i < job->buffers.size(); i++) {
    char* data = static_cast<char*>(job->buffers[i]);
    for (size_t at = 0; at < job->lengths[i]; at += kMaxChunk) {
      int count = static_cast<int>(std::min(kMaxChunk, job->lengths[i] - at));
      MPI_Request req;
      int rc = MPI_Ibcast(data + at * esize, count, mpi_type(job->dtype), job->root, MPI_COMM_WORLD, &req);
      if (rc != MPI_SUCCESS) {
        job->error = "MPI_Ibcast: " + mpi_error(rc);
        return false;
      }
      if (!wait(&req, "a broadcast", job->error)) return false;
    }
  }
  return true;
}

bool Communicator::allgather(Job* job) {
  std::vector<char> mine(kGatherChars, 0);
  std::memcpy(mine.data(), job->text.data(), std::min<size_t>(job->text.size(), kGatherChars - 1));
  std::vector<char> all(static_cast<size_t>(kGatherChars) * info_.size, 0);
  MPI_Request req;
  int rc = MPI_Iallgather(mine.data(), kGatherChars, MPI_CHAR, all.data(), kGatherChars, MPI_CHAR,
                          MPI_COMM_WORLD, &req);
  if (rc != MPI_SUCCESS) {
    job->error = "MPI_Iallgather: " + mpi_error(rc);
    return false;
  }
  if (!wait(&req, "an all-gather", job->error)) return false;
  for (int r = 0; r < info_.size; r++) {
    const char* s = all.data() + static_cast<size_t>(r) * kGatherChars;
    job->gathered.emplace_back(s, strnlen(s, kGatherChars));
  }
  return true;
}

}  // namespace vggmpi
