#include "fd_store.hpp"

#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

namespace shmlease::server {

std::string SegmentFdName(uint64_t id) { return "seg-" + std::to_string(id); }

bool ParseSegmentFdName(std::string_view name, uint64_t& id) {
  constexpr std::string_view kPrefix = "seg-";
  if (name.substr(0, kPrefix.size()) != kPrefix || name.size() == kPrefix.size()) return false;
  std::string_view digits = name.substr(kPrefix.size());
  if (digits[0] == '0') return false;  // one spelling per id
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), id);
  return ec == std::errc() && end == digits.data() + digits.size() && id != 0;
}

bool FdStoreAvailable() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  return socket != nullptr && *socket != '\0';
}

bool StoreFd(int fd, std::string_view name, std::string& error) {
  std::string message = "FDSTORE=1\nFDNAME=" + std::string(name);
  int rc = sd_pid_notify_with_fds(0, 0, message.c_str(), &fd, 1);
  if (rc > 0) return true;
  error = rc == 0 ? std::string("no service manager ($NOTIFY_SOCKET is not set)")
                  : std::string("cannot send it to the service manager: ") + std::strerror(-rc);
  return false;
}

void RemoveStoredFd(std::string_view name) {
  std::string message = "FDSTOREREMOVE=1\nFDNAME=" + std::string(name);
  sd_pid_notify(0, 0, message.c_str());
}

bool TakePassedFds(PassedFds& passed, std::string& error) {
  passed = PassedFds{};
  char** names = nullptr;
  int n = sd_listen_fds_with_names(1, &names);
  if (n < 0) {
    error = std::string("cannot read the descriptors the service manager passed: ") +
            std::strerror(-n);
    return false;
  }
  bool ok = true;
  for (int i = 0; i < n; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    std::string name = names != nullptr && names[i] != nullptr ? names[i] : "unknown";
    uint64_t id = 0;
    if (ParseSegmentFdName(name, id)) {
      if (passed.segments.count(id) != 0) {
        passed.others.emplace_back(name, fd);  // the same name twice: keep the first
      } else {
        passed.segments.emplace(id, fd);
      }
    } else if (sd_is_socket_unix(fd, SOCK_STREAM, 1, nullptr, 0) > 0) {
      if (passed.listen_fd >= 0) {
        error = "the service manager passed two listening sockets (" + passed.listen_name +
                " and " + name + "); shmleased takes exactly one";
        ok = false;
      }
      passed.listen_fd = fd;
      passed.listen_name = name;
    } else {
      passed.others.emplace_back(name, fd);
    }
  }
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  return ok;
}

}  // namespace shmlease::server
