// The native entry point: every function the addon exports, in one list.
#include <omp.h>

#include "conv.h"
#include "eltwise.h"
#include "loss.h"
#include "optim.h"
#include "pool.h"

namespace fcn {

static Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber() || info[0].As<Napi::Number>().Int32Value() < 1) throw Napi::TypeError::New(info.Env(), "setThreads: count must be a positive integer");
  omp_set_num_threads(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

static const char* isa_name(dnnl::cpu_isa isa) {
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

static Napi::Value Info(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  const dnnl_version_t* v = dnnl_version();
  o.Set("onednnVersion", std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch));
  o.Set("isa", isa_name(dnnl::get_effective_cpu_isa()));
  o.Set("threads", omp_get_max_threads());
  o.Set("cpuRuntime", v->cpu_runtime == DNNL_RUNTIME_OMP ? "openmp" : v->cpu_runtime == DNNL_RUNTIME_TBB ? "tbb" : "other");
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Tensor::Init(env, exports);
  exports.Set("fromArray", Napi::Function::New<guarded<FromArray>>(env, "fromArray"));
  exports.Set("writeArray", Napi::Function::New<guarded<WriteArray>>(env, "writeArray"));
  exports.Set("zeros", Napi::Function::New<guarded<Zeros>>(env, "zeros"));
  exports.Set("reorder", Napi::Function::New<guarded<Reorder>>(env, "reorder"));
  exports.Set("copyInto", Napi::Function::New<guarded<CopyInto>>(env, "copyInto"));
  exports.Set("permute", Napi::Function::New<guarded<Permute>>(env, "permute"));
  exports.Set("poolStats", Napi::Function::New<guarded<PoolStats>>(env, "poolStats"));
  exports.Set("poolTrim", Napi::Function::New<guarded<PoolTrim>>(env, "poolTrim"));
  exports.Set("convForward", Napi::Function::New<guarded<ConvForward>>(env, "convForward"));
  exports.Set("convBackwardData", Napi::Function::New<guarded<ConvBackwardData>>(env, "convBackwardData"));
  exports.Set("convBackwardWeights", Napi::Function::New<guarded<ConvBackwardWeights>>(env, "convBackwardWeights"));
  exports.Set("maxPoolForward", Napi::Function::New<guarded<MaxPoolForward>>(env, "maxPoolForward"));
  exports.Set("maxPoolBackward", Napi::Function::New<guarded<MaxPoolBackward>>(env, "maxPoolBackward"));
  exports.Set("reluForward", Napi::Function::New<guarded<ReluForward>>(env, "reluForward"));
  exports.Set("reluBackward", Napi::Function::New<guarded<ReluBackward>>(env, "reluBackward"));
  exports.Set("add", Napi::Function::New<guarded<Add>>(env, "add"));
  exports.Set("scale", Napi::Function::New<guarded<Scale>>(env, "scale"));
  exports.Set("dropoutForward", Napi::Function::New<guarded<DropoutForward>>(env, "dropoutForward"));
  exports.Set("dropoutBackward", Napi::Function::New<guarded<DropoutBackward>>(env, "dropoutBackward"));
  exports.Set("cropPad", Napi::Function::New<guarded<CropPad>>(env, "cropPad"));
  exports.Set("argmax", Napi::Function::New<guarded<Argmax>>(env, "argmax"));
  exports.Set("softmaxCrossEntropy", Napi::Function::New<guarded<SoftmaxCrossEntropy>>(env, "softmaxCrossEntropy"));
  exports.Set("adamUpdate", Napi::Function::New<guarded<AdamUpdate>>(env, "adamUpdate"));
  exports.Set("adamUpdateAll", Napi::Function::New<guarded<AdamUpdateAll>>(env, "adamUpdateAll"));
  exports.Set("sgdUpdate", Napi::Function::New<guarded<SgdUpdate>>(env, "sgdUpdate"));
  exports.Set("sumSquares", Napi::Function::New<guarded<SumSquares>>(env, "sumSquares"));
  exports.Set("setThreads", Napi::Function::New<guarded<SetThreads>>(env, "setThreads"));
  exports.Set("info", Napi::Function::New<guarded<Info>>(env, "info"));
  return exports;
}

}  // namespace fcn

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return fcn::Init(env, exports); }
NODE_API_MODULE(fcn_native, InitModule)
