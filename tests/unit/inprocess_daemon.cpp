#include "inprocess_daemon.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "daemon.hpp"
#include "shm_backend.hpp"

namespace shmlease::testing {
namespace {

constexpr char kPrefix[] = "shmlease-ut-";  // then the directory's 6 letters, '-', the pid

// What an in-process test that died by a signal (no destructor ran) left behind: its objects in
// /dev/shm and its directory. Found by the pid in their prefix; a live process's are kept.
void RemoveLeftoversOfDeadTests() {
  for (const std::string& name : server::ListShmObjects(kPrefix)) {
    const size_t tag = sizeof(kPrefix) - 1, dash = tag + 6, dot = name.find('.', dash);
    if (dot == std::string::npos || name.size() <= dash || name[dash] != '-') continue;
    const std::string pid_text = name.substr(dash + 1, dot - dash - 1);
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    if (::kill(static_cast<pid_t>(std::stol(pid_text)), 0) == 0 || errno != ESRCH) continue;
    server::UnlinkShmObject(name);
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::temp_directory_path() / name.substr(0, dash), ec);
  }
}

}  // namespace

InProcessDaemon::InProcessDaemon(std::map<std::string, std::string> flags) {
  RemoveLeftoversOfDeadTests();
  // Only what goes wrong: a test's output is not the place for the daemon's chatter.
  if (std::getenv("SHMLEASE_TEST_DAEMON_LOG") == nullptr) spdlog::set_level(spdlog::level::warn);
  std::string tmpl = std::filesystem::temp_directory_path().string() + "/" + kPrefix + "XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  flags.emplace("socket", dir_ + "/shmleased.sock");
  flags.emplace("shm-prefix",
                kPrefix + dir_.substr(dir_.size() - 6) + "-" + std::to_string(::getpid()));
  std::string error;
  if (!server::BuildConfig("", flags, config_, error)) {
    std::filesystem::remove_all(dir_);
    throw std::runtime_error("bad in-process daemon settings: " + error);
  }
  daemon_ = std::make_unique<server::Daemon>(config_, server::ConfigSource{"", flags});
  if (!daemon_->Listen(error)) {
    daemon_.reset();
    std::filesystem::remove_all(dir_);
    throw std::runtime_error("the in-process daemon cannot listen: " + error);
  }
  // Clients may connect at once: the socket listens, and the loop serves its backlog once running.
  thread_ = std::thread([this] { exit_code_ = daemon_->Run(); });
}

InProcessDaemon::~InProcessDaemon() {
  Stop();
  // Whatever a failed test left behind must not outlive it.
  for (const std::string& name : ShmObjects()) server::UnlinkShmObject(name);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

int InProcessDaemon::Stop() {
  if (thread_.joinable()) {
    daemon_->RequestStop();
    thread_.join();
  }
  daemon_.reset();  // as a process exit: frees the segments and unlinks the socket
  return exit_code_;
}

std::vector<std::string> InProcessDaemon::ShmObjects() const {
  return server::ListOwnShmObjects(config_.shm_prefix + ".");
}

}  // namespace shmlease::testing
