// Waiting in tests for what another process or thread does: polls instead of sleeping a guess.
#pragma once

#include <chrono>
#include <thread>

namespace shmlease::testing {

// Calls `predicate` every 5 ms until it returns true (then true) or `timeout` has passed (false).
template <typename F>
bool WaitFor(F&& predicate, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace shmlease::testing
