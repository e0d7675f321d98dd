// The native entry point: every function the addon exports, in one list, each run inside a
// call frame that turns any failure into a JS error naming the function.
#include <malloc.h>
#include <omp.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>

#include "conv.h"
#include "conv_int8.h"
#include "eltwise.h"
#include "loss.h"
#include "optim.h"
#include "pool.h"

namespace fcn {

EnvState& state_of(Napi::Env env) {
  EnvState* s = env.GetInstanceData<EnvState>();
  if (!s) throw std::logic_error("the addon's state is missing");
  return *s;
}

namespace {

// Threads beyond this are a mistake (each costs a stack), not a configuration.
constexpr int64_t kMaxThreads = 1024;

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  omp_set_num_threads(int(read_int(info[0], "count", 1, kMaxThreads)));
  return info.Env().Undefined();
}

const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  const dnnl_version_t* v = dnnl_version();
  o.Set("onednnVersion", std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch));
  o.Set("isa", isa_name(dnnl::get_effective_cpu_isa()));
  o.Set("threads", omp_get_max_threads());
  o.Set("cpuRuntime", v->cpu_runtime == DNNL_RUNTIME_OMP ? "openmp" : v->cpu_runtime == DNNL_RUNTIME_TBB ? "tbb" : "other");
  return o;
}

Napi::Value PoolStats(const Napi::CallbackInfo& info) {
  const EnvState& s = frame().state;
  auto o = Napi::Object::New(info.Env());
  o.Set("liveBytes", double(s.pool->live_bytes()));
  o.Set("liveBuffers", double(s.pool->live_buffers()));
  o.Set("pooledBytes", double(s.pool->idle_bytes()));
  o.Set("pooledBuffers", double(s.pool->idle_buffers()));
  o.Set("primitives", double(s.primitives.size()));
  return o;
}

// poolTrim(clearPrimitives = false): frees every idle buffer (and cached primitive).
Napi::Value PoolTrim(const Napi::CallbackInfo& info) {
  const bool primitives = info[0].IsUndefined() ? false : read_bool(info[0], "clearPrimitives");
  EnvState& s = frame().state;
  s.pool->trim();
  if (primitives) s.primitives.clear();
  // What the pool let go goes back to the system now (see keep_large_blocks_in_heap).
  malloc_trim(0);
  return info.Env().Undefined();
}

// Behind every environment's cache, oneDNN keeps a process-wide one of its own (1024 primitives
// by default), which would hold on to what ours let go: it gets the same bound (the last one
// set in any thread).
void bound_onednn_cache(int64_t primitives) { dnnl::set_primitive_cache_capacity(int(std::min<int64_t>(primitives, INT32_MAX))); }

// setCacheLimits({poolBytes?, primitives?}) → the limits in force. Lowering a limit releases
// what is over it at once.
Napi::Value SetCacheLimits(const Napi::CallbackInfo& info) {
  Napi::Object o = options_arg(info, 0);
  EnvState& s = frame().state;
  const Napi::Value pool_bytes = o.Get("poolBytes"), primitives = o.Get("primitives");
  const bool set_pool = !pool_bytes.IsUndefined() && !pool_bytes.IsNull(), set_primitives = !primitives.IsUndefined() && !primitives.IsNull();
  const int64_t pool_limit = set_pool ? read_int(pool_bytes, "poolBytes", 0, kMaxSafeInteger) : 0;
  const int64_t primitive_limit = set_primitives ? read_int(primitives, "primitives", 0, kMaxSafeInteger) : int64_t(s.primitives.limit());
  if (set_pool) s.pool->set_idle_limit(size_t(pool_limit));
  s.primitives.set_limit(size_t(primitive_limit));
  if (set_primitives) bound_onednn_cache(primitive_limit);
  auto out = Napi::Object::New(info.Env());
  out.Set("poolBytes", double(s.pool->idle_limit()));
  out.Set("primitives", double(s.primitives.limit()));
  return out;
}

// glibc maps blocks over its threshold afresh and unmaps them at free, and hands the top of
// its heap back once 128 KiB of it is free: a JS array of 512² logits (22 MB) made and
// collected every image then faults in 5,400 new pages each time. Blocks up to 32 MB (glibc's
// largest threshold) stay in the heap to be reused warm; an explicit poolTrim hands free heap
// memory back (malloc_trim), so what is idle stays bounded by when the caller trims.
void keep_large_blocks_in_heap() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

using NativeFn = Napi::Value (*)(const Napi::CallbackInfo&);
struct Export {
  const char* name;
  NativeFn fn;
};

// The addon's functions (src/engine/binding.ts types the same list, and
// test/engine/exports.test.ts checks that the two agree).
constexpr Export kExports[] = {
    {"fromArray", FromArray},
    {"writeArray", WriteArray},
    {"view", View},
    {"zeros", Zeros},
    {"reorder", Reorder},
    {"permute", Permute},
    {"poolStats", PoolStats},
    {"poolTrim", PoolTrim},
    {"setCacheLimits", SetCacheLimits},
    {"convForward", ConvForward},
    {"convBackwardData", ConvBackwardData},
    {"convBackwardWeights", ConvBackwardWeights},
    {"convForwardInt8", ConvForwardInt8},
    {"maxPoolForward", MaxPoolForward},
    {"maxPoolBackward", MaxPoolBackward},
    {"reluForward", ReluForward},
    {"reluBackward", ReluBackward},
    {"add", Add},
    {"scale", Scale},
    {"dropoutForward", DropoutForward},
    {"dropoutBackward", DropoutBackward},
    {"cropPad", CropPad},
    {"argmax", Argmax},
    {"softmaxCrossEntropy", SoftmaxCrossEntropy},
    {"adamUpdate", AdamUpdate},
    {"adamUpdateAll", AdamUpdateAll},
    {"sgdUpdate", SgdUpdate},
    {"sumSquares", SumSquares},
    {"absMax", AbsMax},
    {"setThreads", SetThreads},
    {"info", Info},
};

Napi::Value Call(const Napi::CallbackInfo& info) {
  const Export& e = *static_cast<const Export*>(info.Data());
  return guarded(info.Env(), e.name, [&] { return e.fn(info); });
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Deleted with the environment: a worker's state goes when the worker does.
  env.SetInstanceData(new EnvState());
  static std::once_flag onednn_cache_bounded;
  std::call_once(onednn_cache_bounded, [] {
    bound_onednn_cache(PrimitiveCache::kDefaultLimit);
    keep_large_blocks_in_heap();
  });
  Tensor::Init(env, exports);
  for (const Export& e : kExports) exports.Set(e.name, Napi::Function::New<Call>(env, e.name, const_cast<Export*>(&e)));
  return exports;
}

}  // namespace fcn

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return fcn::Init(env, exports); }
NODE_API_MODULE(fcn_native, InitModule)
