#include "tensor.h"

#include <cstdlib>
#include <cstring>
#include <map>

namespace fcn {

// ---- buffer pool -------------------------------------------------------------------
namespace {
std::multimap<size_t, void*> free_blocks;
size_t bytes_pooled = 0, bytes_live = 0, live_count = 0;
Napi::FunctionReference* tensor_ctor = nullptr;
bool creating = false;
}  // namespace

void* pool_acquire(size_t bytes) {
  if (bytes == 0) bytes = 64;
  auto it = free_blocks.find(bytes);
  void* p;
  if (it != free_blocks.end()) {
    p = it->second;
    free_blocks.erase(it);
    bytes_pooled -= bytes;
  } else {
    size_t rounded = (bytes + 63) / 64 * 64;
    p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
  }
  bytes_live += bytes;
  live_count++;
  return p;
}

void pool_release(void* p, size_t bytes) {
  if (!p) return;
  if (bytes == 0) bytes = 64;
  bytes_live -= bytes;
  live_count--;
  free_blocks.emplace(bytes, p);
  bytes_pooled += bytes;
}

static void pool_trim() {
  for (auto& kv : free_blocks) std::free(kv.second);
  free_blocks.clear();
  bytes_pooled = 0;
}

Napi::Value PoolStats(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  o.Set("liveBytes", double(bytes_live));
  o.Set("liveBuffers", double(live_count));
  o.Set("pooledBytes", double(bytes_pooled));
  o.Set("primitives", double(primitive_cache_size()));
  return o;
}

Napi::Value PoolTrim(const Napi::CallbackInfo& info) {
  pool_trim();
  if (info.Length() > 0 && info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value()) clear_primitive_cache();
  return info.Env().Undefined();
}

// ---- Tensor ------------------------------------------------------------------------
void Tensor::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function f = DefineClass(env, "Tensor", {
      InstanceMethod<&Tensor::Dispose>("dispose"),
      InstanceMethod<&Tensor::ToArray>("toArray"),
      InstanceAccessor<&Tensor::GetDims>("dims"),
      InstanceAccessor<&Tensor::GetDtype>("dtype"),
      InstanceAccessor<&Tensor::GetLayout>("layout"),
      InstanceAccessor<&Tensor::GetDisposed>("disposed"),
      InstanceAccessor<&Tensor::GetBytes>("nbytes"),
  });
  tensor_ctor = new Napi::FunctionReference(Napi::Persistent(f));
  exports.Set("Tensor", f);
}

Tensor::Tensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Tensor>(info), env_(info.Env()) {
  if (!creating) throw Napi::TypeError::New(info.Env(), "Tensor cannot be constructed directly: use fromArray, zeros or an op");
}

// The wrapper itself (descriptor included, ~700 bytes) is counted as external memory too:
// node-api runs finalisers only after the event loop turns, so V8 must see what disposed
// wrappers still hold to collect them in time.
Tensor::~Tensor() {
  release();
  Napi::MemoryManagement::AdjustExternalMemory(env_, -int64_t(sizeof(Tensor)));
}

void Tensor::release() {
  if (!ptr) return;
  pool_release(ptr, bytes);
  Napi::MemoryManagement::AdjustExternalMemory(env_, -int64_t(bytes));
  ptr = nullptr;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (auto d : md.dims()) n *= d;
  return n;
}

Napi::Object Tensor::Create(Napi::Env env, const memory::desc& md, bool zero) {
  creating = true;
  Napi::Object obj;
  try {
    obj = tensor_ctor->New({});
  } catch (...) {
    creating = false;
    throw;
  }
  creating = false;
  Tensor* t = Unwrap(obj);
  t->md = md;
  t->bytes = md.get_size();
  t->ptr = pool_acquire(t->bytes);
  if (zero) std::memset(t->ptr, 0, t->bytes);
  Napi::MemoryManagement::AdjustExternalMemory(env, int64_t(t->bytes + sizeof(Tensor)));
  return obj;
}

Tensor& Tensor::From(const Napi::Value& v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(tensor_ctor->Value()))
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a Tensor");
  Tensor* t = Unwrap(v.As<Napi::Object>());
  if (!t->ptr) throw Napi::TypeError::New(v.Env(), std::string(what) + " has been disposed");
  return *t;
}

Tensor* Tensor::FromOptional(const Napi::Value& v, const char* what) {
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  return &From(v, what);
}

Napi::Value Tensor::Dispose(const Napi::CallbackInfo& info) {
  release();
  return info.Env().Undefined();
}

Napi::Value Tensor::GetDims(const Napi::CallbackInfo& info) {
  auto d = md.dims();
  auto a = Napi::Array::New(info.Env(), d.size());
  for (size_t i = 0; i < d.size(); i++) a.Set(uint32_t(i), double(d[i]));
  return a;
}

Napi::Value Tensor::GetDtype(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dtype_name(md.data_type())); }
Napi::Value Tensor::GetLayout(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), is_plain(md) ? "plain" : "blocked:" + md_key(md));
}
Napi::Value Tensor::GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), ptr == nullptr); }
Napi::Value Tensor::GetBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(bytes)); }

void reorder_into(const memory& src, const memory& dst) {
  dnnl::reorder(src, dst).execute(cpu_stream(), const_cast<memory&>(src), const_cast<memory&>(dst));
  cpu_stream().wait();
}

memory in_layout(const Tensor& src, const memory::desc& want, std::vector<Scratch>& keep) {
  if (src.md == want) return src.mem();
  keep.emplace_back(want.get_size());
  memory dst(want, cpu_engine(), keep.back().ptr);
  reorder_into(src.mem(), dst);
  return dst;
}

static Napi::Value typed_array_of(Napi::Env env, dt type, size_t n) {
  switch (type) {
    case dt::f32: return Napi::Float32Array::New(env, n);
    case dt::bf16: return Napi::Uint16Array::New(env, n);
    case dt::u8: return Napi::Uint8Array::New(env, n);
    case dt::s32: return Napi::Int32Array::New(env, n);
    default: throw Napi::TypeError::New(env, "unsupported dtype");
  }
}

// Copies the tensor out as a plain row-major typed array (the edge where JS reads values).
Napi::Value Tensor::ToArray(const Napi::CallbackInfo& info) {
  if (!ptr) throw Napi::TypeError::New(info.Env(), "tensor has been disposed");
  auto plain = plain_desc(md.dims(), md.data_type());
  size_t n = size_t(numel());
  Napi::TypedArray arr = typed_array_of(info.Env(), md.data_type(), n).As<Napi::TypedArray>();
  uint8_t* out = static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
  if (md == plain) {
    std::memcpy(out, ptr, n * dtype_size(md.data_type()));
  } else {
    memory dst(plain, cpu_engine(), out);
    reorder_into(mem(), dst);
  }
  return arr;
}

static memory::dims parse_dims(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be an array of positive integers");
  auto a = v.As<Napi::Array>();
  memory::dims d;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber() || e.As<Napi::Number>().DoubleValue() < 1 || e.As<Napi::Number>().DoubleValue() != double(e.As<Napi::Number>().Int64Value()))
      throw Napi::TypeError::New(v.Env(), std::string(what) + " must be an array of positive integers");
    d.push_back(e.As<Napi::Number>().Int64Value());
  }
  if (d.empty() || d.size() > 5) throw Napi::TypeError::New(v.Env(), std::string(what) + " must have 1 to 5 dimensions");
  return d;
}

// fromArray(dims, typedArray, dtype?) → a plain tensor holding a copy of the data.
Napi::Value FromArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto dims = parse_dims(info[0], "dims");
  if (!info[1].IsTypedArray()) throw Napi::TypeError::New(env, "data must be a typed array");
  auto arr = info[1].As<Napi::TypedArray>();
  dt type;
  switch (arr.TypedArrayType()) {
    case napi_float32_array: type = dt::f32; break;
    case napi_uint8_array: type = dt::u8; break;
    case napi_int32_array: type = dt::s32; break;
    case napi_uint16_array: type = dt::bf16; break;  // bfloat16 bits travel as Uint16Array
    default: throw Napi::TypeError::New(env, "data must be a Float32Array, Uint16Array (bfloat16), Uint8Array or Int32Array");
  }
  int64_t n = 1;
  for (auto d : dims) n *= d;
  if (int64_t(arr.ElementLength()) != n)
    throw Napi::TypeError::New(env, "data has " + std::to_string(arr.ElementLength()) + " elements but dims " + dims_key(dims) + " need " + std::to_string(n));
  auto md = plain_desc(dims, type);
  Napi::Object obj = Tensor::Create(env, md);
  Tensor* t = Tensor::Unwrap(obj);
  std::memcpy(t->ptr, static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset(), size_t(n) * dtype_size(type));
  return obj;
}

// writeArray(t, typedArray, offset = 0): copies the array into the plain tensor t from element
// `offset` on, in place (no new buffer: initialisers and loaders fill parameters slice by
// slice without a second full-size copy).
Napi::Value WriteArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& t = Tensor::From(info[0], "tensor");
  if (!info[1].IsTypedArray()) throw Napi::TypeError::New(env, "writeArray: data must be a typed array");
  auto arr = info[1].As<Napi::TypedArray>();
  int64_t offset = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 0;
  if (!is_plain(t.md)) throw Napi::TypeError::New(env, "writeArray: the tensor must be in the plain layout");
  dt want;
  switch (arr.TypedArrayType()) {
    case napi_float32_array: want = dt::f32; break;
    case napi_uint8_array: want = dt::u8; break;
    case napi_int32_array: want = dt::s32; break;
    case napi_uint16_array: want = dt::bf16; break;
    default: throw Napi::TypeError::New(env, "writeArray: data must be a Float32Array, Uint16Array (bfloat16), Uint8Array or Int32Array");
  }
  if (want != t.md.data_type()) throw Napi::TypeError::New(env, std::string("writeArray: the tensor is ") + dtype_name(t.md.data_type()) + " but the data " + dtype_name(want));
  const int64_t n = int64_t(arr.ElementLength());
  if (offset < 0 || offset + n > t.numel())
    throw Napi::RangeError::New(env, "writeArray: " + std::to_string(n) + " elements at offset " + std::to_string(offset) + " do not fit in " + std::to_string(t.numel()));
  const size_t es = dtype_size(want);
  std::memcpy(static_cast<uint8_t*>(t.ptr) + size_t(offset) * es, static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset(), size_t(n) * es);
  return env.Undefined();
}

// zeros(dims, dtype = 'float32') → a plain zero tensor.
Napi::Value Zeros(const Napi::CallbackInfo& info) {
  auto dims = parse_dims(info[0], "dims");
  dt type = info.Length() > 1 && info[1].IsString() ? parse_dtype(info.Env(), info[1].As<Napi::String>().Utf8Value()) : dt::f32;
  return Tensor::Create(info.Env(), plain_desc(dims, type), true);
}

// reorder(t, {dtype?, like?}) → a new tensor with t's values in like's layout (or plain)
// and the requested dtype (the only place precision changes).
Napi::Value Reorder(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& src = Tensor::From(info[0], "tensor");
  Napi::Object o = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
  Tensor* like = o.Has("like") ? Tensor::FromOptional(o.Get("like"), "option 'like'") : nullptr;
  dt type = o.Has("dtype") && o.Get("dtype").IsString() ? parse_dtype(env, o.Get("dtype").As<Napi::String>().Utf8Value()) : src.md.data_type();
  memory::desc want;
  if (like) {
    if (like->dims() != src.dims()) throw Napi::TypeError::New(env, "reorder: shapes differ (" + dims_key(src.dims()) + " vs " + dims_key(like->dims()) + ")");
    want = like->md;
    if (want.data_type() != type) {
      // Same layout, other type: rebuild the descriptor with the new data type.
      want.data.data_type = static_cast<dnnl_data_type_t>(type);
    }
  } else {
    want = plain_desc(src.dims(), type);
  }
  Napi::Object out = Tensor::Create(env, want);
  reorder_into(src.mem(), Tensor::Unwrap(out)->mem());
  return out;
}

// permute(t, perm) → a plain tensor with t's axes reordered: out dims[k] = t dims[perm[k]]
// (oneDNN's reorder reads t through the permuted strides: the Keras ↔ engine weight layouts).
Napi::Value Permute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tensor& src = Tensor::From(info[0], "tensor");
  if (!is_plain(src.md)) throw Napi::TypeError::New(env, "permute: the tensor must be in the plain layout");
  const auto dims = src.dims();
  const size_t r = dims.size();
  if (!info[1].IsArray() || info[1].As<Napi::Array>().Length() != r)
    throw Napi::TypeError::New(env, "permute: perm must list each of the tensor's " + std::to_string(r) + " axes once");
  auto perm = info[1].As<Napi::Array>();
  memory::dims strides(r), out_dims(r), view_strides(r);
  strides[r - 1] = 1;
  for (size_t k = r - 1; k-- > 0;) strides[k] = strides[k + 1] * dims[k + 1];
  std::vector<bool> seen(r, false);
  for (uint32_t k = 0; k < r; k++) {
    Napi::Value v = perm.Get(k);
    double a = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (a < 0 || a >= double(r) || a != double(int64_t(a)) || seen[size_t(a)])
      throw Napi::TypeError::New(env, "permute: perm must list each of the tensor's " + std::to_string(r) + " axes once");
    seen[size_t(a)] = true;
    out_dims[k] = dims[size_t(a)];
    view_strides[k] = strides[size_t(a)];
  }
  memory::desc view(out_dims, src.md.data_type(), view_strides);
  Napi::Object out = Tensor::Create(env, plain_desc(out_dims, src.md.data_type()));
  reorder_into(memory(view, cpu_engine(), src.ptr), Tensor::Unwrap(out)->mem());
  return out;
}

// copyInto(dst, src): dst's values become src's, converting layout and type as needed.
Napi::Value CopyInto(const Napi::CallbackInfo& info) {
  Tensor& dst = Tensor::From(info[0], "dst");
  Tensor& src = Tensor::From(info[1], "src");
  if (dst.dims() != src.dims()) throw Napi::TypeError::New(info.Env(), "copyInto: shapes differ (" + dims_key(src.dims()) + " vs " + dims_key(dst.dims()) + ")");
  if (dst.md == src.md) std::memcpy(dst.ptr, src.ptr, src.bytes);
  else reorder_into(src.mem(), dst.mem());
  return info.Env().Undefined();
}

}  // namespace fcn
