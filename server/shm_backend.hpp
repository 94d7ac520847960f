// The only place in the daemon that creates shared memory: sealed memfds (the default), POSIX shm
// objects through Boost.Interprocess (--backing named), and huge-page backed memory (MFD_HUGETLB
// memfds, files in a huge-dir).
// Owns: each ShmObject owns two descriptors, one read-write and one read-only, and for POSIX shm
// its name in /dev/shm; the destructor closes both and unlinks that name. Every other backing has
// no name anywhere once created (a memfd never has one; a huge-dir file is unlinked at once), so
// nothing can be left behind: it lives as long as some descriptor of it (the daemon's, the fd
// store's, a client's). Boost exceptions never leave this file: they become Errc values.
#pragma once

#include <fcntl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "shmlease/errc.hpp"

namespace shmlease::server {

// What pages a segment asks for (from Create.flags and the daemon's huge-threshold).
enum class PagePolicy {
  kNormal,          // the system page size: a sealed memfd, or POSIX shm with --backing named
  kHuge,            // huge pages or fail
  kHugeBestEffort,  // huge pages if the host has them, else normal pages (huge_fallback)
};

// kSealedMemfd and kMemfdHugetlb are sealed (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL): no
// descriptor, whoever holds it, can change their size. kPosixShm (--backing named) and the
// huge-dir files cannot be sealed. All are mode 0600, owned by the daemon's user.
enum class Backing { kPosixShm, kMemfdHugetlb, kHugetlbfsFile, kTmpfsHugeFile, kSealedMemfd };

// The backing's name in the state file ("sealed", "named", "hugetlb-memfd", "hugetlbfs",
// "tmpfs-huge"), and back; false for an unknown name.
const char* BackingName(Backing backing);
bool ParseBackingName(std::string_view name, Backing& backing);
// Whether the backing exists only as descriptors (and so survives a restart only through the
// service manager's file-descriptor store), not under a name in /dev/shm.
inline bool IsNameless(Backing backing) { return backing != Backing::kPosixShm; }

struct ShmRequest {
  // Unique per daemon: the memfd's or huge-dir file's name; for POSIX shm the start of its name,
  // to which Create() adds a random suffix.
  std::string name;
  uint64_t size = 0;  // bytes asked for; huge backings round it up to whole huge pages
  PagePolicy pages = PagePolicy::kNormal;
  std::string huge_dir;  // "" = none; tried after the memfd
  bool named = false;    // normal pages as POSIX shm in /dev/shm (--backing named), not a memfd
};

class ShmObject {
 public:
  ~ShmObject();
  ShmObject(const ShmObject&) = delete;
  ShmObject& operator=(const ShmObject&) = delete;

  // Creates the backing memory and reserves every page of it now (fallocate), so that a full
  // /dev/shm or an empty huge page pool is an error here (kNoSpace, with how to fix it) and never a
  // SIGBUS in a client later. Normal pages: a sealed memfd, or with request.named a POSIX shm
  // object named request.name + "." + 16 random hex digits, created exclusively (a name someone
  // pre-created is skipped, never opened). Huge pages: a sealed MFD_HUGETLB memfd first, then a
  // file in huge_dir; with kHugeBestEffort, normal pages when neither works (huge_fallback() is
  // then true).
  static std::unique_ptr<ShmObject> Create(const ShmRequest& request, Errc& error,
                                           std::string& message);

  // Re-adopts `name` after a daemon restart (docs/RESTART.md): opens it read-write and read-only
  // and checks that it is this user's, private (no group/other bits) and exactly `size` bytes.
  // kNotFound when the object is gone.
  static std::unique_ptr<ShmObject> Open(const std::string& name, uint64_t size, Errc& error,
                                         std::string& message);
  // Re-adopts a nameless backing from the descriptor the service manager kept (docs/RESTART.md):
  // takes `rw_fd` (closed on failure too) and checks that it is a regular file of this user, mode
  // 0600, exactly `reserved_bytes` long and, for sealed backings, sealed against any size change.
  // kInvalidArgument or kPermissionDenied with `message` saying what is wrong.
  static std::unique_ptr<ShmObject> Adopt(int rw_fd, const std::string& name, Backing backing,
                                          uint64_t size, uint64_t reserved_bytes,
                                          uint64_t page_size, Errc& error, std::string& message);
  // The destructor then only closes the descriptors and leaves the name (and the memory) in place,
  // for a daemon that keeps its segments across a restart.
  void KeepOnDestroy() { keep_ = true; }

  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }
  // Bytes the backing holds (and counts against the limits): size() for normal pages, size()
  // rounded up to whole huge pages otherwise. Clients map this many bytes.
  uint64_t reserved_bytes() const { return reserved_bytes_; }
  uint64_t page_size() const { return page_size_; }
  Backing backing() const { return backing_; }
  bool huge_fallback() const { return huge_fallback_; }
  // Why huge pages were not used (best effort only), for the log.
  const std::string& fallback_reason() const { return fallback_reason_; }
  // "sealed memfd", "MFD_HUGETLB memfd (2 MiB pages)", "/dev/shm/NAME", ... for the log.
  std::string Describe() const;
  int rw_fd() const { return rw_fd_; }
  int ro_fd() const { return ro_fd_; }

 private:
  ShmObject() = default;

  std::string name_;
  uint64_t size_ = 0;
  uint64_t reserved_bytes_ = 0;
  uint64_t page_size_ = 0;
  Backing backing_ = Backing::kPosixShm;
  bool huge_fallback_ = false;
  std::string fallback_reason_;
  std::string location_;  // the huge-dir, for Describe()
  int rw_fd_ = -1;
  int ro_fd_ = -1;
  bool keep_ = false;  // with a state dir: the object outlives this daemon process
};

// The page size that huge segments are rounded up to before their backing is known: the largest
// of the default hugetlb page size and huge_dir's page size (0 when the host has neither). The
// registry counts this much and corrects it once the segment exists.
uint64_t HugeRoundingSize(const std::string& huge_dir);

// A memfd (MFD_CLOEXEC | MFD_ALLOW_SEALING, plus MFD_HUGETLB when `hugetlb`) of `bytes` bytes,
// mode 0600 (a memfd's inode is 0777 by default: a read-only descriptor could otherwise be
// reopened writable through /proc/self/fd by anyone who may open the daemon's files), every page
// reserved, and sealed with F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL. The descriptor, or -1 with
// errno set and `step` naming what failed. Shared by segments and channels (channel_registry).
int CreateSealedMemfd(const std::string& label, uint64_t bytes, bool hugetlb, std::string& step);
// A second, read-only open file of the same memory through /proc/self/fd (the only way to get one
// of a memfd): it can never be mapped writable, nor reopened writable by another uid (mode 0600).
// -1 with errno set on failure.
int ReopenReadOnly(int fd);
// The seals a segment's memfd carries.
inline constexpr int kSegmentSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

// Names in /dev/shm that start with `prefix` (left over by an earlier daemon on the same prefix).
std::vector<std::string> ListShmObjects(const std::string& prefix);
// Every segment memory of `prefix` that exists for this process, each once: the names in /dev/shm
// (ListShmObjects) and the memfds (and unlinked huge-dir files) this process holds open, by the
// name they were made with. For tests that check that nothing is left behind.
std::vector<std::string> ListOwnShmObjects(const std::string& prefix);
// Unlinks a shm object by name; false if it could not be.
bool UnlinkShmObject(const std::string& name);
// Bytes free in the filesystem that backs POSIX shm (/dev/shm), or 0 if unknown.
uint64_t ShmFreeBytes();
// The size of that filesystem, or 0 if unknown.
uint64_t ShmTotalBytes();

}  // namespace shmlease::server
