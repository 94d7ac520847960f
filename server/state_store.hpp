// shmleased's durable state: every segment it owns (and the next segment id), in one file under
// the state directory, rewritten atomically (temporary file, fsync, rename, fsync of the directory)
// after every change, so a restarted daemon can re-adopt the segments (docs/RESTART.md).
// Owns: the state directory's lock (a flock on DIR/lock, held while the StateStore lives), so two
// daemons never share one state directory. The byte format is written once below and once in
// docs/RESTART.md; EncodeState/DecodeState are pure, for unit tests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shmlease::server {

// Format version 2, text, one record per line, fields separated by single spaces:
//   shmlease-state 2
//   prefix <shm prefix>
//   next-id <u64>
//   boot <u64>                          daemon starts on this state so far (lease id epochs)
//   segment <id> name=<name> size=<u64> format=<fmt> shape=<d1>x<d2>... created=<i64 ns>
//           creator-pid=<u32> creator-uid=<u32> owner-uid=<u32> owner-gid=<u32> mode=<octal>
//           removed=<0|1> shm=<shm object name> backing=<sealed|named|hugetlb-memfd|hugetlbfs|
//           tmpfs-huge> bytes=<u64 bytes the backing holds> page=<u64 its page size>
//                                                         (one line; zero or more segments)
//   end <segment count> fnv1a64=<16 hex digits of FNV-1a 64 over every byte before this line>
// Names, formats and shm names cannot hold spaces or '=' (their rules forbid them), so no quoting.
// shm is <prefix>.<id> (a memfd's label, or the start of a named object's name) or, for backing
// named, <prefix>.<id>.<16 hex digits>. Version 1 lines lack backing, bytes and page: they load
// as backing named, bytes = size, page 0 (unknown), the only backing version 1 could keep.
inline constexpr std::string_view kStateMagic = "shmlease-state";
inline constexpr uint32_t kStateVersion = 2;
inline constexpr const char* kStateFileName = "shmleased.state";
inline constexpr const char* kLockFileName = "lock";

struct PersistedSegment {
  uint64_t id = 0;
  std::string name;
  uint64_t size = 0;
  std::string format;
  std::vector<uint64_t> shape;
  int64_t created_unix_ns = 0;
  uint32_t creator_pid = 0;
  uint32_t creator_uid = 0;
  uint32_t owner_uid = 0;
  uint32_t owner_gid = 0;
  uint32_t mode = 0600;
  bool removed = false;
  std::string shm_name;
  // How to re-adopt it: "named" ones by shm_name, every other backing from the descriptor kept in
  // the service manager's file-descriptor store as "seg-<id>" (docs/RESTART.md).
  std::string backing = "named";
  uint64_t backing_bytes = 0;  // what the backing holds: size, or size rounded up to huge pages
  uint64_t backing_page = 0;   // its page size; 0 = unknown (version 1)

  bool operator==(const PersistedSegment&) const = default;
};

struct PersistedState {
  std::string shm_prefix;
  uint64_t next_id = 1;
  uint64_t boot = 0;
  std::vector<PersistedSegment> segments;

  bool operator==(const PersistedState&) const = default;
};

std::string EncodeState(const PersistedState& state);
// Parses and validates (checksum, every field, names, geometry, shm names under the prefix, unique
// ids and names). False with `error` = "line N: reason" when anything is wrong.
bool DecodeState(std::string_view text, PersistedState& state, std::string& error);

class StateStore {
 public:
  StateStore() = default;
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // Creates `dir` (mode 0700) if needed, checks that nobody but our euid can change it
  // (OpenSafeDirectory) and locks it. False with `error` naming the directory, the reason (not a
  // directory, another owner, writable by others, a symbolic link, locked by another shmleased)
  // and the fix. Every file in it is then opened relative to the directory, never followed.
  bool Open(const std::string& dir, std::string& error);
  // Reads the state file. `exists` is false (and true returned) when there is none yet. A state
  // file that is a symbolic link, not ours or writable by group or others is refused.
  bool Load(PersistedState& state, bool& exists, std::string& error);
  // Replaces the state file atomically. False with `error` set; the previous file then stays.
  bool Save(const PersistedState& state, std::string& error);

  bool is_open() const { return lock_fd_ >= 0; }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
  int lock_fd_ = -1;
  int dir_fd_ = -1;  // the checked state directory, open while the StateStore lives
};

}  // namespace shmlease::server
