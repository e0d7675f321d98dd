// What every op family shares: the oneDNN engine, the per-environment state (buffer pool,
// primitive cache, stream), the call frame that names the running op in errors, argument
// and option checks, and descriptor keys.
#pragma once

#include <napi.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <exception>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

#include "args.h"
#include "bf16.h"
#include "buffers.h"

namespace fcn {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

// One CPU engine for the process: a oneDNN engine is immutable and safe to share between
// threads. Streams are not, so every environment (main thread, each worker) has its own.
dnnl::engine& cpu_engine();

// Every oneDNN primitive descriptor is expensive to create (it picks an implementation);
// ops look theirs up by a key that spells out every shape, layout and parameter. Entries are
// handles (reference-counted), so an op keeps its primitive alive even if the cache evicts it
// while the op runs.
struct CachedPrimitive {
  dnnl::primitive_desc_base pd;
  dnnl::primitive prim;
};

// Least recently used primitives are dropped beyond `limit` entries: every distinct input
// size makes new ones, and a long evaluation over images of many sizes must not keep them all.
class PrimitiveCache {
 public:
  static constexpr size_t kDefaultLimit = 256;
  CachedPrimitive get(const std::string& key, const std::function<CachedPrimitive()>& make);
  void clear();
  void set_limit(size_t limit);
  size_t limit() const { return limit_; }
  size_t size() const { return index_.size(); }

 private:
  using Entry = std::pair<std::string, CachedPrimitive>;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  size_t limit_ = kDefaultLimit;
};

// What the addon keeps per Node environment (the main thread and every worker load their own
// instance): nothing is shared between environments but the engine.
struct EnvState {
  Napi::FunctionReference tensor_ctor;
  // Shared with every tensor: a tensor finalised after its environment's state (at teardown)
  // still returns its buffer to a live pool.
  std::shared_ptr<BufferPool> pool = std::make_shared<BufferPool>();
  PrimitiveCache primitives;
  dnnl::stream stream{cpu_engine()};
  // Set while an op creates a tensor: JS cannot construct one itself.
  bool constructing_tensor = false;
};
EnvState& state_of(Napi::Env env);

class Tensor;

// The op running on this thread. Every export and Tensor method opens one: errors name the op,
// helpers find the environment's state without threading it through every call, and tensors the
// op reads stay pinned (a dispose() from JS during the call — say from an option getter — is
// deferred until the call returns). A thread runs one environment at a time and frames nest
// (a getter may call another export), so the innermost frame is the current one.
class CallFrame {
 public:
  CallFrame(Napi::Env env, const char* op);
  ~CallFrame();
  CallFrame(const CallFrame&) = delete;
  CallFrame& operator=(const CallFrame&) = delete;

  // Names the op in the argument readers' errors (args.h).
  OpScope scope;
  Napi::Env env;
  EnvState& state;
  const char* op;
  std::vector<Tensor*> pinned;
  // Set when the call asks for bfloat16 compute (opt_dtype): with the pinned tensors' dtypes it
  // tells a CPU without bf16 kernels apart from other missing implementations.
  bool bf16_requested = false;

 private:
  CallFrame* outer_;
};
CallFrame& frame();
// Unpins what a frame pinned, completing the dispose() calls it deferred (tensor.cc).
void release_pins(const std::vector<Tensor*>& pinned) noexcept;
inline dnnl::stream& cpu_stream() { return frame().state.stream; }
CachedPrimitive cached(const std::string& key, const std::function<CachedPrimitive()>& make);

// Runs an export or a Tensor method inside a frame named `op`. Errors the op raised itself
// (and JS exceptions from getters it ran) pass through; anything else becomes a JS error
// naming the op — out of memory a RangeError, oneDNN's refusals and other C++ exceptions an
// Error — so that no C++ exception reaches node-api (which would abort the process).
Napi::Value guarded(Napi::Env env, const char* op, const std::function<Napi::Value()>& body);

// Errors: "<op>: <what>" (args.h). TypeError for an argument of the wrong kind or type,
// RangeError for a bad value or size (including shapes that do not fit together).

// Exceptions must not leave an OpenMP parallel region (the runtime would terminate the
// process): code that can throw inside one runs in capture(), and rethrow() after the region
// reports the first exception.
class ParallelErrors {
 public:
  template <typename F>
  void capture(F&& body) noexcept {
    try {
      body();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!first_) first_ = std::current_exception();
    }
  }
  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr first_;
};

// While alive, this thread's float arithmetic flushes denormal inputs and results to zero
// (x86: MXCSR's FTZ and DAZ); its previous mode comes back after, for Node's own maths keeps
// IEEE denormals. Values below 1.2e-38 change nothing a float32 result can show here, and
// arithmetic on them is an order of magnitude slower (a softmax over logits tens apart; Adam's
// moments of weights whose gradients have died away).
class FlushDenormals {
#if defined(__x86_64__) || defined(_M_X64)
 public:
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved_); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  const unsigned saved_;
#endif
};

// Limits on what arguments may describe. Tensors hold at most 2^40 elements (4 TB of float32:
// nothing that can be allocated comes close, and no size or offset computed from them overflows).
// oneDNN's kernels keep spatial sizes, channels, kernel sizes, strides and paddings in 32-bit
// ints, so convolution and pooling geometry is held to that range.
constexpr int64_t kMaxElements = int64_t(1) << 40;
constexpr int64_t kMaxGeometry = INT32_MAX;

// a·b, or a RangeError naming `what` when the product leaves [0, kMaxElements].
int64_t checked_mul(int64_t a, int64_t b, const std::string& what);
// The element count of dims (each ≥ 1), or a RangeError naming `what`.
int64_t checked_numel(const memory::dims& d, const std::string& what);

// A readable, exact key for a memory descriptor: dims, data type and the full layout.
std::string md_key(const memory::desc& md);
std::string dims_key(const memory::dims& d);

// The plain (row-major) layout tag for a rank.
tag plain_tag(int ndims);
memory::desc plain_desc(const memory::dims& dims, dt type);
bool is_plain(const memory::desc& md);

// Every dtype a tensor can hold: its oneDNN type, its name in JS, its element size, and the
// typed array that carries its values in and out (one table in engine.cc, checked at compile time).
struct DTypeInfo {
  dt type;
  const char* name;
  size_t size;
  napi_typedarray_type array;
  const char* array_name;
};
const DTypeInfo* dtype_info(dt type);                       // nullptr: not a tensor dtype
const DTypeInfo* dtype_of_array(napi_typedarray_type kind);  // nullptr: no dtype travels in it
// "a Float32Array, …, or Int32Array": the typed arrays tensors are made from.
std::string typed_array_kinds();

dt parse_dtype(const std::string& s);
const char* dtype_name(dt type);
size_t dtype_size(dt type);

// Arguments (the readers themselves are in args.h): dims and dtypes.
memory::dims read_dims(const Napi::Value& v, const std::string& name);  // 1 to 5 positive sizes
dt opt_dtype(const Napi::Object& o, const char* name, dt fallback, const std::vector<dt>& allowed);

}  // namespace fcn
