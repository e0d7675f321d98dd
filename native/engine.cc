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

CallFrame::CallFrame(Napi::Env env, const char* op) : env(env), state(state_of(env)), op(op), outer_(innermost) { innermost = this; }

CallFrame& frame() {
  if (!innermost) throw std::logic_error("native call without a call frame");
  return *innermost;
}

CallFrame::~CallFrame() {
  innermost = outer_;
  release_pins(pinned);
}

void throw_type_error(const std::string& what) {
  CallFrame& f = frame();
  throw Napi::TypeError::New(f.env, std::string(f.op) + ": " + what);
}

void throw_range_error(const std::string& what) {
  CallFrame& f = frame();
  throw Napi::RangeError::New(f.env, std::string(f.op) + ": " + what);
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

std::string list_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

static std::string number_str(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  // The shortest form that reads back as the same number, as JS prints it.
  char buf[32];
  for (int precision = 1; precision <= 17; precision++) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  return buf;
}

std::string describe(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return v.As<Napi::Boolean>().Value() ? "true" : "false";
    case napi_number: return number_str(v.As<Napi::Number>().DoubleValue());
    case napi_string: return "a string";
    case napi_symbol: return "a symbol";
    case napi_function: return "a function";
    case napi_bigint: return "a bigint";
    case napi_external: return "an external";
    case napi_object: return v.IsArray() ? "an array" : v.IsTypedArray() ? "a typed array" : "an object";
  }
  return "a value";
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

// ---- arguments ------------------------------------------------------------------------
// The bound a value broke: "≥ lo", "≤ hi", or "from lo to hi" when it is unclear which.
static std::string bound_str(int64_t lo, int64_t hi, bool below, bool above) {
  if (hi >= kMaxSafeInteger || (below && !above)) return "≥ " + std::to_string(lo);
  if (above && !below) return "≤ " + std::to_string(hi);
  return "from " + std::to_string(lo) + " to " + std::to_string(hi);
}

int64_t read_int(const Napi::Value& v, const std::string& name, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) throw_type_error(name + " must be an integer, got " + describe(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= double(lo) && d <= double(hi)) || d != std::floor(d))
    throw_range_error(name + " must be an integer " + bound_str(lo, hi, d < double(lo), d > double(hi)) + ", got " + describe(v));
  return int64_t(d);
}

double read_number(const Napi::Value& v, const std::string& name) {
  if (!v.IsNumber()) throw_type_error(name + " must be a number, got " + describe(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw_range_error(name + " must be a finite number, got " + describe(v));
  return d;
}

bool read_bool(const Napi::Value& v, const std::string& name) {
  if (!v.IsBoolean()) throw_type_error(name + " must be a boolean, got " + describe(v));
  return v.As<Napi::Boolean>().Value();
}

std::vector<int64_t> read_ints(const Napi::Value& v, const std::string& name, size_t count, int64_t lo, int64_t hi) {
  const std::string kind = count ? "an array of " + std::to_string(count) + " integers" : "an array of integers";
  if (!v.IsArray()) throw_type_error(name + " must be " + kind + ", got " + describe(v));
  auto a = v.As<Napi::Array>();
  const uint32_t n = a.Length();
  if (count && n != count) throw_range_error(name + " must have " + std::to_string(count) + " values, got " + std::to_string(n));
  if (n > 64) throw_range_error(name + " has " + std::to_string(n) + " values");
  std::vector<int64_t> out;
  bool in_range = true, integral = true, below = false, above = false;
  std::vector<std::string> shown;
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber()) throw_type_error(name + " must be " + kind + ", got " + describe(e) + " at index " + std::to_string(i));
    const double d = e.As<Napi::Number>().DoubleValue();
    shown.push_back(describe(e));
    if (d != std::floor(d)) integral = false;
    below = below || d < double(lo);
    above = above || d > double(hi);
    if (!(d >= double(lo) && d <= double(hi)) || d != std::floor(d)) in_range = false;
    out.push_back(in_range ? int64_t(d) : 0);
  }
  if (!in_range) {
    std::string got = "[";
    for (size_t i = 0; i < shown.size(); i++) got += (i ? ", " : "") + shown[i];
    throw_range_error(name + " must be " + (integral ? "" : "integers ") + bound_str(lo, hi, below, above) + ", got " + got + "]");
  }
  return out;
}

memory::dims read_dims(const Napi::Value& v, const std::string& name) {
  auto d = read_ints(v, name, 0, 1, kMaxElements);
  if (d.empty() || d.size() > 5) throw_range_error(name + " must have 1 to 5 sizes, got " + std::to_string(d.size()));
  checked_numel(d, "a tensor of dims " + list_str(d));
  return d;
}

Napi::Object options_arg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  if (v.IsUndefined() || v.IsNull()) return Napi::Object::New(info.Env());
  if (!v.IsObject() || v.IsArray() || v.IsFunction()) throw_type_error("options must be an object, got " + describe(v));
  return v.As<Napi::Object>();
}

// Absent options are undefined or null; a getter runs once.
static bool absent(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

int64_t opt_int(const Napi::Object& o, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  Napi::Value v = o.Get(name);
  return absent(v) ? fallback : read_int(v, name, lo, hi);
}

double opt_num(const Napi::Object& o, const char* name, double fallback) {
  Napi::Value v = o.Get(name);
  return absent(v) ? fallback : read_number(v, name);
}

bool opt_bool(const Napi::Object& o, const char* name, bool fallback) {
  Napi::Value v = o.Get(name);
  return absent(v) ? fallback : read_bool(v, name);
}

std::vector<int64_t> opt_ints(const Napi::Object& o, const char* name, std::vector<int64_t> fallback, size_t count, int64_t lo, int64_t hi) {
  Napi::Value v = o.Get(name);
  return absent(v) ? fallback : read_ints(v, name, count, lo, hi);
}

std::string opt_str(const Napi::Object& o, const char* name, const std::string& fallback) {
  Napi::Value v = o.Get(name);
  if (absent(v)) return fallback;
  if (!v.IsString()) throw_type_error(std::string(name) + " must be a string, got " + describe(v));
  return v.As<Napi::String>().Utf8Value();
}

std::string opt_choice(const Napi::Object& o, const char* name, const std::string& fallback, const std::vector<std::string>& allowed) {
  std::string s = opt_str(o, name, fallback);
  std::string list;
  for (const auto& a : allowed) {
    if (a == s) return s;
    list += (list.empty() ? "'" : ", '") + a + "'";
  }
  throw_range_error(std::string(name) + " must be one of " + list + ", got '" + s + "'");
}

dt opt_dtype(const Napi::Object& o, const char* name, dt fallback, const std::vector<dt>& allowed) {
  std::vector<std::string> names;
  for (dt t : allowed) names.push_back(dtype_name(t));
  const dt chosen = parse_dtype(opt_choice(o, name, dtype_name(fallback), names));
  if (chosen == dt::bf16) frame().bf16_requested = true;
  return chosen;
}

}  // namespace fcn
