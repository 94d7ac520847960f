#include "daemon_process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

namespace shmlease::testing {
namespace {

constexpr const char* kReadyLine = " ready: listening on ";
// server/keeper.cpp logs this with the daemon's pid each time it starts one.
constexpr const char* kKeeperStarted = "keeper: started shmleased (pid ";

// Whether `pid` has died (gone, or a zombie its parent has not reaped yet).
bool Dead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');
  return text.empty() || paren == std::string::npos || paren + 2 >= text.size() ||
         text[paren + 2] == 'Z' || text[paren + 2] == 'X';
}

// Targets of /proc/<pid>/fd/* links.
std::vector<std::string> FdTargets(pid_t pid) {
  std::vector<std::string> out;
  if (pid <= 0) return out;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::error_code link_ec;
    auto target = std::filesystem::read_symlink(it->path(), link_ec);
    if (!link_ec) out.push_back(target.string());
  }
  return out;
}

bool CanConnect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// The part of a daemon log from the first sanitizer report on (UBSan reports go to stderr, which
// is the log; ASan and TSan ones too unless scripts/dev sends them to files), or "".
std::string SanitizerReport(const std::string& log) {
  size_t at = std::string::npos;
  for (const char* marker : {"runtime error:", "Sanitizer:"}) at = std::min(at, log.find(marker));
  if (at == std::string::npos) return "";
  const size_t line = log.rfind('\n', at);
  return log.substr(line == std::string::npos ? 0 : line + 1, 8000);
}

std::string FromEnvOr(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

}  // namespace

std::string DaemonProcess::DaemonBinary() { return FromEnvOr("SHMLEASE_DAEMON", SHMLEASE_DAEMON_PATH); }
std::string DaemonProcess::CliBinary() { return FromEnvOr("SHMLEASE_CLI", SHMLEASE_CLI_PATH); }

DaemonProcess::DaemonProcess(std::vector<std::string> extra_args) {
  std::string tmpl = std::filesystem::temp_directory_path().string() + "/shmlease-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  socket_path_ = dir_ + "/shmleased.sock";
  shm_prefix_ = "shmlease-test-" + dir_.substr(dir_.size() - 6) + "-" + std::to_string(::getpid());
  log_path_ = dir_ + "/shmleased.log";

  // No durable state unless the test asks for it (a later --state-dir wins): with
  // $XDG_RUNTIME_DIR set, shmleased would otherwise keep state there, outside this test's dir.
  std::vector<std::string> args = {DaemonBinary(), "--socket",    socket_path_, "--shm-prefix",
                                   shm_prefix_,    "--log-level", "debug",      "--state-dir",
                                   "none"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  // Later flags win in shmleased: follow an explicit --socket / --shm-prefix.
  for (size_t i = 0; i + 1 < extra_args.size(); ++i) {
    if (extra_args[i] == "--socket") socket_path_ = extra_args[i + 1];
    if (extra_args[i] == "--shm-prefix") shm_prefix_ = extra_args[i + 1];
  }
  args_ = std::move(args);
  ::unlink(log_path_.c_str());
  try {
    Start();
  } catch (...) {
    // No destructor runs for a constructor that throws: leave nothing behind here either.
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    throw;
  }
}

size_t DaemonProcess::ReadyLines() const {
  std::string text = log();
  size_t count = 0;
  for (size_t at = text.find(kReadyLine); at != std::string::npos; at = text.find(kReadyLine, at + 1)) {
    ++count;
  }
  return count;
}

void DaemonProcess::Start() {
  // The log is appended to across restarts: this start is ready when one more ready line shows.
  const size_t ready_before = ReadyLines();
  if (keeper_paused_ && pid_ > 0) {
    keeper_paused_ = false;
    ::kill(pid_, SIGCONT);  // it reaps the killed daemon and starts the next one
    WaitReady(ready_before);
    return;
  }
  if (pid_ > 0) throw std::runtime_error("shmleased is already running");
  std::vector<char*> argv;
  for (auto& a : args_) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // A test that crashes must not leave its daemon running.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log >= 0) {
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
    }
    ::execv(argv[0], argv.data());
    std::perror("execv shmleased");
    ::_exit(127);
  }
  WaitReady(ready_before);
}

void DaemonProcess::WaitReady(size_t ready_before) {
  // Ready once it accepts connections and has logged its ready line: the socket listens a moment
  // before the daemon has said it is ready, as systemd waits for READY=1 after the bind.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!CanConnect(socket_path_) || ReadyLines() <= ready_before) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      status_ = status;
      throw std::runtime_error("shmleased exited during start-up:\n" + log());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      Stop();
      throw std::runtime_error("shmleased was not ready within 20 s:\n" + log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  keeper_ = log().find(kKeeperStarted) != std::string::npos;
}

void DaemonProcess::Restart() {
  if (!keeper_ || pid_ <= 0) throw std::runtime_error("Restart() needs a running keeper");
  const size_t ready_before = ReadyLines();
  ::kill(pid_, SIGUSR2);
  WaitReady(ready_before);
}

pid_t DaemonProcess::pid() const {
  if (!keeper_ || pid_ <= 0) return pid_;
  std::string text = log();
  size_t at = text.rfind(kKeeperStarted);
  if (at == std::string::npos) return -1;
  return static_cast<pid_t>(std::atoi(text.c_str() + at + std::strlen(kKeeperStarted)));
}

DaemonProcess::~DaemonProcess() {
  // Nobody else looks at these, so they fail the running test here: a daemon that did not exit
  // cleanly on SIGTERM, and a sanitizer report anywhere in its log (any start of it).
  const bool was_running = running();
  const int status = Stop();
  const std::string text = log();
  if (was_running && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    ADD_FAILURE() << "shmleased did not exit cleanly on SIGTERM (wait status " << status << "):\n"
                  << text.substr(text.size() > 8000 ? text.size() - 8000 : 0);
  }
  if (std::string report = SanitizerReport(text); !report.empty()) {
    ADD_FAILURE() << "shmleased's log has a sanitizer report:\n" << report;
  }
  // Whatever a failed test left behind must not outlive it.
  for (const auto& name : ShmObjects()) ::unlink(("/dev/shm/" + name).c_str());
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string DaemonProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int DaemonProcess::Kill(int signo) {
  if (pid_ <= 0) return status_;
  if (keeper_) {
    const pid_t daemon = pid();
    ::kill(pid_, SIGSTOP);
    keeper_paused_ = true;
    ::kill(daemon, signo);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!Dead(daemon) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    // The daemon's wait status is the keeper's to read; this is what a kill by signo gives.
    return signo;
  }
  ::kill(pid_, signo);
  ::waitpid(pid_, &status_, 0);
  pid_ = -1;
  return status_;
}

int DaemonProcess::Stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return status_;
  const size_t logged_before = log().size();
  if (keeper_paused_) {
    keeper_paused_ = false;
    ::kill(pid_, SIGCONT);
  }
  ::kill(pid_, SIGTERM);
  const auto start = std::chrono::steady_clock::now();
  auto deadline = start + grace;
  auto resend = start + std::chrono::seconds(1);
  for (;;) {
    pid_t r = ::waitpid(pid_, &status_, WNOHANG);
    if (r == pid_) break;
    const auto now = std::chrono::steady_clock::now();
    if (now > resend) {
      // Under TSan a SIGTERM can stay pending in the runtime until the next one arrives
      // (HugePagesTest.StartupLine..., about 1 run in 20): ask again each second, but only while
      // the daemon has not said it is shutting down, since once it has, its handler may be gone
      // and a second SIGTERM would kill it.
      if (log().find("shutting down", logged_before) == std::string::npos) ::kill(pid_, SIGTERM);
      resend = now + std::chrono::seconds(1);
    }
    if (now > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  pid_ = -1;
  return status_;
}

size_t DaemonProcess::OpenDescriptors() const {
  std::error_code ec;
  size_t count = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid_) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++count;
  }
  return count;
}

std::vector<std::string> DaemonProcess::ShmObjects() const {
  std::vector<std::string> names;
  DIR* dir = ::opendir("/dev/shm");
  if (dir != nullptr) {
    while (dirent* entry = ::readdir(dir)) {
      std::string name = entry->d_name;
      if (name.rfind(shm_prefix_, 0) == 0) names.push_back(name);
    }
    ::closedir(dir);
  }
  // "/memfd:<prefix>.<id> (deleted)", "/dev/hugepages/<prefix>.<id> (deleted)".
  const std::string marker = "/" + shm_prefix_ + ".";
  const std::string memfd_marker = "/memfd:" + shm_prefix_ + ".";
  for (pid_t holder : {pid(), keeper_pid()}) {
    if (holder <= 0 || Dead(holder)) continue;
    for (const std::string& target : FdTargets(holder)) {
      size_t at = target.find(memfd_marker);
      size_t skip = memfd_marker.size() - marker.size() + 1;
      if (at == std::string::npos) {
        at = target.find(marker);
        skip = 1;
      }
      if (at == std::string::npos || target.rfind("/dev/shm/", 0) == 0) continue;
      std::string name = target.substr(at + skip, target.find(' ', at) - at - skip);
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
  }
  return names;
}

size_t DaemonProcess::KeptDescriptors() const {
  size_t count = 0;
  if (keeper_pid() <= 0 || Dead(keeper_pid())) return 0;
  for (const std::string& target : FdTargets(keeper_pid())) {
    count += target.find("/" + shm_prefix_ + ".") != std::string::npos ||
             target.find("/memfd:" + shm_prefix_ + ".") != std::string::npos;
  }
  return count;
}

}  // namespace shmlease::testing
