// Reading JS arguments and reporting errors, "<op>: <what>", for every native export: the
// engine's ops and the MPI addon's functions share these readers. Errors name the op in the
// innermost OpScope of the calling thread, so readers need not be told which op they serve.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace fcn {

constexpr int64_t kMaxSafeInteger = (int64_t(1) << 53) - 1;  // JS numbers are exact up to here

// The op running on this thread while it lives (scopes nest: a getter may call another export).
class OpScope {
 public:
  OpScope(Napi::Env env, const char* op);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;
  Napi::Env env;
  const char* op;

 private:
  OpScope* outer_;
};
OpScope& current_op();

// TypeError for an argument of the wrong kind or type, RangeError for a bad value or size.
[[noreturn]] void throw_type_error(const std::string& what);
[[noreturn]] void throw_range_error(const std::string& what);
// An Error: the operation itself failed.
[[noreturn]] void throw_error(const std::string& what);

// "[0, 1]": how messages show lists of numbers.
std::string list_str(const std::vector<int64_t>& v);
// How a JS value is shown in messages: numbers by value, anything else by kind.
std::string describe(const Napi::Value& v);

// Arguments. `name` is how the message calls the value.
int64_t read_int(const Napi::Value& v, const std::string& name, int64_t lo, int64_t hi);
double read_number(const Napi::Value& v, const std::string& name);  // any finite number
// A finite number in [lo, hi].
double read_number_in(const Napi::Value& v, const std::string& name, double lo, double hi);
bool read_bool(const Napi::Value& v, const std::string& name);
// A list of `count` integers in [lo, hi] (count 0: any length).
std::vector<int64_t> read_ints(const Napi::Value& v, const std::string& name, size_t count, int64_t lo, int64_t hi);

// The options object at argument i: an empty one when absent (undefined or null), a TypeError
// when it is something else. Each reader returns `fallback` for an absent (undefined or null)
// option; the option's name is the name in its messages.
Napi::Object options_arg(const Napi::CallbackInfo& info, size_t i);
int64_t opt_int(const Napi::Object& o, const char* name, int64_t fallback, int64_t lo, int64_t hi);
double opt_num(const Napi::Object& o, const char* name, double fallback);
double opt_num_in(const Napi::Object& o, const char* name, double fallback, double lo, double hi);
bool opt_bool(const Napi::Object& o, const char* name, bool fallback);
std::vector<int64_t> opt_ints(const Napi::Object& o, const char* name, std::vector<int64_t> fallback, size_t count, int64_t lo, int64_t hi);
std::string opt_str(const Napi::Object& o, const char* name, const std::string& fallback);
// One of `allowed` (a TypeError for a non-string, a RangeError for any other string).
std::string opt_choice(const Napi::Object& o, const char* name, const std::string& fallback, const std::vector<std::string>& allowed);

}  // namespace fcn
