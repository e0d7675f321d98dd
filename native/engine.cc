#include "engine.h"
#include "tensor.h"

#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <sstream>

namespace fcn {

dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

// ---- primitive cache ------------------------------------------------------------------
CachedPrimitive PrimitiveCache::get(const std::string& key, const std::function<CachedPrimitive()>& make) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->second;
  }
  CachedPrimitive made = make();
  if (limit_ == 0) return made;
  lru_.emplace_front(key, made);
  try {
    index_.emplace(key, lru_.begin());
  } catch (...) {
    lru_.pop_front();
    throw;
  }
  set_limit(limit_);
  return made;
}

void PrimitiveCache::clear() {
  index_.clear();
  lru_.clear();
}

void PrimitiveCache::set_limit(size_t limit) {
  limit_ = limit;
  while (index_.size() > limit_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

// oneDNN (OpenMP runtime) fixes a primitive's thread count when it is created, so the
// count in force is part of the key: after setThreads a new primitive is made.
CachedPrimitive cached(const std::string& key, const std::function<CachedPrimitive()>& make) {
  return frame().state.primitives.get(std::to_string(omp_get_max_threads()) + "t|" + key, make);
}

// ---- call frames and errors -----------------------------------------------------------
namespace {
thread_local CallFrame* innermost = nullptr;
}

CallFrame::CallFrame(Napi::Env env, const char* op) : scope(env, op), env(env), state(state_of(env)), op(op), outer_(innermost) { innermost = this; }

CallFrame& frame() {
  if (!innermost) throw std::logic_error("native call without a call frame");
  return *innermost;
}

CallFrame::~CallFrame() {
  innermost = outer_;
  release_pins(pinned);
}

namespace {
// oneDNN 2.x runs bfloat16 primitives only from avx512_core up (its cpu_isa values are bit sets
// that include the ISAs below them).
bool cpu_runs_bf16() {
  const int isa = int(dnnl::get_effective_cpu_isa()), core = int(dnnl::cpu_isa::avx512_core);
  return (isa & core) == core;
}

bool involves_bf16(const CallFrame& call) {
  if (call.bf16_requested) return true;
  for (const Tensor* t : call.pinned)
    if (t->md.data_type() == dt::bf16) return true;
  return false;
}
}  // namespace

Napi::Value guarded(Napi::Env env, const char* op, const std::function<Napi::Value()>& body) {
  try {
    CallFrame call(env, op);
    try {
      return body();
    } catch (const dnnl::error& e) {
      // oneDNN only says "could not create a primitive descriptor iterator": name the cause.
      if (e.status == dnnl_unimplemented && !cpu_runs_bf16() && involves_bf16(call))
        throw Napi::RangeError::New(env, std::string(op) + ": bfloat16 needs a CPU with AVX-512: oneDNN runs no bfloat16 primitive on this one (use float32)");
      throw;
    }
  } catch (const Napi::Error&) {
    throw;
  } catch (const dnnl::error& e) {
    if (e.status == dnnl_out_of_memory) throw Napi::RangeError::New(env, std::string(op) + ": out of memory (oneDNN)");
    throw Napi::Error::New(env, std::string(op) + ": oneDNN: " + e.what() + " (status " + std::to_string(int(e.status)) + ")");
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(env, std::string(op) + ": out of memory");
  } catch (const std::length_error&) {
    throw Napi::RangeError::New(env, std::string(op) + ": out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string(op) + ": " + e.what());
  } catch (...) {
    throw Napi::Error::New(env, std::string(op) + ": unexpected native error");
  }
}

// ---- sizes ----------------------------------------------------------------------------
int64_t checked_mul(int64_t a, int64_t b, const std::string& what) {
  int64_t p;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &p) || p > kMaxElements)
    throw_range_error(what + " would hold more than 2^40 elements");
  return p;
}

int64_t checked_numel(const memory::dims& d, const std::string& what) {
  int64_t n = 1;
  for (auto v : d) n = checked_mul(n, v, what);
  return n;
}

// ---- keys and messages ----------------------------------------------------------------
std::string dims_key(const memory::dims& d) {
  std::string s;
  for (size_t i = 0; i < d.size(); i++) {
    if (i) s += 'x';
    s += std::to_string(d[i]);
  }
  return s;
}

std::string md_key(const memory::desc& md) {
  const dnnl_memory_desc_t& c = md.data;
  std::ostringstream s;
  s << dims_key(md.dims()) << ':' << int(c.data_type) << ':' << int(c.format_kind);
  if (c.format_kind == dnnl_blocked) {
    const auto& b = c.format_desc.blocking;
    s << ":s";
    for (int i = 0; i < c.ndims; i++) s << b.strides[i] << ',';
    s << "b";
    for (int i = 0; i < b.inner_nblks; i++) s << b.inner_blks[i] << '/' << b.inner_idxs[i] << ',';
    s << "p";
    for (int i = 0; i < c.ndims; i++) s << c.padded_dims[i] << ',';
  }
  return s.str();
}

// ---- layouts and types ----------------------------------------------------------------
tag plain_tag(int ndims) {
  switch (ndims) {
    case 1: return tag::a;
    case 2: return tag::ab;
    case 3: return tag::abc;
    case 4: return tag::abcd;
    case 5: return tag::abcde;
    default: throw_range_error("tensors of rank " + std::to_string(ndims) + " are not supported (1 to 5)");
  }
}

memory::desc plain_desc(const memory::dims& dims, dt type) { return memory::desc(dims, type, plain_tag(int(dims.size()))); }

bool is_plain(const memory::desc& md) { return md == plain_desc(md.dims(), md.data_type()); }

namespace {
// The typed array kinds' element sizes, for the check below.
constexpr size_t array_element_size(napi_typedarray_type kind) {
  switch (kind) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: return 1;
    case napi_int16_array: case napi_uint16_array: return 2;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: return 4;
    default: return 8;
  }
}

constexpr DTypeInfo kDTypes[] = {
    {dt::f32, "float32", 4, napi_float32_array, "Float32Array"},
    {dt::bf16, "bfloat16", 2, napi_uint16_array, "Uint16Array (bfloat16)"},  // bfloat16 bits travel as Uint16Array
    {dt::u8, "uint8", 1, napi_uint8_array, "Uint8Array"},
    {dt::s8, "int8", 1, napi_int8_array, "Int8Array"},
    {dt::s32, "int32", 4, napi_int32_array, "Int32Array"},
};

// Typed arrays are copied into tensors byte for byte: a dtype whose array has elements of
// another size, or two dtypes sharing a type or an array kind, would read the wrong values.
constexpr bool dtypes_consistent() {
  for (const DTypeInfo& a : kDTypes) {
    if (array_element_size(a.array) != a.size) return false;
    for (const DTypeInfo& b : kDTypes)
      if (&a != &b && (a.type == b.type || a.array == b.array)) return false;
  }
  return true;
}
static_assert(dtypes_consistent(), "every dtype's typed array has elements of its size, and no two dtypes share a type or an array kind");

std::string dtype_names() {
  std::string s;
  for (const DTypeInfo& d : kDTypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}
}  // namespace

const DTypeInfo* dtype_info(dt type) {
  for (const DTypeInfo& d : kDTypes)
    if (d.type == type) return &d;
  return nullptr;
}

const DTypeInfo* dtype_of_array(napi_typedarray_type kind) {
  for (const DTypeInfo& d : kDTypes)
    if (d.array == kind) return &d;
  return nullptr;
}

std::string typed_array_kinds() {
  std::string s;
  const size_t n = sizeof kDTypes / sizeof kDTypes[0];
  for (size_t i = 0; i < n; i++) s += std::string(i == 0 ? "a " : i + 1 == n ? " or " : ", ") + kDTypes[i].array_name;
  return s;
}

dt parse_dtype(const std::string& s) {
  for (const DTypeInfo& d : kDTypes)
    if (s == d.name) return d.type;
  throw_range_error("unknown dtype '" + s + "' (" + dtype_names() + ")");
}

const char* dtype_name(dt type) {
  const DTypeInfo* d = dtype_info(type);
  return d ? d->name : "unknown";
}

size_t dtype_size(dt type) {
  const DTypeInfo* d = dtype_info(type);
  if (!d) throw std::runtime_error("unsupported data type");
  return d->size;
}

memory::dims read_dims(const Napi::Value& v, const std::string& name) {
  auto d = read_ints(v, name, 0, 1, kMaxElements);
  if (d.empty() || d.size() > 5) throw_range_error(name + " must have 1 to 5 sizes, got " + std::to_string(d.size()));
  checked_numel(d, "a tensor of dims " + list_str(d));
  return d;
}

dt opt_dtype(const Napi::Object& o, const char* name, dt fallback, const std::vector<dt>& allowed) {
  std::vector<std::string> names;
  for (dt t : allowed) names.push_back(dtype_name(t));
  const dt chosen = parse_dtype(opt_choice(o, name, dtype_name(fallback), names));
  if (chosen == dt::bf16) frame().bf16_requested = true;
  return chosen;
}

}  // namespace fcn
