// The keeper: a minimal service manager for runs without one (containers, by hand, tests). It
// speaks systemd's own protocol, so the daemon has one code path: it binds a notify socket, runs
// shmleased as its child with $NOTIFY_SOCKET set, keeps the descriptors the daemon stores
// (FDSTORE=1, FDNAME=, FDSTOREREMOVE=1) and, when the daemon dies, starts it again with them at
// fd 3.. (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES). docs/RESTART.md describes the rule and signals.
// Owns: the notify socket, the child process and every stored descriptor (KeptFds), all released
// when RunKeeper() returns.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config.hpp"

namespace shmlease::server {

// One notify datagram: newline-separated KEY=VALUE assignments, as sd_notify sends them. Only
// what the keeper acts on is kept.
struct NotifyMessage {
  bool ready = false;          // READY=1
  bool stopping = false;       // STOPPING=1
  bool fdstore = false;        // FDSTORE=1: the descriptors sent along are to be kept
  bool fdstoreremove = false;  // FDSTOREREMOVE=1: drop those named FDNAME
  std::string fdname;          // FDNAME=, "" when absent
  std::string status;          // STATUS=
};

// Parses a datagram. Unknown keys are ignored (systemd's rule); false with `error` for a line
// without '=', and for an FDNAME that systemd would refuse (empty, longer than 255 bytes, or
// holding ':' or a control character).
bool ParseNotifyMessage(std::string_view text, NotifyMessage& message, std::string& error);

// The descriptors the keeper holds for the daemon, in the order they were stored.
class KeptFds {
 public:
  KeptFds() = default;
  ~KeptFds();
  KeptFds(const KeptFds&) = delete;
  KeptFds& operator=(const KeptFds&) = delete;

  // Takes `fd` under `name`. A descriptor of an open file already kept is closed instead (like
  // systemd, which removes duplicates). False, and `fd` closed, when `limit` are kept already.
  bool Add(std::string name, int fd, size_t limit);
  // Closes every descriptor kept under `name`; how many.
  size_t Remove(std::string_view name);
  void Clear();
  size_t size() const { return fds_.size(); }
  const std::vector<std::pair<std::string, int>>& fds() const { return fds_; }
  // "a:b:c", as LISTEN_FDNAMES.
  std::string Names() const;

 private:
  std::vector<std::pair<std::string, int>> fds_;
};

// The rule: a keeper is started by shmleased when it has a state dir, no service manager
// ($NOTIFY_SOCKET unset) and keeper is not "no".
bool ShouldStartKeeper(const Config& config);

// Runs the keeper until the daemon stops for good; returns the exit code for main(). argv is
// shmleased's own command line, given unchanged to each daemon it starts.
//  - the daemon exits 0: stopped; the keeper exits 0 and closes what it kept (segments are freed,
//    as with systemd when a service stops).
//  - the daemon dies by a signal or exits non-zero: started again at once with every kept
//    descriptor; more than 5 such starts in 10 s that never said READY=1 (a crash loop at
//    start-up, e.g. an unusable state file): the keeper gives up with the daemon's status.
//  - SIGTERM, SIGINT: passed on; the keeper exits once the daemon has. SIGHUP: passed on.
//  - SIGUSR2 (an upgrade by hand): SIGTERM to the daemon, then the daemon binary (the same path,
//    so a new build put there) is started again with everything kept.
int RunKeeper(char** argv);

}  // namespace shmlease::server
