#include "state_store.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "shm_backend.hpp"
#include "shmlease/fd_io.hpp"
#include "safe_dir.hpp"
#include "shmlease/format.hpp"

namespace shmlease::server {
namespace {

std::string Hex16(uint64_t value) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(value));
  return buf;
}

std::vector<std::string_view> Split(std::string_view line) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos <= line.size()) {
    size_t end = line.find(' ', pos);
    if (end == std::string_view::npos) end = line.size();
    out.push_back(line.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

template <typename T>
bool ParseInt(std::string_view text, T& out, int base = 10) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out, base);
  return ec == std::errc() && end == text.data() + text.size();
}

// The shape field as EncodeState writes it: empty (no shape of its own), or the dimensions joined
// by 'x', which is ParseShape's grammar (it also takes ',' and parentheses, never written here).
bool ParseShapeField(std::string_view text, std::vector<uint64_t>& shape) {
  shape.clear();
  if (text.empty()) return true;
  std::optional<std::vector<uint64_t>> dims = ParseShape(text);
  if (!dims) return false;
  shape = std::move(*dims);
  return true;
}

bool Fail(std::string& error, size_t line, const std::string& why) {
  error = "line " + std::to_string(line) + ": " + why;
  return false;
}

// Parses the fields of one "segment" line; checks every rule a segment obeys when created.
bool ParseSegment(const std::vector<std::string_view>& words, size_t line_no, uint32_t version,
                  const std::string& prefix, PersistedSegment& s, std::string& error) {
  if (words.size() < 2 || !ParseInt(words[1], s.id) || s.id == 0) {
    return Fail(error, line_no, "segment line without a valid id");
  }
  std::map<std::string_view, std::string_view> fields;
  for (size_t i = 2; i < words.size(); ++i) {
    size_t eq = words[i].find('=');
    if (eq == std::string_view::npos) return Fail(error, line_no, "field without '='");
    if (!fields.emplace(words[i].substr(0, eq), words[i].substr(eq + 1)).second) {
      return Fail(error, line_no, "field '" + std::string(words[i].substr(0, eq)) + "' twice");
    }
  }
  static const char* const kKeys[] = {"name",      "size",        "format",    "shape",
                                      "created",   "creator-pid", "creator-uid", "owner-uid",
                                      "owner-gid", "mode",        "removed",   "shm"};
  static const char* const kKeysV2[] = {"backing", "bytes", "page"};
  const size_t expected = std::size(kKeys) + (version >= 2 ? std::size(kKeysV2) : 0);
  if (fields.size() != expected) {
    return Fail(error, line_no, "a segment has exactly " + std::to_string(expected) +
                                    " fields, this one " + std::to_string(fields.size()));
  }
  for (const char* key : kKeys) {
    if (fields.count(key) == 0) return Fail(error, line_no, std::string("missing field ") + key);
  }
  if (version >= 2) {
    for (const char* key : kKeysV2) {
      if (fields.count(key) == 0) return Fail(error, line_no, std::string("missing field ") + key);
    }
  }
  s.name = fields["name"];
  s.format = fields["format"];
  s.shm_name = fields["shm"];
  uint8_t removed = 0;
  if (!ParseInt(fields["size"], s.size) || !ParseInt(fields["created"], s.created_unix_ns) ||
      !ParseInt(fields["creator-pid"], s.creator_pid) ||
      !ParseInt(fields["creator-uid"], s.creator_uid) ||
      !ParseInt(fields["owner-uid"], s.owner_uid) || !ParseInt(fields["owner-gid"], s.owner_gid) ||
      !ParseInt(fields["mode"], s.mode, 8) || !ParseInt(fields["removed"], removed) ||
      removed > 1 || s.mode > 0777 || !ParseShapeField(fields["shape"], s.shape)) {
    return Fail(error, line_no, "a number field does not parse");
  }
  s.removed = removed == 1;
  if (version >= 2) {
    Backing backing;
    if (!ParseBackingName(fields["backing"], backing)) {
      return Fail(error, line_no, "unknown backing '" + std::string(fields["backing"]) + "'");
    }
    s.backing = fields["backing"];
    if (!ParseInt(fields["bytes"], s.backing_bytes) || !ParseInt(fields["page"], s.backing_page)) {
      return Fail(error, line_no, "a number field does not parse");
    }
  } else {
    s.backing = BackingName(Backing::kPosixShm);
    s.backing_bytes = s.size;
    s.backing_page = 0;
  }
  const bool huge = s.backing == "hugetlb-memfd" || s.backing == "hugetlbfs" ||
                    s.backing == "tmpfs-huge";
  if (s.backing_bytes < s.size ||
      (huge && (s.backing_page == 0 || s.backing_bytes % s.backing_page != 0))) {
    return Fail(error, line_no, "bytes=" + std::to_string(s.backing_bytes) +
                                    " cannot hold size=" + std::to_string(s.size) + " in pages of " +
                                    std::to_string(s.backing_page));
  }
  if (!IsValidName(s.name)) return Fail(error, line_no, "invalid segment name '" + s.name + "'");
  auto itemsize = FormatItemSize(s.format);
  if (!itemsize) return Fail(error, line_no, "invalid format '" + s.format + "'");
  if (s.size == 0 || s.size % *itemsize != 0) return Fail(error, line_no, "invalid size");
  if (!s.shape.empty() && ShapeBytes(s.shape, *itemsize) != s.size) {
    return Fail(error, line_no, "shape does not match size");
  }
  // Never let a state file make the daemon open (and later unlink) a name that is not its own.
  const std::string own = prefix + "." + std::to_string(s.id);
  bool suffixed = s.shm_name.size() == own.size() + 17 && s.shm_name.compare(0, own.size(), own) == 0 &&
                  s.shm_name[own.size()] == '.' &&
                  s.shm_name.find_first_not_of("0123456789abcdef", own.size() + 1) == std::string::npos;
  if (s.shm_name != own && !(suffixed && s.backing == BackingName(Backing::kPosixShm))) {
    return Fail(error, line_no, "shm name '" + s.shm_name + "' is not " + own +
                                    (s.backing == BackingName(Backing::kPosixShm)
                                         ? " or " + own + ".<16 hex digits>"
                                         : ""));
  }
  return true;
}

}  // namespace

std::string EncodeState(const PersistedState& state) {
  std::string out;
  out += std::string(kStateMagic) + " " + std::to_string(kStateVersion) + "\n";
  out += "prefix " + state.shm_prefix + "\n";
  out += "next-id " + std::to_string(state.next_id) + "\n";
  out += "boot " + std::to_string(state.boot) + "\n";
  for (const PersistedSegment& s : state.segments) {
    std::string shape;
    for (size_t i = 0; i < s.shape.size(); ++i) {
      if (i > 0) shape += 'x';
      shape += std::to_string(s.shape[i]);
    }
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%o", s.mode);
    out += "segment " + std::to_string(s.id) + " name=" + s.name + " size=" +
           std::to_string(s.size) + " format=" + s.format + " shape=" + shape +
           " created=" + std::to_string(s.created_unix_ns) +
           " creator-pid=" + std::to_string(s.creator_pid) +
           " creator-uid=" + std::to_string(s.creator_uid) +
           " owner-uid=" + std::to_string(s.owner_uid) +
           " owner-gid=" + std::to_string(s.owner_gid) + " mode=" + mode +
           " removed=" + (s.removed ? "1" : "0") + " shm=" + s.shm_name +
           " backing=" + s.backing + " bytes=" + std::to_string(s.backing_bytes) +
           " page=" + std::to_string(s.backing_page) + "\n";
  }
  uint64_t sum = Fnv1a64(out);
  out += "end " + std::to_string(state.segments.size()) + " fnv1a64=" + Hex16(sum) + "\n";
  return out;
}

bool DecodeState(std::string_view text, PersistedState& state, std::string& error) {
  state = PersistedState{};
  size_t end_at = text.rfind("\nend ");
  if (text.empty() || text.back() != '\n' || end_at == std::string_view::npos) {
    error = "truncated: no 'end' line (the file is incomplete or not a shmleased state file)";
    return false;
  }
  std::string_view body = text.substr(0, end_at + 1);
  std::string_view end_line = text.substr(end_at + 1, text.size() - end_at - 2);
  size_t line_count = 0;
  for (char c : body) line_count += c == '\n';
  auto end_words = Split(end_line);
  uint64_t declared = 0;
  if (end_words.size() != 3 || !ParseInt(end_words[1], declared) ||
      end_words[2] != "fnv1a64=" + Hex16(Fnv1a64(body))) {
    return Fail(error, line_count + 1, "checksum mismatch: the file is corrupt");
  }

  size_t line_no = 0;
  size_t pos = 0;
  std::set<uint64_t> ids;
  std::set<std::string> names;
  bool have_prefix = false, have_next = false, have_boot = false;
  uint32_t version = 0;
  while (pos < body.size()) {
    size_t nl = body.find('\n', pos);
    std::string_view line = body.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    auto words = Split(line);
    if (line_no == 1) {
      if (words.size() != 2 || words[0] != kStateMagic || !ParseInt(words[1], version)) {
        return Fail(error, line_no, "not a shmleased state file");
      }
      if (version != 1 && version != kStateVersion) {
        return Fail(error, line_no, "state format version " + std::to_string(version) +
                                        "; this shmleased reads versions 1 and " +
                                        std::to_string(kStateVersion));
      }
      continue;
    }
    if (words[0] == "prefix" && words.size() == 2 && !have_prefix) {
      state.shm_prefix = words[1];
      have_prefix = IsValidName(state.shm_prefix);
      if (!have_prefix) return Fail(error, line_no, "invalid prefix");
    } else if (words[0] == "next-id" && words.size() == 2 && !have_next) {
      if (!ParseInt(words[1], state.next_id) || state.next_id == 0) {
        return Fail(error, line_no, "invalid next-id");
      }
      have_next = true;
    } else if (words[0] == "boot" && words.size() == 2 && !have_boot) {
      if (!ParseInt(words[1], state.boot)) return Fail(error, line_no, "invalid boot");
      have_boot = true;
    } else if (words[0] == "segment") {
      if (!have_prefix || !have_next || !have_boot) {
        return Fail(error, line_no, "segment before prefix, next-id and boot");
      }
      PersistedSegment s;
      if (!ParseSegment(words, line_no, version, state.shm_prefix, s, error)) return false;
      if (s.id >= state.next_id) return Fail(error, line_no, "segment id not below next-id");
      if (!ids.insert(s.id).second) return Fail(error, line_no, "segment id twice");
      if (!s.removed && !names.insert(s.name).second) {
        return Fail(error, line_no, "segment name '" + s.name + "' twice");
      }
      state.segments.push_back(std::move(s));
    } else {
      return Fail(error, line_no, "unexpected '" + std::string(words[0]) + "'");
    }
  }
  if (!have_prefix || !have_next || !have_boot) {
    return Fail(error, line_no, "missing prefix, next-id or boot");
  }
  if (declared != state.segments.size()) {
    return Fail(error, line_no + 1, "end line counts " + std::to_string(declared) +
                                        " segments, the file holds " +
                                        std::to_string(state.segments.size()));
  }
  return true;
}

StateStore::~StateStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

bool StateStore::Open(const std::string& dir, std::string& error) {
  dir_ = dir;
  path_ = dir + "/" + kStateFileName;
  // Every file below is opened relative to this descriptor with O_NOFOLLOW: a symbolic link
  // planted in the directory (it cannot be, once the checks pass, but a root daemon must not
  // depend on one check alone) is refused, never followed.
  int dir_fd = OpenSafeDirectory(dir, {"state directory", "--state-dir"}, true, error);
  if (dir_fd < 0) return false;
  const std::string lock_path = dir + "/" + kLockFileName;
  int fd = ::openat(dir_fd, kLockFileName, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    ::close(dir_fd);
    error = "cannot use the state directory " + dir + ": " + lock_path + ": " +
            (err == ELOOP ? std::string("a symbolic link, which shmleased never follows; remove it")
                          : std::string(std::strerror(err)));
    return false;
  }
  if (!CheckOwnFile(st, lock_path, "remove it", error)) {
    ::close(fd);
    ::close(dir_fd);
    return false;
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    ::close(dir_fd);
    error = err == EWOULDBLOCK
                ? "the state directory " + dir + " is in use by another shmleased"
                : "cannot lock " + lock_path + ": " + std::strerror(err);
    return false;
  }
  lock_fd_ = fd;
  dir_fd_ = dir_fd;
  return true;
}

bool StateStore::Load(PersistedState& state, bool& exists, std::string& error) {
  exists = false;
  int fd = ::openat(dir_fd_, kStateFileName, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return true;
    error = "cannot read the state file " + path_ + ": " +
            (errno == ELOOP ? std::string("it is a symbolic link, which shmleased never follows "
                                          "(move it away to start with no segments)")
                            : std::string(std::strerror(errno)));
    return false;
  }
  // Its checksum is no secret: only who wrote it tells a state file from a forgery. With the
  // directory ours alone nobody else can, but a file left from another owner is refused too.
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    error = "cannot stat the state file " + path_ + ": " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  if (!CheckOwnFile(st, "the state file " + path_,
                    "move it away to start with no segments, if you trust that no one else wrote it",
                    error)) {
    ::close(fd);
    return false;
  }
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = "cannot read the state file " + path_ + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  exists = true;
  std::string why;
  if (!DecodeState(text, state, why)) {
    error = "the state file " + path_ + " is unusable: " + why +
            " (move it away to start with no segments)";
    return false;
  }
  return true;
}

bool StateStore::Save(const PersistedState& state, std::string& error) {
  std::string text = EncodeState(state);
  const std::string tmp_name = std::string(kStateFileName) + ".tmp";
  const std::string tmp = path_ + ".tmp";
  // A leftover of a crash is removed first (never opened: it might be anything), and the new file
  // made with O_EXCL, so what is written is always a fresh file of ours.
  if (::unlinkat(dir_fd_, tmp_name.c_str(), 0) != 0 && errno != ENOENT) {
    error = "cannot remove the leftover " + tmp + ": " + std::strerror(errno);
    return false;
  }
  int fd = ::openat(dir_fd_, tmp_name.c_str(),
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = "cannot write " + tmp + ": " + std::strerror(errno);
    return false;
  }
  auto give_up = [&](const std::string& what) {
    error = what + ": " + std::strerror(errno);
    ::close(fd);
    ::unlinkat(dir_fd_, tmp_name.c_str(), 0);
    return false;
  };
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return give_up("cannot write " + tmp);
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return give_up("cannot fsync " + tmp);
  ::close(fd);
  if (::renameat(dir_fd_, tmp_name.c_str(), dir_fd_, kStateFileName) != 0) {
    error = "cannot rename " + tmp + " to " + path_ + ": " + std::strerror(errno);
    ::unlinkat(dir_fd_, tmp_name.c_str(), 0);
    return false;
  }
  if (::fsync(dir_fd_) != 0) {
    error = "cannot fsync " + dir_ + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace shmlease::server
