// Starts the real shmleased binary for one test, on a socket path and shm-name prefix of its own,
// so tests can run in parallel; stops it (SIGTERM, then SIGKILL) on destruction.
// Owns: the child process and its temporary directory (removed on destruction).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace shmlease::testing {

class DaemonProcess {
 public:
  // Starts shmleased (path baked in at build time, or $SHMLEASE_DAEMON) with `extra_args` (an
  // explicit --socket or --shm-prefix among them replaces the unique default) and waits until it
  // accepts connections. Throws std::runtime_error with the daemon's log if it fails.
  explicit DaemonProcess(std::vector<std::string> extra_args = {});
  ~DaemonProcess();
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  const std::string& socket_path() const { return socket_path_; }
  const std::string& shm_prefix() const { return shm_prefix_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  // Everything the daemon logged so far.
  std::string log() const;

  // SIGTERM and wait; returns the exit status as from waitpid. Idempotent.
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // Sends `signo` (SIGKILL: a crash) and waits for the exit; returns the wait status.
  int Kill(int signo);
  // Starts the daemon again, with the same socket, prefix and arguments (after Stop or Kill), and
  // waits until it accepts connections. The log file is appended to. Throws like the constructor.
  void Start();
  bool running() const { return pid_ > 0; }
  // How many descriptors the running daemon has open (/proc/<pid>/fd).
  size_t OpenDescriptors() const;
  // Names in /dev/shm that start with this daemon's prefix.
  std::vector<std::string> ShmObjects() const;

  static std::string DaemonBinary();
  static std::string CliBinary();

 private:
  std::string dir_;
  std::string socket_path_;
  std::string shm_prefix_;
  std::string log_path_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
  int status_ = 0;
};

}  // namespace shmlease::testing
