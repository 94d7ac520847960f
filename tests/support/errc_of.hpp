// The Errc a call fails with, or kOk when it succeeds: for tests that check error codes.
#pragma once

#include <functional>

#include "shmlease/client.hpp"

namespace shmlease::testing {

inline Errc CodeOf(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.errc();
  }
  return Errc::kOk;
}

}  // namespace shmlease::testing
