#include "safe_dir.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>

namespace shmlease::server {
namespace {

// Linux follows at most 40 symbolic links in one lookup; so do we.
constexpr int kMaxLinks = 40;

std::deque<std::string> Components(const std::string& path) {
  std::deque<std::string> out;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(pos, end - pos);
    if (!part.empty() && part != ".") out.push_back(std::move(part));
    pos = end + 1;
  }
  return out;
}

std::string Join(const std::string& dir, const std::string& name) {
  if (name == "..") {
    size_t slash = dir.find_last_of('/');
    return slash == 0 || slash == std::string::npos ? "/" : dir.substr(0, slash);
  }
  return dir == "/" ? "/" + name : dir + "/" + name;
}

bool Trusted(uid_t owner) { return owner == 0 || owner == ::geteuid(); }

// A directory above the one we use: only root or we may change it, or it is sticky (then others
// may add entries but cannot rename or remove ours).
bool CheckAncestor(const struct stat& st, const std::string& dir, const std::string& full,
                   const DirectoryRole& role, std::string& error) {
  const std::string euid = std::to_string(::geteuid());
  if (!Trusted(st.st_uid)) {
    error = std::string("the ") + role.what + " " + full + " lies under " + dir +
            ", which uid " + std::to_string(st.st_uid) +
            " owns: that user could replace it; choose another " + role.flag +
            " under directories that only root or uid " + euid + " can change";
    return false;
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    error = std::string("the ") + role.what + " " + full + " lies under " + dir + " (mode " +
            OctalMode(st.st_mode) +
            "), which its group or others can write to: they could replace it; chmod go-w " +
            dir + " or choose another " + role.flag;
    return false;
  }
  return true;
}

bool CheckLeaf(const struct stat& st, const std::string& dir, const DirectoryRole& role,
               std::string& error) {
  const std::string euid = std::to_string(::geteuid());
  if (st.st_uid != ::geteuid()) {
    error = std::string("the ") + role.what + " " + dir + " is owned by uid " +
            std::to_string(st.st_uid) + ", not by shmleased's uid " + euid + ": chown it to " +
            euid + " or choose another " + role.flag;
    return false;
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    error = std::string("the ") + role.what + " " + dir + " has mode " + OctalMode(st.st_mode) +
            ": its group or others can write to it, and so plant or swap files and symbolic "
            "links in it; chmod go-w it, or choose another " + role.flag +
            " in a directory of shmleased's own";
    return false;
  }
  return true;
}

}  // namespace

std::string OctalMode(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

int OpenSafeDirectory(const std::string& path, const DirectoryRole& role, bool create,
                      std::string& error) {
  if (path.empty()) {
    error = std::string("the ") + role.what + " is empty; give a directory with " + role.flag;
    return -1;
  }
  std::string absolute = path;
  if (absolute[0] != '/') {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof(cwd)) == nullptr) {
      error = std::string("cannot resolve the ") + role.what + " " + path + ": getcwd: " +
              std::strerror(errno);
      return -1;
    }
    absolute = std::string(cwd) + "/" + path;
  }
  std::deque<std::string> todo = Components(absolute);
  int cur = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cur < 0) {
    error = std::string("cannot open /: ") + std::strerror(errno);
    return -1;
  }
  std::string cur_path = "/";
  auto fail = [&](std::string why) {
    ::close(cur);
    error = std::move(why);
    return -1;
  };
  struct stat st {};
  if (todo.empty()) {
    if (::fstat(cur, &st) != 0 || !CheckLeaf(st, cur_path, role, error)) return fail(error);
    return cur;
  }
  if (::fstat(cur, &st) != 0 || !CheckAncestor(st, cur_path, path, role, error)) {
    return fail(error);
  }
  int links = 0;
  while (!todo.empty()) {
    const std::string name = todo.front();
    todo.pop_front();
    const bool last = todo.empty();
    const std::string next_path = Join(cur_path, name);
    int next = ::openat(cur, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT && create) {
      if (::mkdirat(cur, name.c_str(), 0700) != 0 && errno != EEXIST) {
        return fail(std::string("cannot create the ") + role.what + " " + path + ": " +
                    next_path + ": " + std::strerror(errno));
      }
      next = ::openat(cur, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (next < 0) {
      const int err = errno;
      struct stat link {};
      if (::fstatat(cur, name.c_str(), &link, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(link.st_mode)) {
        if (last) {
          return fail(std::string("the ") + role.what + " " + path +
                      " is a symbolic link; shmleased follows none there: give " + role.flag +
                      " the directory itself");
        }
        if (!Trusted(link.st_uid)) {
          return fail(std::string("the ") + role.what + " " + path + " lies under " + next_path +
                      ", a symbolic link that uid " + std::to_string(link.st_uid) +
                      " owns; choose another " + role.flag);
        }
        if (++links > kMaxLinks) {
          return fail(std::string("cannot open the ") + role.what + " " + path + ": " +
                      std::strerror(ELOOP));
        }
        std::string target(PATH_MAX, '\0');
        ssize_t n = ::readlinkat(cur, name.c_str(), target.data(), target.size());
        if (n <= 0 || static_cast<size_t>(n) >= target.size()) {
          return fail(std::string("cannot read the symbolic link ") + next_path);
        }
        target.resize(static_cast<size_t>(n));
        std::deque<std::string> parts = Components(target);
        todo.insert(todo.begin(), parts.begin(), parts.end());
        if (target[0] == '/') {
          int root = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
          if (root < 0) return fail(std::string("cannot open /: ") + std::strerror(errno));
          ::close(cur);
          cur = root;
          cur_path = "/";
        }
        if (todo.empty()) {
          // The link pointed at / or at its own directory: check that one as the leaf.
          if (::fstat(cur, &st) != 0 || !CheckLeaf(st, cur_path, role, error)) return fail(error);
          return cur;
        }
        continue;
      }
      if (err == ENOTDIR) {
        return fail(std::string("the ") + role.what + " " + path + " is not a directory (" +
                    next_path + " is not one)");
      }
      return fail(std::string("cannot open the ") + role.what + " " + path + ": " + next_path +
                  ": " + std::strerror(err));
    }
    if (::fstat(next, &st) != 0) {
      const int err = errno;
      ::close(next);
      return fail(std::string("cannot stat ") + next_path + ": " + std::strerror(err));
    }
    ::close(cur);
    cur = next;
    cur_path = next_path;
    if (last ? !CheckLeaf(st, path, role, error) : !CheckAncestor(st, cur_path, path, role, error)) {
      return fail(error);
    }
  }
  return cur;
}

bool CheckOwnFile(const struct stat& st, const std::string& path, const std::string& fix,
                  std::string& error) {
  if (!S_ISREG(st.st_mode)) {
    error = path + " is not a regular file; " + fix;
    return false;
  }
  if (st.st_uid != ::geteuid()) {
    error = path + " is owned by uid " + std::to_string(st.st_uid) + ", not by shmleased's uid " +
            std::to_string(::geteuid()) + ", so shmleased did not write it; " + fix;
    return false;
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    error = path + " has mode " + OctalMode(st.st_mode) +
            ": its group or others could have written it; " + fix;
    return false;
  }
  return true;
}

}  // namespace shmlease::server
