#include "shmlease/fd_io.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace shmlease {

bool WriteAll(int fd, const void* bytes, size_t size) noexcept {
  const auto* p = static_cast<const char*>(bytes);
  bool socket = true;  // until send(2) says otherwise
  while (size > 0) {
    size_t chunk = std::min<size_t>(size, size_t{1} << 30);
    ssize_t n = socket ? ::send(fd, p, chunk, MSG_NOSIGNAL) : ::write(fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (socket && errno == ENOTSOCK) {
        socket = false;
        continue;
      }
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, void* bytes, size_t size) noexcept {
  auto* p = static_cast<char*>(bytes);
  while (size > 0) {
    ssize_t n = ::read(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = 0;
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace shmlease
