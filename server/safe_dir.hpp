// Directories shmleased writes into (the state directory, the socket's directory), opened so that
// no other user can redirect what the daemon creates, replaces or removes there.
// Owns nothing: OpenSafeDirectory returns a descriptor the caller closes. Everything inside such a
// directory is then opened relative to that descriptor, with O_NOFOLLOW (docs/RESTART.md,
// "Directories shmleased trusts").
#pragma once

#include <sys/stat.h>

#include <string>

namespace shmlease::server {

// What a refusal names: "state directory" and "--state-dir", "socket directory" and "--socket".
struct DirectoryRole {
  const char* what;
  const char* flag;
};

// Opens `path` (O_DIRECTORY | O_NOFOLLOW), creating it and any missing parents with mode 0700 when
// `create` is set, and checks that nobody but shmleased's euid (and root) can change it:
//  - the directory itself is owned by our euid, is not a symbolic link and is not writable by its
//    group or by others;
//  - every directory above it, up to /, is owned by root or by our euid and is either not
//    writable by group or others, or sticky (like /tmp: others cannot rename or remove what is
//    ours in it). A symbolic link among them is followed only when root or our euid owns it.
// Returns the descriptor (O_CLOEXEC), or -1 with `error` saying what is wrong and how to fix it.
int OpenSafeDirectory(const std::string& path, const DirectoryRole& role, bool create,
                      std::string& error);

// For a file opened inside such a directory: false with `error` set unless `st` is a regular file
// owned by our euid and not writable by group or others. `path` and `fix` are for the message.
bool CheckOwnFile(const struct stat& st, const std::string& path, const std::string& fix,
                  std::string& error);

// "0755" for the permission bits (and the sticky, setgid, setuid bits) of `mode`.
std::string OctalMode(mode_t mode);

}  // namespace shmlease::server
