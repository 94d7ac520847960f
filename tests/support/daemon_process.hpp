// Starts the real shmleased binary for one test, on a socket path and shm-name prefix of its own,
// so tests can run in parallel; stops it (SIGTERM, then SIGKILL) on destruction. With a
// --state-dir, shmleased runs as a keeper (server/keeper.hpp) whose child is the daemon: pid()
// is that child, keeper_pid() the process started here.
// Owns: the child process (the keeper or the daemon) and its temporary directory (removed on
// destruction).
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
  // The daemon's pid: the keeper's current child (from the keeper's log line) when there is a
  // keeper, else the process started here.
  pid_t pid() const;
  // The keeper's pid, or -1 when shmleased runs without one.
  pid_t keeper_pid() const { return keeper_ ? pid_ : -1; }
  // Everything the daemon logged so far.
  std::string log() const;

  // SIGTERM and wait; returns the exit status as from waitpid. Idempotent.
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // Sends `signo` (SIGKILL: a crash) to the daemon and waits for its death; returns the wait
  // status. With a keeper: the keeper is paused first (SIGSTOP), so the daemon stays down, with
  // the keeper holding its descriptors, until Start().
  int Kill(int signo);
  // Starts the daemon again, with the same socket, prefix and arguments (after Stop or Kill), and
  // waits until it accepts connections. The log file is appended to. Throws like the constructor.
  // After Kill() with a keeper: lets the keeper go on (SIGCONT), which restarts the daemon.
  void Start();
  // With a keeper: SIGUSR2, the keeper's restart (an upgrade by hand) that keeps every stored
  // descriptor; waits for the new daemon's readiness. Throws without a keeper.
  void Restart();
  bool running() const { return pid_ > 0; }
  // How many descriptors the running daemon has open (/proc/<pid>/fd).
  size_t OpenDescriptors() const;
  // The daemon's segment memory that exists: names in /dev/shm that start with this daemon's
  // prefix, and the memfds and unlinked huge-dir files "<prefix>.<id>" that the daemon or the
  // keeper holds open (/proc/<pid>/fd), each once.
  std::vector<std::string> ShmObjects() const;
  // Segment descriptors the keeper holds for the daemon (its /proc/<pid>/fd links to this
  // prefix's memory), 0 without a keeper.
  size_t KeptDescriptors() const;

  static std::string DaemonBinary();
  static std::string CliBinary();

 private:
  std::string dir_;
  std::string socket_path_;
  std::string shm_prefix_;
  std::string log_path_;
  std::vector<std::string> args_;
  size_t ReadyLines() const;
  void WaitReady(size_t ready_before);

  pid_t pid_ = -1;
  int status_ = 0;
  bool keeper_ = false;
  bool keeper_paused_ = false;
};

}  // namespace shmlease::testing
