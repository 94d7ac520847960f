// Sizes of by-hand runs: a number from the environment, or the CI default.
#pragma once

#include <cstdint>
#include <cstdlib>

namespace shmlease::testing {

// The value of the environment variable `name` as a whole number, or `fallback` when it is unset
// or empty.
inline uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  return std::strtoull(value, nullptr, 10);
}

}  // namespace shmlease::testing
