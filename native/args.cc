#include "args.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace fcn {

// ---- the op in progress and its errors -------------------------------------------------
namespace {
thread_local OpScope* innermost_op = nullptr;
}  // namespace

OpScope::OpScope(Napi::Env env, const char* op) : env(env), op(op), outer_(innermost_op) { innermost_op = this; }
OpScope::~OpScope() { innermost_op = outer_; }

OpScope& current_op() {
  if (!innermost_op) throw std::logic_error("native call without an op scope");
  return *innermost_op;
}

void throw_type_error(const std::string& what) {
  OpScope& f = current_op();
  throw Napi::TypeError::New(f.env, std::string(f.op) + ": " + what);
}

void throw_range_error(const std::string& what) {
  OpScope& f = current_op();
  throw Napi::RangeError::New(f.env, std::string(f.op) + ": " + what);
}

void throw_error(const std::string& what) {
  OpScope& f = current_op();
  throw Napi::Error::New(f.env, std::string(f.op) + ": " + what);
}

// ---- messages -------------------------------------------------------------------------
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

double read_number_in(const Napi::Value& v, const std::string& name, double lo, double hi) {
  const double d = read_number(v, name);
  if (d < lo || d > hi) throw_range_error(name + " must be from " + describe(Napi::Number::New(v.Env(), lo)) + " to " + describe(Napi::Number::New(v.Env(), hi)) + ", got " + describe(v));
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

Napi::Object options_arg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  if (v.IsUndefined() || v.IsNull()) return Napi::Object::New(info.Env());
  if (!v.IsObject() || v.IsArray() || v.IsFunction()) throw_type_error("options must be an object, got " + describe(v));
  return v.As<Napi::Object>();
}

// Absent options are undefined or null; a getter runs once.
static bool absent(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

// The option `name` read by `read`, or the fallback when absent: every opt_* below.
template <typename T, typename Read>
static T opt_or(const Napi::Object& o, const char* name, T fallback, Read read) {
  Napi::Value v = o.Get(name);
  return absent(v) ? fallback : read(v);
}

int64_t opt_int(const Napi::Object& o, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  return opt_or(o, name, fallback, [&](const Napi::Value& v) { return read_int(v, name, lo, hi); });
}

double opt_num(const Napi::Object& o, const char* name, double fallback) {
  return opt_or(o, name, fallback, [&](const Napi::Value& v) { return read_number(v, name); });
}

double opt_num_in(const Napi::Object& o, const char* name, double fallback, double lo, double hi) {
  return opt_or(o, name, fallback, [&](const Napi::Value& v) { return read_number_in(v, name, lo, hi); });
}

bool opt_bool(const Napi::Object& o, const char* name, bool fallback) {
  return opt_or(o, name, fallback, [&](const Napi::Value& v) { return read_bool(v, name); });
}

std::vector<int64_t> opt_ints(const Napi::Object& o, const char* name, std::vector<int64_t> fallback, size_t count, int64_t lo, int64_t hi) {
  return opt_or(o, name, std::move(fallback), [&](const Napi::Value& v) { return read_ints(v, name, count, lo, hi); });
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

}  // namespace fcn
