#include "engine.h"

#include <omp.h>

#include <mutex>
#include <sstream>

namespace fcn {

dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& cpu_stream() {
  static dnnl::stream strm(cpu_engine());
  return strm;
}

static std::unordered_map<std::string, CachedPrimitive>& cache() {
  static std::unordered_map<std::string, CachedPrimitive> c;
  return c;
}

// oneDNN (OpenMP runtime) fixes a primitive's thread count when it is created, so the
// count in force is part of the key: after setThreads a new primitive is made.
CachedPrimitive& cached(const std::string& key, const std::function<CachedPrimitive()>& make) {
  auto& c = cache();
  std::string k = std::to_string(omp_get_max_threads()) + "t|" + key;
  auto it = c.find(k);
  if (it != c.end()) return it->second;
  return c.emplace(k, make()).first->second;
}

void clear_primitive_cache() { cache().clear(); }
size_t primitive_cache_size() { return cache().size(); }

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

tag plain_tag(int ndims) {
  switch (ndims) {
    case 1: return tag::a;
    case 2: return tag::ab;
    case 3: return tag::abc;
    case 4: return tag::abcd;
    case 5: return tag::abcde;
    default: throw std::runtime_error("tensors of rank " + std::to_string(ndims) + " are not supported (1 to 5)");
  }
}

memory::desc plain_desc(const memory::dims& dims, dt type) { return memory::desc(dims, type, plain_tag(int(dims.size()))); }

bool is_plain(const memory::desc& md) { return md == plain_desc(md.dims(), md.data_type()); }

static Napi::Value get(const Napi::Object& o, const char* name) { return o.Has(name) ? o.Get(name) : o.Env().Undefined(); }

int64_t opt_int(const Napi::Object& o, const char* name, int64_t fallback) {
  auto v = get(o, name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("option '") + name + "' must be a number");
  return v.As<Napi::Number>().Int64Value();
}

double opt_num(const Napi::Object& o, const char* name, double fallback) {
  auto v = get(o, name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("option '") + name + "' must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

bool opt_bool(const Napi::Object& o, const char* name, bool fallback) {
  auto v = get(o, name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string("option '") + name + "' must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

Napi::Object opt_object(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsObject() ? info[i].As<Napi::Object>() : Napi::Object::New(info.Env());
}

std::string opt_str(const Napi::Object& o, const char* name, const std::string& fallback) {
  auto v = get(o, name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string("option '") + name + "' must be a string");
  return v.As<Napi::String>().Utf8Value();
}

std::vector<int64_t> opt_ints(const Napi::Object& o, const char* name, std::vector<int64_t> fallback) {
  auto v = get(o, name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsArray()) throw Napi::TypeError::New(o.Env(), std::string("option '") + name + "' must be an array of integers");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("option '") + name + "' must be an array of integers");
    out.push_back(e.As<Napi::Number>().Int64Value());
  }
  return out;
}

dt parse_dtype(const Napi::Env& env, const std::string& s) {
  if (s == "float32") return dt::f32;
  if (s == "bfloat16") return dt::bf16;
  if (s == "uint8") return dt::u8;
  if (s == "int32") return dt::s32;
  throw Napi::TypeError::New(env, "unknown dtype '" + s + "' (float32, bfloat16, uint8, int32)");
}

const char* dtype_name(dt type) {
  switch (type) {
    case dt::f32: return "float32";
    case dt::bf16: return "bfloat16";
    case dt::u8: return "uint8";
    case dt::s32: return "int32";
    default: return "unknown";
  }
}

size_t dtype_size(dt type) {
  switch (type) {
    case dt::f32: case dt::s32: return 4;
    case dt::bf16: return 2;
    case dt::u8: return 1;
    default: throw std::runtime_error("unsupported data type");
  }
}

}  // namespace fcn
