// Whole-buffer I/O on a descriptor, for the daemon's peers that use plain blocking descriptors:
// the client library's socket, the CLI's stdout, the benchmarks' baselines. Internal: not installed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace shmlease {

// Writes all `size` bytes, retrying on EINTR and short writes. A socket is written with
// MSG_NOSIGNAL (a peer that went away is an error, not SIGPIPE); any other descriptor with
// write(2), at most 1 GiB per call. False with errno set on failure.
bool WriteAll(int fd, const void* bytes, size_t size) noexcept;

// Reads exactly `size` bytes, retrying on EINTR and short reads. False with errno set on failure,
// or with errno 0 at end of file before `size` bytes.
bool ReadAll(int fd, void* bytes, size_t size) noexcept;

// FNV-1a, 64 bits: a hash stable across builds and machines (std::hash is not). Not a secret.
constexpr uint64_t Fnv1a64(std::string_view bytes) noexcept {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

}  // namespace shmlease
