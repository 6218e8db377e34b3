// Node-API glue of the optional vgg_mpi addon (built only where Open MPI is found; see binding.gyp and
// src/distributed/mpi.ts). Collectives return Promises settled on the JavaScript thread through one
// thread-safe function; the typed arrays they read and write are kept alive until then and must not be
// touched by JavaScript meanwhile.
#include <napi.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>

#include "comm.h"

namespace {

using vggmpi::Communicator;
using vggmpi::DType;
using vggmpi::Job;
using vggmpi::ReduceOp;

struct Pending {
  Napi::Promise::Deferred deferred;
  std::vector<Napi::Reference<Napi::Value>> keep;  // the typed arrays, alive until the job is done
};

Communicator* comm = nullptr;
Napi::ThreadSafeFunction done_tsfn;
std::unordered_map<uint64_t, std::unique_ptr<Pending>> pending;
uint64_t next_id = 1;
bool initialised = false;
bool finalised = false;

// What a rank prints when mpirun stops it with SIGTERM (another rank died, or the job was aborted):
// written by the signal handler with write(2), the only safe way; two buffers so that JavaScript can
// replace the note while a handler might be reading the other one.
char exit_prefix[512];
char exit_notes[2][2048];
std::atomic<int> exit_note_index{0};

void write_all(const char* s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

void on_sigterm(int sig) {
  write_all("\n");
  write_all(exit_prefix);
  write_all("stopped by mpirun (SIGTERM): another rank has ended or the job was aborted. ");
  write_all(exit_notes[exit_note_index.load()]);
  write_all("\n");
  signal(sig, SIG_DFL);
  raise(sig);
}

void settle(Napi::Env env, Napi::Function, Job* job) {
  std::unique_ptr<Job> owned(job);
  auto it = pending.find(job->id);
  if (it == pending.end()) return;
  std::unique_ptr<Pending> p = std::move(it->second);
  pending.erase(it);
  if (pending.empty()) done_tsfn.Unref(env);
  if (!job->error.empty()) {
    p->deferred.Reject(Napi::Error::New(env, job->error).Value());
  } else if (job->kind == Job::Allgather) {
    Napi::Array out = Napi::Array::New(env, job->gathered.size());
    for (size_t i = 0; i < job->gathered.size(); i++) out.Set(i, Napi::String::New(env, job->gathered[i]));
    p->deferred.Resolve(out);
  } else {
    p->deferred.Resolve(Napi::Number::New(env, job->seconds));
  }
}

void require_running(Napi::Env env) {
  if (!initialised || finalised)
    throw Napi::Error::New(env, finalised ? "MPI has been finalised" : "MPI is not initialised: call init() first");
}

Napi::Promise enqueue(Napi::Env env, std::unique_ptr<Job> job, std::vector<Napi::Reference<Napi::Value>> keep) {
  auto p = std::make_unique<Pending>(Pending{Napi::Promise::Deferred::New(env), std::move(keep)});
  Napi::Promise promise = p->deferred.Promise();
  job->id = next_id++;
  if (pending.empty()) done_tsfn.Ref(env);
  pending.emplace(job->id, std::move(p));
  comm->submit(job.release());
  return promise;
}

/** Reads a list of same-typed Float32Array or Float64Array buffers into a job. */
std::vector<Napi::Reference<Napi::Value>> take_buffers(const Napi::CallbackInfo& info, Job& job) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray())
    throw Napi::TypeError::New(env, "Expected an array of Float32Array or Float64Array buffers");
  Napi::Array list = info[0].As<Napi::Array>();
  std::vector<Napi::Reference<Napi::Value>> keep;
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value v = list.Get(i);
    if (!v.IsTypedArray()) throw Napi::TypeError::New(env, "Expected buffer " + std::to_string(i) + " to be a Float32Array or Float64Array");
    Napi::TypedArray t = v.As<Napi::TypedArray>();
    DType d;
    if (t.TypedArrayType() == napi_float32_array) d = DType::F32;
    else if (t.TypedArrayType() == napi_float64_array) d = DType::F64;
    else throw Napi::TypeError::New(env, "Expected buffer " + std::to_string(i) + " to be a Float32Array or Float64Array");
    if (i == 0) job.dtype = d;
    else if (d != job.dtype) throw Napi::TypeError::New(env, "Expected every buffer of one call to have the same type");
    char* base = static_cast<char*>(t.ArrayBuffer().Data());
    job.buffers.push_back(base + t.ByteOffset());
    job.lengths.push_back(t.ElementLength());
    keep.push_back(Napi::Persistent(v));
  }
  return keep;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (initialised) throw Napi::Error::New(env, "MPI is already initialised in this process");
  double timeout = 300;
  int poll_us = 50;
  if (info.Length() > 0 && info[0].IsObject()) {
    Napi::Object o = info[0].As<Napi::Object>();
    if (o.Has("timeoutSeconds")) timeout = o.Get("timeoutSeconds").ToNumber().DoubleValue();
    if (o.Has("pollMicroseconds")) poll_us = o.Get("pollMicroseconds").ToNumber().Int32Value();
  }
  if (!(timeout > 0)) throw Napi::RangeError::New(env, "Expected timeoutSeconds > 0");
  if (poll_us < 0 || poll_us > 1000000) throw Napi::RangeError::New(env, "Expected pollMicroseconds in [0, 1000000]");
  done_tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                            "vgg_mpi", 0, 1);
  done_tsfn.Unref(env);
  comm = new Communicator();
  vggmpi::WorldInfo w = comm->start(timeout, poll_us, [](Job* job) {
    if (done_tsfn.NonBlockingCall(job, settle) != napi_ok) delete job;
  });
  if (!w.error.empty()) {
    done_tsfn.Release();
    throw Napi::Error::New(env, w.error);
  }
  initialised = true;
  snprintf(exit_prefix, sizeof exit_prefix, "vgg (rank %d of %d on %s): ", w.rank, w.size, w.host.c_str());
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigterm;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  Napi::Object out = Napi::Object::New(env);
  out.Set("rank", w.rank);
  out.Set("size", w.size);
  out.Set("host", w.host);
  out.Set("library", w.library);
  return out;
}

Napi::Value Allreduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_running(env);
  auto job = std::make_unique<Job>();
  job->kind = Job::Allreduce;
  auto keep = take_buffers(info, *job);
  std::string op = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "sum";
  if (op == "sum") job->op = ReduceOp::Sum;
  else if (op == "min") job->op = ReduceOp::Min;
  else if (op == "max") job->op = ReduceOp::Max;
  else throw Napi::RangeError::New(env, "Expected the reduction to be \"sum\", \"min\" or \"max\" but received \"" + op + "\"");
  return enqueue(env, std::move(job), std::move(keep));
}

Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_running(env);
  auto job = std::make_unique<Job>();
  job->kind = Job::Broadcast;
  auto keep = take_buffers(info, *job);
  if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(env, "Expected a root rank");
  job->root = info[1].As<Napi::Number>().Int32Value();
  return enqueue(env, std::move(job), std::move(keep));
}

Napi::Value Allgather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_running(env);
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "Expected a string");
  auto job = std::make_unique<Job>();
  job->kind = Job::Allgather;
  job->text = info[0].As<Napi::String>().Utf8Value();
  return enqueue(env, std::move(job), {});
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_running(env);
  auto job = std::make_unique<Job>();
  job->kind = Job::Barrier;
  return enqueue(env, std::move(job), {});
}

Napi::Value Abort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_running(env);
  int code = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1;
  comm->abort(code);
  return env.Undefined();
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_running(env);
  if (!pending.empty()) throw Napi::Error::New(env, "Cannot finalise MPI while collectives are pending");
  comm->finalize();
  finalised = true;
  done_tsfn.Release();
  return env.Undefined();
}

Napi::Value SetExitNote(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "Expected a string");
  std::string s = info[0].As<Napi::String>().Utf8Value();
  int next = 1 - exit_note_index.load();
  snprintf(exit_notes[next], sizeof exit_notes[next], "%s", s.c_str());
  exit_note_index.store(next);
  return info.Env().Undefined();
}

Napi::Object Register(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("allreduce", Napi::Function::New(env, Allreduce));
  exports.Set("broadcast", Napi::Function::New(env, Broadcast));
  exports.Set("allgather", Napi::Function::New(env, Allgather));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  exports.Set("abort", Napi::Function::New(env, Abort));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  exports.Set("setExitNote", Napi::Function::New(env, SetExitNote));
  return exports;
}

}  // namespace

NODE_API_MODULE(vgg_mpi, Register)
