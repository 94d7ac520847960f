#include "daemon_socket.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "shmlease/client.hpp"

namespace shmlease::detail {
namespace {

// The name getpwuid_r or getgrgid_r (`lookup`) finds for `id` (its `name` member), or the number
// when there is none.
template <typename Entry, typename Id, typename Lookup>
std::string AccountName(Id id, Lookup lookup, char* Entry::*name) {
  std::vector<char> buf(16384);
  Entry entry{};
  Entry* found = nullptr;
  if (lookup(id, &entry, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->*name;
  }
  return std::to_string(id);
}

std::string UserName(uid_t uid) { return AccountName(uid, ::getpwuid_r, &passwd::pw_name); }
std::string GroupName(gid_t gid) { return AccountName(gid, ::getgrgid_r, &group::gr_name); }

// "srw-rw---- (0660), owner root, group shmlease": who may connect to a socket, for messages.
std::string DescribeAccess(const struct stat& st) {
  char bits[11] = "----------";
  bits[0] = S_ISSOCK(st.st_mode) ? 's' : S_ISDIR(st.st_mode) ? 'd' : '-';
  const char kRwx[] = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) {
    if ((st.st_mode & (0400 >> i)) != 0) bits[i + 1] = kRwx[i];
  }
  char octal[8];
  std::snprintf(octal, sizeof(octal), "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return std::string(bits) + " (" + octal + "), owner " + UserName(st.st_uid) + ", group " +
         GroupName(st.st_gid);
}

// Why connect(2) to `socket_path` failed with `err`, in words a user can act on. Looks at what is
// at the path: nothing, something that is not a socket, or a socket nobody listens on.
Error ConnectError(const std::string& socket_path, int err) {
  struct stat st {};
  bool found = ::stat(socket_path.c_str(), &st) == 0;
  int stat_err = found ? 0 : errno;
  if (err == EACCES || err == EPERM) {
    if (!found) {
      return Error(Errc::kPermissionDenied, "cannot connect to shmleased at " + socket_path +
                                                ": a directory on the way to it refuses access (" +
                                                std::strerror(stat_err) + ")");
    }
    std::string group = GroupName(st.st_gid);
    std::string text = "cannot connect to shmleased at " + socket_path + ": permission denied " +
                       "(the socket is " + DescribeAccess(st) + "; uid " +
                       std::to_string(::geteuid()) + " may not write to it)";
    if ((st.st_mode & 0020) != 0) {
      text += ". Members of group '" + group + "' may connect: join it with `sudo usermod -aG " +
              group + " $USER`, then log in again";
    } else {
      text += ". Its group '" + group + "' may not write to it either: ask its administrator";
    }
    return Error(Errc::kPermissionDenied, text);
  }
  if (!found && (stat_err == ENOENT || stat_err == ENOTDIR)) {
    return Error(Errc::kDaemonUnavailable,
                 "no socket at " + socket_path +
                     " (shmleased is not running): start shmleased (./scripts/dev run, or "
                     "systemctl start shmleased.socket) or set SHMLEASE_SOCKET");
  }
  if (found && S_ISDIR(st.st_mode)) {
    return Error(Errc::kDaemonUnavailable, socket_path + " is a directory, not a socket");
  }
  if (found && !S_ISSOCK(st.st_mode)) {
    return Error(Errc::kDaemonUnavailable, socket_path + " is a regular file, not a socket");
  }
  if (found && err == ECONNREFUSED) {
    return Error(Errc::kDaemonUnavailable,
                 "nothing listens on the socket " + socket_path +
                     ": shmleased is not running (a stale socket of a daemon that died?)");
  }
  return Error(Errc::kDaemonUnavailable,
               "cannot connect to shmleased at " + socket_path + ": " + std::strerror(err));
}

}  // namespace

int ConnectSocket(const std::string& socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    throw Error(Errc::kInvalidArgument, "socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw Error(Errc::kInternal, std::string("cannot create a socket: ") + std::strerror(errno));
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    ::close(fd);
    throw ConnectError(socket_path, err);
  }
  return fd;
}

}  // namespace shmlease::detail
