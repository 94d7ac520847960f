#include "shmlease/socket_path.hpp"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "shmlease/fd_io.hpp"

namespace shmlease {

std::string ResolveSocketPath(std::string_view explicit_path) {
  if (!explicit_path.empty()) return std::string(explicit_path);
  if (const char* env = std::getenv("SHMLEASE_SOCKET"); env != nullptr && *env != '\0') return env;
  if (geteuid() != 0) {
    if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
      return std::string(xdg) + "/shmlease/shmlease.sock";
    }
  }
  return "/run/shmlease/shmlease.sock";
}

std::string DefaultShmPrefix(std::string_view socket_path) {
  // Stable across builds and machines, which std::hash is not.
  uint64_t hash = Fnv1a64(socket_path);
  char out[32];
  std::snprintf(out, sizeof(out), "shmlease-%08x", static_cast<unsigned>(hash ^ (hash >> 32)));
  return out;
}

}  // namespace shmlease
