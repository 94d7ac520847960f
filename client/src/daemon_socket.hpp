// Connecting to shmleased's Unix socket, and saying in words a user can act on why it failed.
// Owns nothing: ConnectSocket hands the new descriptor to its caller.
#pragma once

#include <string>

namespace shmlease::detail {

// Connects a new blocking, close-on-exec socket to the daemon at `socket_path` and returns it.
// Throws Error: kInvalidArgument for a path too long, kPermissionDenied (naming the socket's
// owner, group and mode, and how to join the group), kDaemonUnavailable when nobody answers.
int ConnectSocket(const std::string& socket_path);

}  // namespace shmlease::detail
