// Data-parallel training's link between processes: a small binding over the system's MPI C
// library (Open MPI, or any MPI-3 library), built as an addon of its own (fcn_mpi) and only
// where MPI is installed, so that the engine never depends on it.
//
// What it offers is what synchronous data parallelism needs: the rank and size, in-place sum
// allreduce of float32 (optionally carried as bfloat16 with float32 arithmetic at every
// addition) and float64, the same started without blocking (MPI_Iallreduce) with test and
// wait, barrier, broadcast, abort and finalize, and a checksum to compare arrays across ranks.
//
// Every wait has a deadline: a rank that stops answering makes the others fail with an error
// instead of hanging for ever (Open MPI's mpirun already ends the job when a rank dies; the
// deadline covers a rank that is alive but stuck).
#include <dlfcn.h>
#include <malloc.h>
#include <mpi.h>
#include <napi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "args.h"
#include "bf16.h"

namespace {

using fcn::bf16_to_f32;
using fcn::f32_to_bf16;
using fcn::options_arg;
using fcn::opt_num_in;
using fcn::read_int;
using fcn::throw_error;
using fcn::throw_range_error;
using fcn::throw_type_error;

using Clock = std::chrono::steady_clock;

// The reduction MPI applies hop by hop to bfloat16 data: each pair is added in float32 and
// rounded once, so a sum over N ranks carries at most N-1 bf16 roundings (the wire format
// halves the bytes; the arithmetic is float32's).
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; i++) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}

// ---- state ----------------------------------------------------------------------------
// What the reduced data is and where it goes once MPI is done with it.
enum class Kind { f32, f64, bf16_raw, f32_as_bf16, bytes };

struct Request {
  int64_t id = 0;
  std::string what;  // for messages: "allreduce of 1048576 float32 values (4.0 MB)"
  MPI_Request req = MPI_REQUEST_NULL;
  bool done = false;
  std::string error;
  Kind kind = Kind::f32;
  void* data = nullptr;  // the JS array's memory
  size_t count = 0;      // elements of the JS array
  size_t bytes = 0;      // its bytes
  double scale = 1;
  std::vector<uint16_t> staging;  // bf16 copy of a float32 array while it travels
  // Issues the MPI call; queued requests are started in the order they were made.
  std::function<int(Request&)> start;
  bool started = false;
  // Keeps the JS array alive while MPI reads and writes it. Created and released on the
  // thread that loaded the addon only (node-api references are not thread-safe).
  Napi::Reference<Napi::Value> keep;
};

// Never destroyed: a std::thread still joinable at static destruction would terminate the
// process, and MPI may outlive the JS environment's teardown.
struct Global {
  bool initialized = false, finalized = false, aborted = false;
  int rank = 0, size = 1, provided = MPI_THREAD_SINGLE;
  MPI_Op bf16_op = MPI_OP_NULL;
  std::string preload;  // what making libmpi's symbols global did
  std::thread* progress = nullptr;
  napi_env owner = nullptr;  // the environment that called init (its teardown stops the thread)
  bool stop = false;
  int poll_us = 100;
  double timeout_s = 300;
  int64_t next_id = 1;
  std::map<int64_t, std::shared_ptr<Request>> requests;
};
Global& G() {
  static Global* g = new Global();
  return *g;
}

// MPI is asked for MPI_THREAD_SERIALIZED: any thread may call it, one at a time. This lock
// makes it one at a time (the progress thread's tests, JS's calls) and guards the request
// table; the condition variable wakes the progress thread when there is work.
std::mutex mu;
std::condition_variable work;

std::string mpi_error_string(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(buf, size_t(len)) + " (MPI error " + std::to_string(rc) + ")";
}

void check_rc(Napi::Env env, const char* op, int rc) {
  if (rc != MPI_SUCCESS) throw_error(mpi_error_string(rc));
}

std::string mb(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", double(bytes) / 1e6);
  return buf;
}

void require_running(Napi::Env env, const char* op) {
  const Global& g = G();
  if (g.aborted) throw_error("MPI was aborted");
  if (g.finalized) throw_error("MPI is finalized");
  if (!g.initialized) throw_error("MPI is not initialised: call init() first");
}

// ---- arguments ----------------------------------------------------------------------
struct ArrayArg {
  Napi::TypedArray array;
  napi_typedarray_type type;
  void* data;
  size_t count;
  size_t bytes;
};

// A typed array argument over live (not detached) memory, of one of `allowed`.
ArrayArg array_arg(const Napi::CallbackInfo& info, size_t i, std::initializer_list<napi_typedarray_type> allowed, const char* allowed_names) {
  if (info.Length() <= i || !info[i].IsTypedArray()) throw_type_error(std::string("the data must be a ") + allowed_names);
  Napi::TypedArray a = info[i].As<Napi::TypedArray>();
  const napi_typedarray_type t = a.TypedArrayType();
  if (std::find(allowed.begin(), allowed.end(), t) == allowed.end()) throw_type_error(std::string("the data must be a ") + allowed_names);
  Napi::ArrayBuffer buf = a.ArrayBuffer();
  if (buf.IsDetached()) throw_type_error("the data's ArrayBuffer is detached");
  const size_t bytes = a.ByteLength();
  // One MPI call carries at most INT_MAX elements; buckets are far smaller.
  if (a.ElementLength() > size_t(INT_MAX)) throw_range_error(std::to_string(a.ElementLength()) + " elements are more than one MPI call carries (" + std::to_string(INT_MAX) + ")");
  return {a, t, static_cast<uint8_t*>(buf.Data()) + a.ByteOffset(), a.ElementLength(), bytes};
}

// ---- requests -------------------------------------------------------------------------
// The result of a finished request into the JS array: bf16 back to float32, then the scale.
void complete(Request& r) {
  if (r.kind == Kind::f32_as_bf16) {
    float* out = static_cast<float*>(r.data);
    const float s = float(r.scale);
    for (size_t i = 0; i < r.count; i++) out[i] = bf16_to_f32(r.staging[i]) * s;
    std::vector<uint16_t>().swap(r.staging);
  } else if (r.scale != 1) {
    if (r.kind == Kind::f32) {
      float* p = static_cast<float*>(r.data);
      const float s = float(r.scale);
      for (size_t i = 0; i < r.count; i++) p[i] *= s;
    } else if (r.kind == Kind::f64) {
      double* p = static_cast<double*>(r.data);
      for (size_t i = 0; i < r.count; i++) p[i] *= r.scale;
    } else if (r.kind == Kind::bf16_raw) {
      uint16_t* p = static_cast<uint16_t*>(r.data);
      const float s = float(r.scale);
      for (size_t i = 0; i < r.count; i++) p[i] = f32_to_bf16(bf16_to_f32(p[i]) * s);
    }
  }
  r.done = true;
}

// Tests every request in flight once (the lock held). MPI's non-blocking collectives advance
// only inside MPI calls, so something has to keep calling: the progress thread, or a wait.
// MPI calls in flight at once: one. Each large collective takes temporary buffers of its
// message's size, and two of Open MPI's non-blocking allreduces in flight together moved a
// third of what one at a time did (25 MB buckets over shared memory: 0.65 against 2.45 GB/s,
// measured). The next one is queued, ready to start the moment the one before ends.
constexpr int kMaxInFlight = 1;

// Starts queued requests, oldest first, while fewer than kMaxInFlight are in flight: every
// rank makes the same calls in the same order, so every rank starts them in the same order.
void start_queued_locked() {
  int in_flight = 0;
  for (auto& [id, r] : G().requests) in_flight += r->started && !r->done ? 1 : 0;
  for (auto& [id, r] : G().requests) {
    if (r->started || r->done) continue;
    if (in_flight >= kMaxInFlight) break;
    r->started = true;
    const int rc = r->start(*r);
    if (rc != MPI_SUCCESS) {
      r->error = mpi_error_string(rc);
      r->done = true;
    } else {
      in_flight++;
    }
  }
}

void progress_locked() {
  for (auto& [id, r] : G().requests) {
    if (r->done || !r->started) continue;
    int flag = 0;
    const int rc = MPI_Test(&r->req, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      r->error = mpi_error_string(rc);
      r->done = true;
    } else if (flag) {
      complete(*r);
    }
  }
  start_queued_locked();
}

bool any_in_flight_locked() {
  for (auto& [id, r] : G().requests)
    if (!r->done) return true;
  return false;
}

// Drives the requests in flight while JS computes (the backward pass): a test every poll
// interval, asleep otherwise. A sleep between tests keeps it from taking a core from the
// compute threads; the interval trades that against how late a finished step is noticed.
void progress_loop() {
  std::unique_lock<std::mutex> lock(mu);
  Global& g = G();
  while (!g.stop) {
    if (!any_in_flight_locked()) {
      work.wait(lock);
      continue;
    }
    progress_locked();
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::microseconds(g.poll_us));
    lock.lock();
  }
}

std::shared_ptr<Request> find_request(Napi::Env env, const char* op, int64_t id) {
  auto it = G().requests.find(id);
  if (it == G().requests.end()) throw_range_error("no pending request " + std::to_string(id) + " (each request is waited for once)");
  return it->second;
}

// Waits for one request (the lock held on entry and exit), testing every request in flight
// back to back, as MPI_Wait does: a large allreduce advances only inside MPI calls, so any
// sleep between tests is time the transport stands still. The lock is let go between tests
// (the progress thread and nothing else may take it) and the thread yields its core to any
// other that wants it. After a second without any request finishing, a rank is waiting for
// another that computes (validation, a checkpoint): tests then sleep between them, so the
// wait does not take a core for long. Past the deadline: an error.
void wait_locked(Napi::Env, const char*, std::unique_lock<std::mutex>& lock, Request& r, double timeout_s) {
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  auto last_progress = start;
  size_t in_flight = G().requests.size();
  while (true) {
    progress_locked();
    if (r.done) break;
    const auto now = Clock::now();
    size_t still = 0;
    for (auto& [id, q] : G().requests) still += q->done ? 0 : 1;
    if (still < in_flight) last_progress = now;
    in_flight = still;
    if (now >= deadline) {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%.0f", timeout_s);
      throw_error(r.what + " did not complete within " + secs + " s: another rank has stopped or is stuck (FCN_MPI_TIMEOUT sets the limit in seconds)");
    }
    lock.unlock();
    if (now - last_progress < std::chrono::seconds(1)) sched_yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(std::min(G().poll_us, 1000)));
    lock.lock();
  }
}

// Removes a finished request from the table (the caller holds the lock) and reports its error.
void retire_locked(Napi::Env env, const char* op, const std::shared_ptr<Request>& r) {
  G().requests.erase(r->id);
  if (!r->error.empty()) throw_error(r->what + " failed: " + r->error);
}

double timeout_of(Napi::Env env, const char* op, const Napi::Object& o) { return opt_num_in(o, "timeoutSeconds", G().timeout_s, 0, 1e9); }

// MPI must not be handed memory that a request in flight still uses.
void require_unshared(Napi::Env env, const char* op, const void* data, size_t bytes) {
  const uint8_t* a = static_cast<const uint8_t*>(data);
  for (auto& [id, r] : G().requests) {
    if (r->done || bytes == 0 || r->bytes == 0) continue;
    const uint8_t* b = static_cast<const uint8_t*>(r->data);
    if (a < b + r->bytes && b < a + bytes) throw_range_error("the data overlaps that of pending request " + std::to_string(id) + ": wait for it first");
  }
}

// Queues a request (the lock held) and returns it, started if few enough are in flight;
// `start` issues the MPI call. `keep` is the JS array MPI uses (null for a barrier).
std::shared_ptr<Request> start_locked(Napi::Env env, const char* op, std::shared_ptr<Request> r, const Napi::Value* keep, std::function<int(Request&)> start) {
  require_unshared(env, op, r->data, r->bytes);
  r->id = G().next_id++;
  r->start = std::move(start);
  if (keep) r->keep = Napi::Persistent(*keep);
  G().requests.emplace(r->id, r);
  start_queued_locked();
  if (r->done && !r->error.empty()) {
    G().requests.erase(r->id);
    throw_error(r->error);
  }
  work.notify_all();
  return r;
}

// allreduce/iallreduce(data, {precision, scale}): the request, started.
std::shared_ptr<Request> start_allreduce(const Napi::CallbackInfo& info, const char* op) {
  Napi::Env env = info.Env();
  require_running(env, op);
  ArrayArg a = array_arg(info, 0, {napi_float32_array, napi_float64_array, napi_uint16_array}, "Float32Array, Float64Array or Uint16Array (bfloat16 bits)");
  Napi::Object o = options_arg(info, 1);
  const double scale = opt_num_in(o, "scale", 1, -3.4e38, 3.4e38);
  const std::string precision = fcn::opt_choice(o, "precision", "float32", {"float32", "bfloat16"});
  auto r = std::make_shared<Request>();
  r->data = a.data;
  r->count = a.count;
  r->bytes = a.bytes;
  r->scale = scale;
  const char* type_name = "float32";
  if (a.type == napi_float64_array) {
    if (precision == "bfloat16") throw_type_error("a Float64Array is reduced in float64: precision 'bfloat16' applies to float32 data");
    r->kind = Kind::f64;
    type_name = "float64";
  } else if (a.type == napi_uint16_array) {
    r->kind = Kind::bf16_raw;
    type_name = "bfloat16";
  } else {
    r->kind = precision == "bfloat16" ? Kind::f32_as_bf16 : Kind::f32;
    type_name = precision == "bfloat16" ? "float32 carried as bfloat16" : "float32";
  }
  r->what = std::string(op) + " of " + std::to_string(a.count) + " " + type_name + " values (" + mb(a.bytes) + ")";
  if (r->kind == Kind::f32_as_bf16) {
    // Converted outside the lock would be better for the progress thread, but the lock is
    // held only by short tests: converting a 25 MB bucket takes a few milliseconds.
    r->staging.resize(a.count);
    const float* src = static_cast<const float*>(a.data);
    for (size_t i = 0; i < a.count; i++) r->staging[i] = f32_to_bf16(src[i]);
  }
  const Napi::Value data = info[0];
  return start_locked(env, op, r, &data, [](Request& q) {
    const Global& g = G();
    const int n = int(q.count);
    switch (q.kind) {
      case Kind::f32: return MPI_Iallreduce(MPI_IN_PLACE, q.data, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &q.req);
      case Kind::f64: return MPI_Iallreduce(MPI_IN_PLACE, q.data, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &q.req);
      case Kind::bf16_raw: return MPI_Iallreduce(MPI_IN_PLACE, q.data, n, MPI_UINT16_T, g.bf16_op, MPI_COMM_WORLD, &q.req);
      case Kind::f32_as_bf16: return MPI_Iallreduce(MPI_IN_PLACE, q.staging.data(), n, MPI_UINT16_T, g.bf16_op, MPI_COMM_WORLD, &q.req);
      default: return int(MPI_ERR_OTHER);
    }
  });
}

// ---- libmpi's symbols -----------------------------------------------------------------
// Open MPI loads its components (transports, collectives) with dlopen, and they resolve
// libmpi's symbols globally. A Node addon is loaded with RTLD_LOCAL, so libmpi's symbols are
// not global and the components fail to load ("undefined symbol: ompi_…"). Reopening the very
// libmpi this addon was linked against with RTLD_GLOBAL (RTLD_NOLOAD: no second copy) fixes
// that; the soname is the fallback where dladdr cannot say.
std::string make_libmpi_global() {
  Dl_info where{};
  if (dladdr(reinterpret_cast<void*>(&MPI_Init_thread), &where) && where.dli_fname) {
    if (dlopen(where.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD)) return std::string("reopened ") + where.dli_fname + " with RTLD_GLOBAL";
  }
  for (const char* name : {"libmpi.so.40", "libmpi.so.12", "libmpi.so"}) {
    if (dlopen(name, RTLD_NOW | RTLD_GLOBAL)) return std::string("opened ") + name + " with RTLD_GLOBAL";
  }
  const char* why = dlerror();
  return std::string("could not make libmpi's symbols global: ") + (why ? why : "unknown");
}

std::string library_version() {
  char buf[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  if (MPI_Get_library_version(buf, &len) != MPI_SUCCESS) return "unknown";
  std::string s(buf, size_t(len));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0' || s.back() == ' ')) s.pop_back();
  return s;
}

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "single";
    case MPI_THREAD_FUNNELED: return "funneled";
    case MPI_THREAD_SERIALIZED: return "serialized";
    case MPI_THREAD_MULTIPLE: return "multiple";
    default: return "unknown";
  }
}

// ---- exports --------------------------------------------------------------------------
// libraryVersion() → the MPI library's own description (callable before init).
Napi::Value LibraryVersion(const Napi::CallbackInfo& info) {
  int major = 0, minor = 0;
  MPI_Get_version(&major, &minor);
  auto o = Napi::Object::New(info.Env());
  o.Set("library", library_version());
  o.Set("standard", std::to_string(major) + "." + std::to_string(minor));
  o.Set("preload", G().preload);
  return o;
}

// init({pollMicros = 100, timeoutSeconds = 300}) → {rank, size, threadLevel, progressThread}
Napi::Value Init(const Napi::CallbackInfo& info) {
  const char* op = "init";
  Napi::Env env = info.Env();
  Napi::Object o = options_arg(info, 0);
  const int poll = int(fcn::opt_int(o, "pollMicros", 100, 1, 1000000));
  const double timeout = opt_num_in(o, "timeoutSeconds", 300, 0, 1e9);
  Global& g = G();
  std::unique_lock<std::mutex> lock(mu);
  if (g.initialized || g.finalized || g.aborted) throw_error("MPI can be initialised once per process");
  int already = 0;
  MPI_Initialized(&already);
  if (already) throw_error("MPI was initialised by something else in this process");
  // Open MPI's collectives take temporary buffers the size of their message (a 25 MB bucket)
  // on every call. glibc serves such blocks by fresh mappings, returned at free, so every page
  // of them was faulted in again on every call: that cost more CPU than the transfer itself.
  // Kept in the heap instead (a rank's, not the library's, choice: only ranks load this).
  if (mallopt(M_MMAP_THRESHOLD, 256 << 20) == 0) mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  int provided = MPI_THREAD_SINGLE;
  check_rc(env, op, MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided));
  g.initialized = true;
  g.owner = env;
  g.provided = provided;
  g.poll_us = poll;
  g.timeout_s = timeout;
  // Errors come back as return codes (turned into JS errors) instead of ending the process.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check_rc(env, op, MPI_Comm_rank(MPI_COMM_WORLD, &g.rank));
  check_rc(env, op, MPI_Comm_size(MPI_COMM_WORLD, &g.size));
  check_rc(env, op, MPI_Op_create(&bf16_sum, 1, &g.bf16_op));
  // Without MPI_THREAD_SERIALIZED only the calling thread may use MPI: requests then advance
  // in test() and wait() alone, with less overlap but the same results.
  if (provided >= MPI_THREAD_SERIALIZED) g.progress = new std::thread(progress_loop);
  auto out = Napi::Object::New(env);
  out.Set("rank", g.rank);
  out.Set("size", g.size);
  out.Set("threadLevel", thread_level_name(provided));
  out.Set("progressThread", g.progress != nullptr);
  return out;
}

// state() → {initialized, finalized, aborted, rank, size, pending}
Napi::Value State(const Napi::CallbackInfo& info) {
  std::unique_lock<std::mutex> lock(mu);
  const Global& g = G();
  auto o = Napi::Object::New(info.Env());
  o.Set("initialized", g.initialized);
  o.Set("finalized", g.finalized);
  o.Set("aborted", g.aborted);
  o.Set("rank", g.rank);
  o.Set("size", g.size);
  o.Set("pending", double(g.requests.size()));
  o.Set("timeoutSeconds", g.timeout_s);
  return o;
}

// allreduce(data, {precision = 'float32', scale = 1, timeoutSeconds}): sums `data` over every
// rank, in place, then multiplies by `scale`; returns when done.
Napi::Value Allreduce(const Napi::CallbackInfo& info) {
  const char* op = "allreduce";
  Napi::Env env = info.Env();
  std::unique_lock<std::mutex> lock(mu);
  const double timeout = timeout_of(env, op, options_arg(info, 1));
  auto r = start_allreduce(info, op);
  // Past the deadline the request stays in the table: MPI may still write the array.
  wait_locked(env, op, lock, *r, timeout);
  retire_locked(env, op, r);
  return env.Undefined();
}

// iallreduce(data, {precision, scale}) → a request id. The array must not be read or written
// until wait(id) returns (test(id) says whether it would return at once).
Napi::Value Iallreduce(const Napi::CallbackInfo& info) {
  const char* op = "iallreduce";
  std::unique_lock<std::mutex> lock(mu);
  auto r = start_allreduce(info, op);
  return Napi::Number::New(info.Env(), double(r->id));
}

// test(id) → whether the request is complete (its result written); advances every request.
Napi::Value Test(const Napi::CallbackInfo& info) {
  const char* op = "test";
  Napi::Env env = info.Env();
  const int64_t id = read_int(info[0], "id", 1, INT64_C(1) << 53);
  std::unique_lock<std::mutex> lock(mu);
  require_running(env, op);
  auto r = find_request(env, op, id);
  progress_locked();
  if (r->done && !r->error.empty()) retire_locked(env, op, r);
  return Napi::Boolean::New(env, r->done);
}

// wait(id, {timeoutSeconds}) → when the request is complete; an error past the deadline.
Napi::Value Wait(const Napi::CallbackInfo& info) {
  const char* op = "wait";
  Napi::Env env = info.Env();
  const int64_t id = read_int(info[0], "id", 1, INT64_C(1) << 53);
  Napi::Object o = options_arg(info, 1);
  const double timeout = timeout_of(env, op, o);
  std::unique_lock<std::mutex> lock(mu);
  require_running(env, op);
  auto r = find_request(env, op, id);
  wait_locked(env, op, lock, *r, timeout);
  retire_locked(env, op, r);
  return env.Undefined();
}

// barrier({timeoutSeconds}): returns when every rank has called it.
Napi::Value Barrier(const Napi::CallbackInfo& info) {
  const char* op = "barrier";
  Napi::Env env = info.Env();
  Napi::Object o = options_arg(info, 0);
  const double timeout = timeout_of(env, op, o);
  std::unique_lock<std::mutex> lock(mu);
  require_running(env, op);
  auto r = std::make_shared<Request>();
  r->what = "barrier";
  r->kind = Kind::bytes;
  r = start_locked(env, op, r, nullptr, [](Request& q) { return MPI_Ibarrier(MPI_COMM_WORLD, &q.req); });
  wait_locked(env, op, lock, *r, timeout);
  retire_locked(env, op, r);
  return env.Undefined();
}

// broadcast(data, root, {timeoutSeconds}): every rank's `data` (any typed array, same byte
// length everywhere) becomes root's.
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  const char* op = "broadcast";
  Napi::Env env = info.Env();
  std::unique_lock<std::mutex> lock(mu);
  require_running(env, op);
  ArrayArg a = array_arg(info, 0,
                         {napi_int8_array, napi_uint8_array, napi_uint8_clamped_array, napi_int16_array, napi_uint16_array, napi_int32_array, napi_uint32_array,
                          napi_float32_array, napi_float64_array, napi_bigint64_array, napi_biguint64_array},
                         "typed array");
  if (a.bytes > size_t(INT_MAX)) throw_range_error(mb(a.bytes) + " is more than one MPI call carries (2 GiB)");
  const int root = int(read_int(info[1], "root", 0, G().size - 1));
  const double timeout = timeout_of(env, op, options_arg(info, 2));
  auto r = std::make_shared<Request>();
  r->what = "broadcast of " + mb(a.bytes) + " from rank " + std::to_string(root);
  r->kind = Kind::bytes;
  r->data = a.data;
  r->bytes = a.bytes;
  r->count = a.count;
  const Napi::Value data = info[0];
  r = start_locked(env, op, r, &data, [root](Request& q) { return MPI_Ibcast(q.data, int(q.bytes), MPI_BYTE, root, MPI_COMM_WORLD, &q.req); });
  wait_locked(env, op, lock, *r, timeout);
  retire_locked(env, op, r);
  return env.Undefined();
}

// Stops the progress thread (the lock not held).
void stop_progress() {
  Global& g = G();
  {
    std::lock_guard<std::mutex> lock(mu);
    g.stop = true;
    work.notify_all();
  }
  if (g.progress && g.progress->joinable()) g.progress->join();
}

// abort(code = 1): ends every rank of the job (MPI_Abort); does not return.
Napi::Value Abort(const Napi::CallbackInfo& info) {
  const char* op = "abort";
  Napi::Env env = info.Env();
  const int code = info.Length() == 0 || info[0].IsUndefined() ? 1 : int(read_int(info[0], "code", 0, 255));
  require_running(env, op);
  std::fflush(stdout);
  std::fflush(stderr);
  // The progress thread may sit in an MPI call: abort from here under the lock.
  std::lock_guard<std::mutex> lock(mu);
  G().aborted = true;
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort returned: end this process at least
}

// finalize(): shuts MPI down (every rank must call it before exiting normally).
Napi::Value Finalize(const Napi::CallbackInfo& info) {
  const char* op = "finalize";
  Napi::Env env = info.Env();
  require_running(env, op);
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!G().requests.empty()) throw_error(std::to_string(G().requests.size()) + " requests are still pending: wait for them first");
  }
  stop_progress();
  std::lock_guard<std::mutex> lock(mu);
  Global& g = G();
  if (g.bf16_op != MPI_OP_NULL) MPI_Op_free(&g.bf16_op);
  g.finalized = true;
  check_rc(env, op, MPI_Finalize());
  return env.Undefined();
}

// checksum(data) → 16 hex digits: a hash of the array's bytes, the same on every machine for
// the same bytes (to check that ranks hold identical weights). Four independent lanes of a
// multiply-xor hash so that a 500 MB model takes a fraction of a second.
Napi::Value Checksum(const Napi::CallbackInfo& info) {
  const char* op = "checksum";
  ArrayArg a = array_arg(info, 0,
                         {napi_int8_array, napi_uint8_array, napi_uint8_clamped_array, napi_int16_array, napi_uint16_array, napi_int32_array, napi_uint32_array,
                          napi_float32_array, napi_float64_array, napi_bigint64_array, napi_biguint64_array},
                         "typed array");
  const uint8_t* p = static_cast<const uint8_t*>(a.data);
  const uint64_t prime = 0x100000001b3ULL;
  uint64_t lane[4] = {0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL, 0x9e3779b97f4a7c15ULL, 0xc2b2ae3d27d4eb4fULL};
  size_t i = 0;
  for (; i + 32 <= a.bytes; i += 32) {
    for (int k = 0; k < 4; k++) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * k, 8);
      lane[k] = (lane[k] ^ w) * prime;
    }
  }
  uint64_t h = 0x27d4eb2f165667c5ULL ^ uint64_t(a.bytes);
  for (; i < a.bytes; i++) h = (h ^ p[i]) * prime;
  for (int k = 0; k < 4; k++) h = (h ^ lane[k]) * prime, h ^= h >> 29;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return Napi::String::New(info.Env(), buf);
}

using Fn = Napi::Value (*)(const Napi::CallbackInfo&);
struct Export {
  const char* name;
  Fn fn;
};
// src/engine/mpi.ts types the same list.
constexpr Export kExports[] = {
    {"libraryVersion", LibraryVersion}, {"init", Init},   {"state", State},         {"allreduce", Allreduce}, {"iallreduce", Iallreduce},
    {"test", Test},                     {"wait", Wait},   {"barrier", Barrier},     {"broadcast", Broadcast}, {"abort", Abort},
    {"finalize", Finalize},             {"checksum", Checksum},
};

// Any C++ exception that is not already a JS error becomes one naming the export (none may
// reach node-api, which would end the process).
Napi::Value Call(const Napi::CallbackInfo& info) {
  const Export& e = *static_cast<const Export*>(info.Data());
  fcn::OpScope scope(info.Env(), e.name);
  try {
    return e.fn(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(info.Env(), std::string(e.name) + ": out of memory");
  } catch (const std::exception& ex) {
    throw Napi::Error::New(info.Env(), std::string(e.name) + ": " + ex.what());
  }
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  static std::once_flag preloaded;
  std::call_once(preloaded, [] { G().preload = make_libmpi_global(); });
  // The progress thread must not outlive the process's JS teardown unjoined.
  napi_env self = env;
  env.AddCleanupHook([self] {
    if (G().progress && G().owner == self) stop_progress();
  });
  for (const Export& e : kExports) exports.Set(e.name, Napi::Function::New<Call>(env, e.name, const_cast<Export*>(&e)));
  return exports;
}

}  // namespace

NODE_API_MODULE(fcn_mpi, InitModule)
