#include "tensor.h"

#include <cmath>
#include <cstring>

namespace fcn {

namespace {
// Marks the objects Create makes: unlike instanceof, a type tag cannot be faked from JS (a
// plain object, a Proxy or Object.create(tensor) is never taken for a tensor).
constexpr napi_type_tag kTensorTag = {0x66636e5f74656e73ULL, 0x6f725f7461673031ULL};

void adjust_external_memory(Napi::Env env, int64_t change) noexcept {
  try {
    Napi::MemoryManagement::AdjustExternalMemory(env, change);
  } catch (...) {
    // Only an accounting hint for V8's GC.
  }
}

// V8 is told what the pool's buffers hold so that it collects forgotten tensors in time. But it
// starts a full collection whenever that figure rises 64 MB above where it stood at the last
// one, and a training step takes and gives back gigabytes of activations and gradients (each
// disposed as soon as it is used): reported as they came and went, a 512² step was collected
// 7 times, each a pause and a marking thread contending with the two compute threads. So V8
// sees the high-water mark: a rise above it at once, a fall only once the live bytes drop below
// half of it. Tensors never disposed still raise it, and so still bring on collections.
void report_buffers(Napi::Env env, BufferPool& pool) noexcept {
  const size_t live = pool.live_bytes();
  if (live <= pool.reported_live && live >= pool.reported_live / 2) return;
  adjust_external_memory(env, int64_t(live) - int64_t(pool.reported_live));
  pool.reported_live = live;
}
}  // namespace

void release_pins(const std::vector<Tensor*>& pinned) noexcept {
  for (Tensor* t : pinned)
    if (--t->pins == 0 && t->dispose_requested) t->release();
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
  state_of(env).tensor_ctor = Napi::Persistent(f);
  exports.Set("Tensor", f);
}

// The wrapper itself (descriptor included, ~700 bytes) is counted as external memory too:
// node-api runs finalisers only after the event loop turns, so V8 must see what disposed
// wrappers still hold to collect them in time.
Tensor::Tensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Tensor>(info), env_(info.Env()) {
  const EnvState* state = info.Env().GetInstanceData<EnvState>();
  if (!state || !state->constructing_tensor)
    throw Napi::TypeError::New(info.Env(), "Tensor: cannot be constructed directly: use fromArray, zeros or an op");
  adjust_external_memory(env_, int64_t(sizeof(Tensor)));
}

Tensor::~Tensor() {
  // A live view holds its tensor (see View): a tensor being finalised has none left to detach.
  views_.clear();
  release();
  adjust_external_memory(env_, -int64_t(sizeof(Tensor)));
}

void Tensor::release() {
  if (!ptr) return;
  // Views must not reach the buffer once the pool has it back.
  for (auto& ref : views_) {
    if (ref.IsEmpty()) continue;
    Napi::Value v = ref.Value();
    if (!v.IsEmpty() && v.IsArrayBuffer() && !v.As<Napi::ArrayBuffer>().IsDetached()) v.As<Napi::ArrayBuffer>().Detach();
  }
  views_.clear();
  pool_->release(ptr, bytes);
  report_buffers(env_, *pool_);
  ptr = nullptr;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (auto d : md.dims()) n *= d;
  return n;
}

Napi::Object Tensor::Create(Napi::Env env, const memory::desc& md, bool zero) {
  EnvState& state = frame().state;
  const size_t n = md.get_size();
  void* p = state.pool->acquire(n);
  Napi::Object obj;
  state.constructing_tensor = true;
  try {
    obj = state.tensor_ctor.New({});
    obj.TypeTag(&kTensorTag);
  } catch (...) {
    state.constructing_tensor = false;
    state.pool->release(p, n);
    throw;
  }
  state.constructing_tensor = false;
  Tensor* t = Unwrap(obj);
  t->md = md;
  t->bytes = n;
  t->ptr = p;
  t->pool_ = state.pool;
  if (zero) std::memset(p, 0, n);
  report_buffers(env, *state.pool);
  return obj;
}

Tensor& Tensor::From(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kTensorTag)) throw_type_error(what + " must be a Tensor, got " + describe(v));
  Tensor* t = Unwrap(v.As<Napi::Object>());
  if (!t->ptr || t->dispose_requested) throw_type_error(what + " has been disposed");
  frame().pinned.push_back(t);
  t->pins++;
  return *t;
}

Tensor* Tensor::FromOptional(const Napi::Value& v, const std::string& what) {
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  return &From(v, what);
}

const memory::desc* Tensor::DescOf(const Napi::Value& v, const std::string& what) {
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kTensorTag)) throw_type_error(what + " must be a Tensor, got " + describe(v));
  return &Unwrap(v.As<Napi::Object>())->md;
}

// While a call reads the tensor, its buffer stays: the release waits for the call to return.
Napi::Value Tensor::Dispose(const Napi::CallbackInfo& info) {
  if (pins > 0) dispose_requested = true;
  else release();
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
  return guarded(info.Env(), "layout", [&]() -> Napi::Value { return Napi::String::New(info.Env(), is_plain(md) ? "plain" : "blocked:" + md_key(md)); });
}
Napi::Value Tensor::GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), ptr == nullptr || dispose_requested); }
Napi::Value Tensor::GetBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(bytes)); }

// view(tensor) → a typed array over the memory of a tensor, not a copy: what is written
// through it is the tensor's content (MPI sums gradients where the engine wrote them). Elements
// come in the tensor's layout: a blocked layout is shown whole when it has no padding, so two
// tensors of one layout add element by element. The view keeps the tensor from being
// collected; dispose() detaches every view (its length becomes 0), so no view outlives the
// buffer it shows.
Napi::Value View(const Napi::CallbackInfo& info) {
  Tensor& t = Tensor::From(info[0], "tensor");
  const DTypeInfo* d = dtype_info(t.md.data_type());
  if (!d) throw_type_error(std::string("no typed array shows ") + dtype_name(t.md.data_type()));
  if (!is_plain(t.md) && t.md.get_size() != size_t(t.numel()) * d->size)
    throw_range_error("the tensor's layout is padded (" + md_key(t.md) + "): reorder it to plain first");
  Napi::Env env = info.Env();
  auto* holder = new Napi::ObjectReference(Napi::Persistent(info[0].As<Napi::Object>()));
  Napi::ArrayBuffer ab;
  try {
    ab = Napi::ArrayBuffer::New(env, t.ptr, size_t(t.numel()) * d->size, [](Napi::Env, void*, Napi::ObjectReference* h) { delete h; }, holder);
  } catch (...) {
    delete holder;
    throw;
  }
  t.add_view(ab);
  napi_value out;
  if (napi_create_typedarray(env, d->array, size_t(t.numel()), ab, 0, &out) != napi_ok) throw_type_error("the view cannot be made");
  return Napi::Value(env, out);
}

// ---- argument checks -------------------------------------------------------------------
void require_rank(const Tensor& t, const std::string& what, size_t rank, const char* axes) {
  if (t.md.dims().size() != rank)
    throw_range_error(what + " must be " + axes + " (rank " + std::to_string(rank) + "), got " + dims_key(t.dims()));
}

void require_dtype(const Tensor& t, const std::string& what, std::initializer_list<dt> allowed) {
  std::string names;
  size_t i = 0;
  for (dt a : allowed) {
    if (t.md.data_type() == a) return;
    names += std::string(i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ") + dtype_name(a);
    i++;
  }
  throw_type_error(what + " must be " + names + ", got " + dtype_name(t.md.data_type()));
}

void require_dims(const Tensor& t, const std::string& what, const memory::dims& want) {
  if (t.dims() != want) throw_range_error(what + " is " + dims_key(t.dims()) + ", expected " + dims_key(want));
}

// ---- layouts -------------------------------------------------------------------------
void reorder_into(const memory& src, const memory& dst, const dnnl::primitive_attr& attr) {
  dnnl::reorder(src, dst, attr).execute(cpu_stream(), const_cast<memory&>(src), const_cast<memory&>(dst));
  cpu_stream().wait();
}

memory in_layout(const Tensor& src, const memory::desc& want, std::vector<Scratch>& keep) {
  if (src.md == want) return src.mem();
  keep.emplace_back(want.get_size());
  memory dst(want, cpu_engine(), keep.back().ptr);
  reorder_into(src.mem(), dst);
  return dst;
}

namespace {
Napi::Value typed_array_of(Napi::Env env, dt type, size_t n) {
  const DTypeInfo* d = dtype_info(type);
  if (!d) throw_type_error("unsupported dtype");
  napi_value arr, buf;
  if (napi_create_arraybuffer(env, n * d->size, nullptr, &buf) != napi_ok || napi_create_typedarray(env, d->array, n, buf, 0, &arr) != napi_ok)
    throw Napi::Error::New(env);
  return Napi::Value(env, arr);
}

// A typed array's element type, length and data, read without running any JS (and whatever
// backs it: an ArrayBuffer, a SharedArrayBuffer, or a detached buffer of length 0).
struct TypedData {
  dt type;
  size_t length;
  uint8_t* data;
};

TypedData typed_data(const Napi::Value& v, const std::string& what) {
  if (!v.IsTypedArray()) throw_type_error(what + " must be " + typed_array_kinds() + ", got " + describe(v));
  napi_typedarray_type kind;
  size_t length;
  void* data;
  if (napi_get_typedarray_info(v.Env(), v, &kind, &length, &data, nullptr, nullptr) != napi_ok) throw_type_error(what + " cannot be read");
  const DTypeInfo* d = dtype_of_array(kind);
  if (!d) throw_type_error(what + " must be " + typed_array_kinds());
  return {d->type, length, static_cast<uint8_t*>(data)};
}
}  // namespace

// Copies the tensor out as a plain row-major typed array (the edge where JS reads values).
Napi::Value Tensor::ToArray(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), "toArray", [&]() -> Napi::Value {
    if (!ptr || dispose_requested) throw_type_error("the tensor has been disposed");
    auto plain = plain_desc(md.dims(), md.data_type());
    const size_t n = size_t(numel());
    Napi::TypedArray arr = typed_array_of(info.Env(), md.data_type(), n).As<Napi::TypedArray>();
    uint8_t* out = static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
    if (md == plain) {
      std::memcpy(out, ptr, n * dtype_size(md.data_type()));
    } else {
      memory dst(plain, cpu_engine(), out);
      reorder_into(mem(), dst);
    }
    return arr;
  });
}

// Checks perm lists each of the r axes once; gives the permuted dims and the strides that read
// a row-major array of `dims` in the permuted axis order.
static void permuted_view(const memory::dims& dims, const std::vector<int64_t>& perm, memory::dims& out_dims, memory::dims& view_strides) {
  const size_t r = dims.size();
  const std::string must = "perm must list each of the tensor's " + std::to_string(r) + " axes once";
  if (perm.size() != r || r == 0) throw_range_error(must + ", got " + list_str(perm));
  memory::dims strides(r);
  out_dims.assign(r, 0);
  view_strides.assign(r, 0);
  strides[r - 1] = 1;
  for (size_t k = r - 1; k-- > 0;) strides[k] = strides[k + 1] * dims[k + 1];
  std::vector<bool> seen(r, false);
  for (size_t k = 0; k < r; k++) {
    const int64_t a = perm[k];
    if (a < 0 || a >= int64_t(r) || seen[size_t(a)]) throw_range_error(must + ", got " + list_str(perm));
    seen[size_t(a)] = true;
    out_dims[k] = dims[size_t(a)];
    view_strides[k] = strides[size_t(a)];
  }
}

// The Keras ↔ engine kernel permutations, (A, B, C, D) → (D, C, A, B) or (C, D, A, B), as a
// tiled transpose: a strided reorder reads conv6's kernel (7, 7, 512, 4096) 8 MB apart per
// element, while here each tile reads runs of D contiguous values and writes runs of A·B.
static bool kernel_permute(const memory::dims& dims, const std::vector<int64_t>& perm, const float* src, float* dst) {
  if (dims.size() != 4 || perm[2] != 0 || perm[3] != 1) return false;
  const bool swap_cd = perm[0] == 3 && perm[1] == 2;
  if (!swap_cd && !(perm[0] == 2 && perm[1] == 3)) return false;
  const int64_t AB = dims[0] * dims[1], C = dims[2], D = dims[3], CD = C * D;
  constexpr int64_t kTile = 64;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; c++)
    for (int64_t d0 = 0; d0 < D; d0 += kTile) {
      const int64_t d1 = std::min(D, d0 + kTile);
      for (int64_t k = 0; k < AB; k++) {
        const float* row = src + k * CD + c * D;
        for (int64_t d = d0; d < d1; d++) dst[(swap_cd ? d * C + c : c * D + d) * AB + k] = row[d];
      }
    }
  return true;
}

// fromArray(dims, typedArray, perm?) → a plain tensor holding a copy of the data; with perm,
// the data (row-major, shape dims) is copied with its axes reordered, as permute would, in
// one pass (weight files in Keras layouts load without an intermediate copy).
Napi::Value FromArray(const Napi::CallbackInfo& info) {
  auto dims = read_dims(info[0], "dims");
  TypedData d = typed_data(info[1], "data");
  const int64_t n = checked_numel(dims, "dims");
  if (int64_t(d.length) != n)
    throw_range_error("data has " + std::to_string(d.length) + " elements but dims " + dims_key(dims) + " need " + std::to_string(n));
  if (!info[2].IsUndefined()) {
    if (!info[2].IsArray()) throw_type_error("perm must be an array of axes, got " + describe(info[2]));
    memory::dims out_dims, view_strides;
    permuted_view(dims, read_ints(info[2], "perm", 0, 0, kMaxSafeInteger), out_dims, view_strides);
    const std::vector<int64_t> perm = read_ints(info[2], "perm", 0, 0, kMaxSafeInteger);
    Napi::Object obj = Tensor::Create(info.Env(), plain_desc(out_dims, d.type));
    if (n == 0) return obj;
    if (d.type == dt::f32 && kernel_permute(dims, perm, reinterpret_cast<const float*>(d.data), static_cast<float*>(Tensor::Of(obj).ptr))) return obj;
    reorder_into(memory(memory::desc(out_dims, d.type, view_strides), cpu_engine(), d.data), Tensor::Of(obj).mem());
    return obj;
  }
  Napi::Object obj = Tensor::Create(info.Env(), plain_desc(dims, d.type));
  std::memcpy(Tensor::Of(obj).ptr, d.data, size_t(n) * dtype_size(d.type));
  return obj;
}

// writeArray(t, typedArray, offset = 0): copies the array into the plain tensor t from element
// `offset` on, in place (no new buffer: initialisers and loaders fill parameters slice by
// slice without a second full-size copy).
Napi::Value WriteArray(const Napi::CallbackInfo& info) {
  const int64_t offset = info[2].IsUndefined() ? 0 : read_int(info[2], "offset", 0, kMaxSafeInteger);
  Tensor& t = Tensor::From(info[0], "tensor");
  TypedData d = typed_data(info[1], "data");
  if (!is_plain(t.md)) throw_type_error("the tensor must be in the plain layout");
  if (d.type != t.md.data_type()) throw_type_error(std::string("the tensor is ") + dtype_name(t.md.data_type()) + " but the data " + dtype_name(d.type));
  const int64_t n = int64_t(d.length);
  if (offset + n > t.numel())
    throw_range_error(std::to_string(n) + " elements at offset " + std::to_string(offset) + " do not fit in " + std::to_string(t.numel()));
  const size_t es = dtype_size(d.type);
  if (n > 0) std::memcpy(static_cast<uint8_t*>(t.ptr) + size_t(offset) * es, d.data, size_t(n) * es);
  return info.Env().Undefined();
}

// zeros(dims, dtype = 'float32', uninitialized = false, like?) → a zero tensor, plain or in like's
// layout (an optimiser's state beside a master kept blocked); uninitialized skips the fill for a
// tensor about to be replaced whole (a model built only to be loaded: its untouched pages cost
// no memory).
Napi::Value Zeros(const Napi::CallbackInfo& info) {
  auto dims = read_dims(info[0], "dims");
  dt type = dt::f32;
  if (!info[1].IsUndefined()) {
    if (!info[1].IsString()) throw_type_error("dtype must be a string, got " + describe(info[1]));
    type = parse_dtype(info[1].As<Napi::String>().Utf8Value());
  }
  bool uninitialized = false;
  if (!info[2].IsUndefined()) {
    if (!info[2].IsBoolean()) throw_type_error("uninitialized must be a boolean, got " + describe(info[2]));
    uninitialized = info[2].As<Napi::Boolean>().Value();
  }
  memory::desc md = plain_desc(dims, type);
  if (const memory::desc* like = Tensor::DescOf(info[3], "like")) {
    if (like->dims() != md.dims()) throw_range_error("shapes differ (" + dims_key(md.dims()) + " vs " + dims_key(like->dims()) + ")");
    md = *like;
    md.data.data_type = static_cast<dnnl_data_type_t>(type);
  }
  return Tensor::Create(info.Env(), md, !uninitialized);
}

// reorder(t, {dtype?, like?, scale = 1}) → a new tensor with t's values in like's layout (or
// plain) and the requested dtype (the only place precision changes). With a scale the values
// are t·scale, rounded to nearest even and saturated into integer dtypes: how activations are
// quantized to uint8/int8 and dequantized back.
Napi::Value Reorder(const Napi::CallbackInfo& info) {
  Napi::Object o = options_arg(info, 1);
  const double scale = opt_num(o, "scale", 1);
  const float scale32 = float(scale);
  if (scale == 0) throw_range_error("scale must be a finite nonzero number, got 0");
  if (!std::isfinite(scale32) || scale32 == 0)
    throw_range_error("scale must be within float32's range, got " + describe(Napi::Number::New(info.Env(), scale)));
  Tensor& src = Tensor::From(info[0], "tensor");
  // Only like's layout is read: a disposed tensor still names one.
  const memory::desc* like = Tensor::DescOf(o.Get("like"), "like");
  const dt type = opt_dtype(o, "dtype", src.md.data_type(), {dt::f32, dt::bf16, dt::u8, dt::s8, dt::s32});
  memory::desc want;
  if (like) {
    if (like->dims() != src.md.dims()) throw_range_error("shapes differ (" + dims_key(src.dims()) + " vs " + dims_key(like->dims()) + ")");
    want = *like;
    // Same layout, other type: the descriptor with the new data type.
    want.data.data_type = static_cast<dnnl_data_type_t>(type);
  } else {
    want = plain_desc(src.dims(), type);
  }
  Napi::Object out = Tensor::Create(info.Env(), want);
  if (scale32 == 1) {
    reorder_into(src.mem(), Tensor::Of(out).mem());
  } else {
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {scale32});
    reorder_into(src.mem(), Tensor::Of(out).mem(), attr);
  }
  return out;
}

// permute(t, perm) → a plain tensor with t's axes reordered: out dims[k] = t dims[perm[k]]
// (oneDNN's reorder reads t through the permuted strides: the Keras ↔ engine weight layouts).
Napi::Value Permute(const Napi::CallbackInfo& info) {
  Tensor& src = Tensor::From(info[0], "tensor");
  if (!is_plain(src.md)) throw_type_error("the tensor must be in the plain layout");
  if (!info[1].IsArray()) throw_type_error("perm must list each of the tensor's " + std::to_string(src.dims().size()) + " axes once, got " + describe(info[1]));
  memory::dims out_dims, view_strides;
  permuted_view(src.dims(), read_ints(info[1], "perm", 0, 0, kMaxSafeInteger), out_dims, view_strides);
  memory::desc view(out_dims, src.md.data_type(), view_strides);
  Napi::Object out = Tensor::Create(info.Env(), plain_desc(out_dims, src.md.data_type()));
  reorder_into(memory(view, cpu_engine(), src.ptr), Tensor::Of(out).mem());
  return out;
}

}  // namespace fcn
