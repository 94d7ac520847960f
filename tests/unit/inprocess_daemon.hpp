// Runs shmleased's Daemon inside the test process, on a thread of its own, on a socket in a
// temporary directory and a shm prefix of its own, so that in-process tests can run in parallel
// with each other and with the integration tests.
// Owns: the Daemon, its thread and the temporary directory; the destructor stops the daemon
// (Daemon::RequestStop), joins the thread, unlinks whatever is left under the prefix and removes
// the directory.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "config.hpp"
#include "shmlease/client.hpp"

namespace shmlease::server {
class Daemon;
}  // namespace shmlease::server

namespace shmlease::testing {

class InProcessDaemon {
 public:
  // Builds the configuration from `flags` (setting name -> value, as on the command line; a
  // "socket" or "shm-prefix" among them replaces the unique default), binds the socket and starts
  // serving. Throws std::runtime_error when the daemon cannot start.
  explicit InProcessDaemon(std::map<std::string, std::string> flags = {});
  ~InProcessDaemon();
  InProcessDaemon(const InProcessDaemon&) = delete;
  InProcessDaemon& operator=(const InProcessDaemon&) = delete;

  const std::string& socket_path() const { return config_.socket; }
  const std::string& shm_prefix() const { return config_.shm_prefix; }
  const server::Config& config() const { return config_; }

  // Stops the daemon from this thread, waits until Run() has returned and destroys the Daemon (its
  // segments are freed, as when the process exits); returns Run()'s exit code. Idempotent.
  int Stop();
  bool running() const { return thread_.joinable(); }

  // This daemon's segment memory that exists: names in /dev/shm that start with its prefix, and
  // the memfds of that prefix this process holds (the daemon runs in it; clients close theirs).
  std::vector<std::string> ShmObjects() const;

 private:
  std::string dir_;
  server::Config config_;
  std::unique_ptr<server::Daemon> daemon_;
  std::thread thread_;
  int exit_code_ = 0;
};

// The fixture base of in-process tests: one InProcessDaemon per test; TearDown() stops it and
// fails the test if Run() did not return 0 or anything of it is left in /dev/shm.
class InProcessDaemonTest : public ::testing::Test {
 protected:
  void TearDown() override {
    EXPECT_EQ(daemon_.Stop(), 0);
    EXPECT_TRUE(daemon_.ShmObjects().empty()) << "shm objects left behind";
  }
  // A new connection to this test's daemon, with reconnecting off: a session that ends must show,
  // not be made again.
  Client Connect() {
    Client client(daemon_.socket_path());
    client.set_reconnect_timeout(std::chrono::milliseconds(0));
    return client;
  }

  InProcessDaemon daemon_;
};

}  // namespace shmlease::testing
