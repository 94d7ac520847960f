// Where the daemon listens and clients connect, resolved the same way on both sides.
#pragma once

#include <string>
#include <string_view>

namespace shmlease {

// `explicit_path` if not empty, else $SHMLEASE_SOCKET, else $XDG_RUNTIME_DIR/shmlease/shmlease.sock
// for a non-root user, else /run/shmlease/shmlease.sock.
std::string ResolveSocketPath(std::string_view explicit_path = {});

// The default shm-name prefix for a daemon on `socket_path`: "shmlease-" and a short hash of the
// path, so two daemons on different sockets never collide in /dev/shm.
std::string DefaultShmPrefix(std::string_view socket_path);

}  // namespace shmlease
