#include "inprocess_daemon.hpp"

#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "daemon.hpp"
#include "shm_backend.hpp"

namespace shmlease::testing {

InProcessDaemon::InProcessDaemon(std::map<std::string, std::string> flags) {
  // Only what goes wrong: a test's output is not the place for the daemon's chatter.
  if (std::getenv("SHMLEASE_TEST_DAEMON_LOG") == nullptr) spdlog::set_level(spdlog::level::warn);
  std::string tmpl = std::filesystem::temp_directory_path().string() + "/shmlease-ut-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  flags.emplace("socket", dir_ + "/shmleased.sock");
  flags.emplace("shm-prefix",
                "shmlease-ut-" + dir_.substr(dir_.size() - 6) + "-" + std::to_string(::getpid()));
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
  return server::ListShmObjects(config_.shm_prefix + ".");
}

}  // namespace shmlease::testing
