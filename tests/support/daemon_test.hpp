// The fixture base of the tests that run against the real shmleased: one DaemonProcess per test
// (its own socket and shm prefix), clients of it, and the checks every such test ends with.
// Owns: the DaemonProcess (and through it the daemon process and its directory); TearDown() stops
// it and fails the test if it did not exit cleanly or left anything in /dev/shm.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <string>
#include <utility>
#include <vector>

#include "daemon_process.hpp"
#include "shmlease/client.hpp"

namespace shmlease::testing {

// Stops `daemon` (SIGTERM) and checks that it exited with status 0 and that nothing of its is left:
// no name in /dev/shm, no process (daemon or keeper) holding its segments' memory. While it runs,
// ShmObjects() counts the memfds it and its keeper hold: tests check those before the stop.
inline void ExpectCleanStop(DaemonProcess& daemon) {
  int status = daemon.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << daemon.log();
  EXPECT_TRUE(daemon.ShmObjects().empty()) << "shm objects left behind";
  EXPECT_EQ(daemon.KeptDescriptors(), 0u);
}

// Removes every segment the daemon lists (their memory goes with their last leases).
inline void RemoveAllSegments(const DaemonProcess& daemon) {
  Client client(daemon.socket_path());
  for (const SegmentInfo& info : client.List()) client.Remove(info.name);
}

class DaemonTest : public ::testing::Test {
 protected:
  // Starts shmleased with `args` (DaemonProcess's extra arguments) for this test.
  explicit DaemonTest(std::vector<std::string> args = {}) : daemon_(std::move(args)) {}
  void TearDown() override { ExpectCleanStop(daemon_); }

  // A new connection to this test's daemon.
  Client Connect() { return Client(daemon_.socket_path()); }

  DaemonProcess daemon_;
};

}  // namespace shmlease::testing
