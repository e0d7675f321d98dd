// Tensors in native memory: a oneDNN memory descriptor (shape, data type, layout — plain
// or any blocked layout a primitive prefers) over a buffer from a size-keyed pool.
// JS holds them as `Tensor` objects; `dispose()` frees deterministically and the GC
// finaliser is only a safety net.
#pragma once

#include "engine.h"

namespace fcn {

// Buffers are recycled by exact byte size: a training step asks for the same sizes every
// time, so after the first step nothing is allocated (and no pages are faulted in) again.
void* pool_acquire(size_t bytes);
void pool_release(void* p, size_t bytes);

// A pooled scratch buffer that returns itself when it goes out of scope.
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit Scratch(size_t n) : ptr(pool_acquire(n)), bytes(n) {}
  Scratch(const Scratch&) = delete;
  Scratch(Scratch&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; }
  ~Scratch() { if (ptr) pool_release(ptr, bytes); }
};

class Tensor : public Napi::ObjectWrap<Tensor> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  // A new tensor with the given descriptor; contents zeroed when `zero`.
  static Napi::Object Create(Napi::Env env, const memory::desc& md, bool zero = false);
  // Unwraps a JS value into a live tensor, or throws a TypeError naming `what`.
  static Tensor& From(const Napi::Value& v, const char* what);
  // As From, but null/undefined give nullptr.
  static Tensor* FromOptional(const Napi::Value& v, const char* what);

  explicit Tensor(const Napi::CallbackInfo& info);
  ~Tensor() override;

  memory::desc md;
  void* ptr = nullptr;
  size_t bytes = 0;

  memory mem() const { return memory(md, cpu_engine(), ptr); }
  memory::dims dims() const { return md.dims(); }
  int64_t numel() const;
  void release();

 private:
  Napi::Env env_;
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value GetDims(const Napi::CallbackInfo& info);
  Napi::Value GetDtype(const Napi::CallbackInfo& info);
  Napi::Value GetLayout(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value GetBytes(const Napi::CallbackInfo& info);
  Napi::Value ToArray(const Napi::CallbackInfo& info);
};

// Makes `src` available in layout/type `want`: returns it as is when it already matches,
// otherwise reorders into a scratch buffer kept alive by `keep`.
memory in_layout(const Tensor& src, const memory::desc& want, std::vector<Scratch>& keep);
void reorder_into(const memory& src, const memory& dst);

Napi::Value FromArray(const Napi::CallbackInfo& info);
Napi::Value Zeros(const Napi::CallbackInfo& info);
Napi::Value WriteArray(const Napi::CallbackInfo& info);
Napi::Value Reorder(const Napi::CallbackInfo& info);
Napi::Value CopyInto(const Napi::CallbackInfo& info);
Napi::Value Permute(const Napi::CallbackInfo& info);
Napi::Value PoolStats(const Napi::CallbackInfo& info);
Napi::Value PoolTrim(const Napi::CallbackInfo& info);

}  // namespace fcn
