// Tensors in native memory: a oneDNN memory descriptor (shape, data type, layout — plain
// or any blocked layout a primitive prefers) over a buffer from the environment's pool.
// JS holds them as `Tensor` objects; `dispose()` frees deterministically and the GC
// finaliser is only a safety net.
#pragma once

#include <initializer_list>

#include "engine.h"

namespace fcn {

// A pooled scratch buffer that returns itself when it goes out of scope.
struct Scratch {
  BufferPool& pool;
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit Scratch(size_t n) : pool(*frame().state.pool), ptr(pool.acquire(n)), bytes(n) {}
  Scratch(const Scratch&) = delete;
  Scratch(Scratch&& o) noexcept : pool(o.pool), ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; }
  ~Scratch() { pool.release(ptr, bytes); }
};

class Tensor : public Napi::ObjectWrap<Tensor> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  // A new tensor with the given descriptor; contents zeroed when `zero`.
  static Napi::Object Create(Napi::Env env, const memory::desc& md, bool zero = false);
  // Unwraps a JS value into a live tensor of this environment, pinned until the op returns,
  // or throws a TypeError naming `what`.
  static Tensor& From(const Napi::Value& v, const std::string& what);
  // As From, but null/undefined give nullptr.
  static Tensor* FromOptional(const Napi::Value& v, const std::string& what);
  // A tensor's descriptor only (its dims, type and layout), disposed or not: for `like` arguments.
  static const memory::desc* DescOf(const Napi::Value& v, const std::string& what);
  // The tensor behind an object Create made (no checks).
  static Tensor& Of(const Napi::Object& o) { return *Unwrap(o); }

  explicit Tensor(const Napi::CallbackInfo& info);
  ~Tensor() override;

  memory::desc md;
  void* ptr = nullptr;
  size_t bytes = 0;
  // Calls in progress that read this tensor, and a dispose() that waits for them.
  int pins = 0;
  bool dispose_requested = false;

  memory mem() const { return memory(md, cpu_engine(), ptr); }
  memory::dims dims() const { return md.dims(); }
  int64_t numel() const;
  void release();
  void add_view(const Napi::ArrayBuffer& ab) { views_.push_back(Napi::Weak(ab)); }

 private:
  Napi::Env env_;
  std::shared_ptr<BufferPool> pool_;
  // Views of the buffer (weak: a view alone keeps the tensor, not the other way round).
  std::vector<Napi::Reference<Napi::ArrayBuffer>> views_;
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value GetDims(const Napi::CallbackInfo& info);
  Napi::Value GetDtype(const Napi::CallbackInfo& info);
  Napi::Value GetLayout(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value GetBytes(const Napi::CallbackInfo& info);
  Napi::Value ToArray(const Napi::CallbackInfo& info);
};

// Argument checks on tensors, with messages that name the argument.
void require_rank(const Tensor& t, const std::string& what, size_t rank, const char* axes);
void require_dtype(const Tensor& t, const std::string& what, std::initializer_list<dt> allowed);
void require_dims(const Tensor& t, const std::string& what, const memory::dims& want);
// float32 or bfloat16: what every float op takes.
inline void require_float(const Tensor& t, const std::string& what) { require_dtype(t, what, {dt::f32, dt::bf16}); }

// Makes `src` available in layout/type `want`: returns it as is when it already matches,
// otherwise reorders into a scratch buffer kept alive by `keep`.
memory in_layout(const Tensor& src, const memory::desc& want, std::vector<Scratch>& keep);
// dst = src (converted to dst's type and layout); attr carries output scales when quantizing.
void reorder_into(const memory& src, const memory& dst, const dnnl::primitive_attr& attr = dnnl::primitive_attr());

Napi::Value FromArray(const Napi::CallbackInfo& info);
Napi::Value Zeros(const Napi::CallbackInfo& info);
Napi::Value WriteArray(const Napi::CallbackInfo& info);
Napi::Value View(const Napi::CallbackInfo& info);
Napi::Value Reorder(const Napi::CallbackInfo& info);
Napi::Value Permute(const Napi::CallbackInfo& info);

}  // namespace fcn
