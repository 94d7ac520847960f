#include "keeper.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>

#include "fd_store.hpp"

namespace shmlease::server {

namespace {

bool ValidFdName(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name) {
    if (c == ':' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}

// Most descriptors the keeper holds: every segment (max-segments defaults to 4096) and the socket,
// with room; the descriptor limit bounds it too.
constexpr size_t kKeptLimit = 65536;
// systemd's StartLimitBurst= / StartLimitIntervalSec= defaults.
constexpr int kStartBurst = 5;
constexpr auto kStartInterval = std::chrono::seconds(10);

}  // namespace

bool ParseNotifyMessage(std::string_view text, NotifyMessage& message, std::string& error) {
  message = NotifyMessage{};
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    size_t eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      error = "notify line '" + std::string(line.substr(0, 64)) + "' is not KEY=VALUE";
      return false;
    }
    std::string_view key = line.substr(0, eq);
    std::string_view value = line.substr(eq + 1);
    if (key == "READY") {
      message.ready = value == "1";
    } else if (key == "STOPPING") {
      message.stopping = value == "1";
    } else if (key == "FDSTORE") {
      message.fdstore = value == "1";
    } else if (key == "FDSTOREREMOVE") {
      message.fdstoreremove = value == "1";
    } else if (key == "FDNAME") {
      if (!ValidFdName(value)) {
        error = "FDNAME='" + std::string(value.substr(0, 64)) +
                "' is not a valid name (1 to 255 bytes, no ':' nor control characters)";
        return false;
      }
      message.fdname = value;
    } else if (key == "STATUS") {
      message.status = value;
    }
  }
  return true;
}

KeptFds::~KeptFds() { Clear(); }

bool KeptFds::Add(std::string name, int fd, size_t limit) {
  struct stat added {};
  if (::fstat(fd, &added) == 0) {
    for (const auto& [kept_name, kept] : fds_) {
      struct stat st {};
      // The same open file description twice: systemd keeps one (same_fd); the inode is close
      // enough here since the daemon stores each file once.
      if (::fstat(kept, &st) == 0 && st.st_dev == added.st_dev && st.st_ino == added.st_ino &&
          kept_name == name) {
        ::close(fd);
        return true;
      }
    }
  }
  if (fds_.size() >= limit) {
    ::close(fd);
    return false;
  }
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  fds_.emplace_back(std::move(name), fd);
  return true;
}

size_t KeptFds::Remove(std::string_view name) {
  size_t removed = 0;
  for (auto it = fds_.begin(); it != fds_.end();) {
    if (it->first == name) {
      ::close(it->second);
      it = fds_.erase(it);
      ++removed;
    } else {
      ++it;
    }
  }
  return removed;
}

void KeptFds::Clear() {
  for (auto& [name, fd] : fds_) ::close(fd);
  fds_.clear();
}

std::string KeptFds::Names() const {
  std::string out;
  for (const auto& [name, fd] : fds_) out += (out.empty() ? "" : ":") + name;
  return out;
}

bool ShouldStartKeeper(const Config& config) {
  return !config.state_dir.empty() && config.keeper != "no" && !FdStoreAvailable();
}

namespace {

class Keeper {
 public:
  explicit Keeper(char** argv) : argv_(argv) {}
  ~Keeper() {
    if (notify_fd_ >= 0) ::close(notify_fd_);
    if (signal_fd_ >= 0) ::close(signal_fd_);
  }

  int Run();

 private:
  bool Setup();
  bool StartDaemon();
  void OnMessage();
  // The daemon exited with `status`: false when the keeper is done (exit_code_ set).
  bool OnDaemonExit(int status);
  void Finish();

  char** argv_;
  std::string exe_;
  std::string notify_name_;  // "@..." for NOTIFY_SOCKET
  int notify_fd_ = -1;
  int signal_fd_ = -1;
  pid_t child_ = -1;
  KeptFds kept_;
  bool stopping_ = false;
  bool upgrading_ = false;
  bool restart_pending_ = false;
  int exit_code_ = 0;
  std::deque<std::chrono::steady_clock::time_point> starts_;
};

bool Keeper::Setup() {
  char path[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) {
    spdlog::error("keeper: cannot find the shmleased binary (/proc/self/exe): {}",
                  std::strerror(errno));
    return false;
  }
  exe_.assign(path, static_cast<size_t>(n));
  // Abstract, with an unguessable name; only the daemon's own datagrams count (pid checked per
  // message with SO_PASSCRED, like NotifyAccess=main).
  uint64_t random = 0;
  if (::getrandom(&random, sizeof(random), 0) != static_cast<ssize_t>(sizeof(random))) {
    random = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  char name[96];
  std::snprintf(name, sizeof(name), "shmleased-keeper/%d/%016llx", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(random));
  notify_name_ = std::string("@") + name;
  notify_fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name, std::strlen(name));
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + std::strlen(name));
  int one = 1;
  if (notify_fd_ < 0 || ::bind(notify_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::setsockopt(notify_fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0) {
    spdlog::error("keeper: cannot make its notify socket: {}", std::strerror(errno));
    return false;
  }
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR2, SIGCHLD}) sigaddset(&set, sig);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  signal_fd_ = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd_ < 0) {
    spdlog::error("keeper: signalfd: {}", std::strerror(errno));
    return false;
  }
  // What a service manager passed to shmleased itself (socket activation without one) is kept
  // like what the daemon stores.
  char** names = nullptr;
  int passed = sd_listen_fds_with_names(1, &names);
  for (int i = 0; i < passed; ++i) {
    kept_.Add(names != nullptr && names[i] != nullptr ? names[i] : "unknown",
              SD_LISTEN_FDS_START + i, kKeptLimit);
  }
  if (names != nullptr) {
    for (int i = 0; i < passed; ++i) std::free(names[i]);
    std::free(names);
  }
  return true;
}

bool Keeper::StartDaemon() {
  auto now = std::chrono::steady_clock::now();
  while (!starts_.empty() && now - starts_.front() > kStartInterval) starts_.pop_front();
  starts_.push_back(now);
  const pid_t keeper = ::getpid();
  const std::string names = kept_.Names();
  const size_t count = kept_.size();
  pid_t pid = ::fork();
  if (pid < 0) {
    spdlog::error("keeper: cannot fork the daemon: {}", std::strerror(errno));
    return false;
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Nothing could restart a daemon whose keeper is gone: it stops then, cleanly.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != keeper) ::_exit(1);
    // Everything kept goes to 3.. in order: first out of the way (above the target range), then
    // down; dup2 leaves the targets without FD_CLOEXEC.
    const int first = SD_LISTEN_FDS_START;
    std::vector<int> moved;
    for (const auto& [name, fd] : kept_.fds()) {
      moved.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, first + static_cast<int>(count)));
    }
    for (size_t i = 0; i < moved.size(); ++i) {
      if (moved[i] < 0 || ::dup2(moved[i], first + static_cast<int>(i)) < 0) ::_exit(126);
    }
    if (count > 0) {
      ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
      ::setenv("LISTEN_FDS", std::to_string(count).c_str(), 1);
      ::setenv("LISTEN_FDNAMES", names.c_str(), 1);
    } else {
      ::unsetenv("LISTEN_PID");
      ::unsetenv("LISTEN_FDS");
      ::unsetenv("LISTEN_FDNAMES");
    }
    ::setenv("NOTIFY_SOCKET", notify_name_.c_str(), 1);
    ::execv(exe_.c_str(), argv_);
    std::fprintf(stderr, "keeper: cannot run %s: %s\n", exe_.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  child_ = pid;
  // Tests and operators find the daemon's pid here (tests/support/daemon_process.cpp reads it).
  spdlog::info("keeper: started shmleased (pid {}) with {} stored descriptor(s)", pid, count);
  return true;
}

void Keeper::OnMessage() {
  for (;;) {
    char buf[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(ucred))];
    iovec iov{buf, sizeof(buf) - 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(notify_fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return;  // EAGAIN: drained
    std::vector<int> fds;
    const ucred* cred = nullptr;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int* data = reinterpret_cast<const int*>(CMSG_DATA(c));
        fds.insert(fds.end(), data, data + k);
      } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        cred = reinterpret_cast<const ucred*>(CMSG_DATA(c));
      }
    }
    auto drop = [&fds] {
      for (int fd : fds) ::close(fd);
      fds.clear();
    };
    if (cred == nullptr || cred->pid != child_ || child_ <= 0) {
      spdlog::warn("keeper: ignoring a notify message from pid {}: not the daemon's",
                   cred != nullptr ? cred->pid : 0);
      drop();
      continue;
    }
    if ((msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0) {
      spdlog::warn("keeper: a notify message from the daemon was truncated; ignored");
      drop();
      continue;
    }
    NotifyMessage m;
    std::string error;
    if (!ParseNotifyMessage(std::string_view(buf, static_cast<size_t>(n)), m, error)) {
      spdlog::warn("keeper: bad notify message from the daemon: {}", error);
      drop();
      continue;
    }
    if (m.fdstore) {
      std::string name = m.fdname.empty() ? "stored" : m.fdname;
      for (int fd : fds) {
        if (!kept_.Add(name, fd, kKeptLimit)) {
          spdlog::warn("keeper: holds {} descriptors already; '{}' not kept", kKeptLimit, name);
        }
      }
      fds.clear();
    }
    drop();
    if (m.fdstoreremove && !m.fdname.empty()) kept_.Remove(m.fdname);
    // Only starts that never got ready count towards giving up: a crash loop at start-up, not
    // a daemon that served and then died.
    if (m.ready) starts_.clear();
  }
}

void Keeper::Finish() {
  // The socket the daemon stored is served by nobody from now on: its file goes too.
  for (const auto& [name, fd] : kept_.fds()) {
    if (name != kListenFdName) continue;
    sockaddr_un addr{};
    socklen_t len = sizeof(addr);
    struct stat st {};
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 && addr.sun_path[0] &&
        ::lstat(addr.sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
      ::unlink(addr.sun_path);
    }
  }
  if (kept_.size() > 0) {
    spdlog::info("keeper: exits; releasing {} stored descriptor(s)", kept_.size());
  }
  kept_.Clear();
}

bool Keeper::OnDaemonExit(int status) {
  child_ = -1;
  const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::string how = WIFEXITED(status) ? "exited with status " + std::to_string(code)
                                      : std::string("was killed by signal ") +
                                            std::to_string(WTERMSIG(status));
  if (stopping_) {
    spdlog::info("keeper: shmleased {}; stopping", how);
    exit_code_ = code;
    return false;
  }
  if (upgrading_) {
    upgrading_ = false;
    spdlog::info("keeper: shmleased {}; starting {} again (SIGUSR2)", how, exe_);
    restart_pending_ = true;
    starts_.clear();
    return true;
  }
  if (clean) {
    spdlog::info("keeper: shmleased stopped; the keeper exits too");
    exit_code_ = 0;
    return false;
  }
  if (starts_.size() >= static_cast<size_t>(kStartBurst) &&
      std::chrono::steady_clock::now() - starts_.front() < kStartInterval) {
    spdlog::error("keeper: shmleased {}, after {} starts in {} s; giving up", how, starts_.size(),
                  kStartInterval.count());
    exit_code_ = code == 0 ? 1 : code;
    return false;
  }
  spdlog::warn("keeper: shmleased {}; starting it again with {} stored descriptor(s)", how,
               kept_.size());
  restart_pending_ = true;
  return true;
}

int Keeper::Run() {
  if (!Setup()) return 1;
  if (!StartDaemon()) return 1;
  for (;;) {
    if (restart_pending_) {
      restart_pending_ = false;
      if (!StartDaemon()) {
        Finish();
        return 1;
      }
    }
    pollfd fds[2] = {{notify_fd_, POLLIN, 0}, {signal_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
      spdlog::error("keeper: poll: {}", std::strerror(errno));
      break;
    }
    // Messages first: what the daemon stored just before it died must be kept.
    OnMessage();
    signalfd_siginfo info{};
    while (::read(signal_fd_, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
      int sig = static_cast<int>(info.ssi_signo);
      if (sig == SIGCHLD) {
        OnMessage();
        int status = 0;
        pid_t pid;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
          if (pid != child_) continue;
          if (!OnDaemonExit(status)) {
            Finish();
            return exit_code_;
          }
        }
      } else if (sig == SIGUSR2) {
        if (child_ > 0 && !stopping_) {
          spdlog::info("keeper: SIGUSR2: restarting shmleased (pid {}) keeping {} descriptor(s)",
                       child_, kept_.size());
          upgrading_ = true;
          ::kill(child_, SIGTERM);
        }
      } else {
        if (sig != SIGHUP) stopping_ = true;
        if (child_ > 0) {
          ::kill(child_, sig);
        } else if (stopping_) {
          Finish();
          return exit_code_;
        }
      }
    }
  }
  if (child_ > 0) ::kill(child_, SIGTERM);
  Finish();
  return 1;
}

}  // namespace

int RunKeeper(char** argv) {
  Keeper keeper(argv);
  return keeper.Run();
}

}  // namespace shmlease::server
