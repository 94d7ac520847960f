// Whole-buffer read and write on a descriptor, retried on EINTR: the baselines of the benchmarks
// that carry bytes over a socket.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>

namespace shmlease::bench {

// False on an error (errno says which).
inline bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// False on an error or at end of file before `n` bytes.
inline bool ReadAll(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

}  // namespace shmlease::bench
