// The daemon's side of the service manager's file-descriptor store: systemd's (FDSTORE=1 through
// sd_notify, FileDescriptorStoreMax= in the unit) or the keeper's (keeper.hpp), which speaks the
// same protocol, so the daemon has one code path for both (docs/RESTART.md).
// Owns: nothing past a call. TakePassedFds() hands every descriptor it finds to its caller.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shmlease::server {

// The name of the listening socket when the daemon bound it itself and stored it, so that clients
// queue in its backlog while the daemon restarts. (systemd names a socket unit's descriptors
// after the unit, e.g. "shmleased.socket", or "connection".)
inline constexpr std::string_view kListenFdName = "shmleased-listen";

// "seg-<id>": the name a segment's read-write descriptor is stored under.
std::string SegmentFdName(uint64_t id);
// The id of a "seg-<id>" name; false for any other name.
bool ParseSegmentFdName(std::string_view name, uint64_t& id);

// Whether a service manager listens ($NOTIFY_SOCKET is set).
bool FdStoreAvailable();
// Stores a duplicate of `fd` under `name` (FDSTORE=1). False with `error` when it cannot be sent;
// true says nothing about whether the manager kept it (systemd drops it without
// FileDescriptorStoreMax=).
bool StoreFd(int fd, std::string_view name, std::string& error);
// Drops every descriptor stored under `name` (FDSTOREREMOVE=1); a no-op without a manager.
void RemoveStoredFd(std::string_view name);

// What the service manager passed at start (LISTEN_FDS, LISTEN_FDNAMES; the environment is then
// cleared): the listening socket (at most one: a listening Unix stream socket of any name but
// seg-*), the segments' descriptors by id, and the rest, by name, for the caller to close.
struct PassedFds {
  int listen_fd = -1;
  std::string listen_name;
  std::map<uint64_t, int> segments;
  std::vector<std::pair<std::string, int>> others;
};
// False with `error` when the passed descriptors cannot be read or hold two listening sockets.
bool TakePassedFds(PassedFds& passed, std::string& error);

}  // namespace shmlease::server
