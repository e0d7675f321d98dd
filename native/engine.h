// The one oneDNN CPU engine and stream, the primitive cache, and the glue that every
// op family shares (argument checks, descriptor keys, error conversion).
#pragma once

#include <napi.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace fcn {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& cpu_engine();
dnnl::stream& cpu_stream();

// Every oneDNN primitive descriptor is expensive to create (it picks an implementation);
// ops look theirs up by a key that spells out every shape, layout and parameter.
struct CachedPrimitive {
  dnnl::primitive_desc_base pd;
  dnnl::primitive prim;
};
CachedPrimitive& cached(const std::string& key, const std::function<CachedPrimitive()>& make);
void clear_primitive_cache();
size_t primitive_cache_size();

// A readable, exact key for a memory descriptor: dims, data type and the full layout.
std::string md_key(const memory::desc& md);
std::string dims_key(const memory::dims& d);

// The plain (row-major) layout tag for a rank.
tag plain_tag(int ndims);
memory::desc plain_desc(const memory::dims& dims, dt type);
bool is_plain(const memory::desc& md);

// The options object at argument i (an empty one when absent).
Napi::Object opt_object(const Napi::CallbackInfo& info, size_t i);
// Reads small option values from a JS object, with messages that name the option.
int64_t opt_int(const Napi::Object& o, const char* name, int64_t fallback);
bool opt_bool(const Napi::Object& o, const char* name, bool fallback);
double opt_num(const Napi::Object& o, const char* name, double fallback);
std::vector<int64_t> opt_ints(const Napi::Object& o, const char* name, std::vector<int64_t> fallback);
std::string opt_str(const Napi::Object& o, const char* name, const std::string& fallback);
dt parse_dtype(const Napi::Env& env, const std::string& s);
const char* dtype_name(dt type);
size_t dtype_size(dt type);

// Wraps a native function so that oneDNN and C++ errors reach JS as Errors, not aborts.
using NativeFn = Napi::Value (*)(const Napi::CallbackInfo&);
template <NativeFn F>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  try {
    return F(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const dnnl::error& e) {
    throw Napi::Error::New(info.Env(), std::string("oneDNN: ") + e.what() + " (status " + std::to_string(int(e.status)) + ")");
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(info.Env(), "out of memory allocating a tensor");
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

}  // namespace fcn
