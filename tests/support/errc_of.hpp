// The Errc a call fails with, or kOk when it succeeds: for tests that check error codes.
#pragma once

#include <functional>
#include <string>

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

// The Errc and message a call fails with; {kOk, ""} when it succeeds.
struct Failure {
  Errc code = Errc::kOk;
  std::string message;
  bool Says(const std::string& text) const { return message.find(text) != std::string::npos; }
};
inline Failure FailureOf(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return {e.errc(), e.what()};
  }
  return {};
}

}  // namespace shmlease::testing
