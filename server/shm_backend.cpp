#include "shm_backend.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <optional>

#include "huge_pages.hpp"
#include "shmlease/errc_table.hpp"
#include "shmlease/format.hpp"

namespace shmlease::server {
namespace bip = boost::interprocess;
namespace {

constexpr const char* kShmDir = "/dev/shm";

// Takes the descriptor out of a Boost object so that its lifetime is ours; Boost's destructor then
// has nothing to close.
int TakeFd(bip::shared_memory_object& object) {
  int fd = ::dup(object.get_mapping_handle().handle);
  return fd;
}

uint64_t RoundUp(uint64_t size, uint64_t page) {
  if (page == 0) return size;
  uint64_t pages = size / page + (size % page != 0 ? 1 : 0);
  return pages * page;
}

// One huge-page backing attempt: both descriptors, or an errno and a sentence saying what failed.
struct HugeAttempt {
  int rw_fd = -1;
  int ro_fd = -1;
  uint64_t page_size = 0;
  uint64_t bytes = 0;
  int err = 0;
  std::string what;
};

void CloseBoth(HugeAttempt& a) {
  if (a.rw_fd >= 0) ::close(a.rw_fd);
  if (a.ro_fd >= 0) ::close(a.ro_fd);
  a.rw_fd = a.ro_fd = -1;
}

// Sizes and reserves an open huge-page file, then opens the read-only descriptor through
// /proc/self/fd (the only way to get a second, read-only open file of a memfd). fallocate, not
// posix_fallocate: glibc's emulation would write() to hugetlbfs, which does not support it.
bool SizeReserveAndReopen(HugeAttempt& a, const std::string& what) {
  if (::ftruncate(a.rw_fd, static_cast<off_t>(a.bytes)) != 0) {
    a.err = errno;
    a.what = what + ": cannot size it to " + FormatSize(a.bytes) + ": " + std::strerror(a.err);
    return false;
  }
  if (::fallocate(a.rw_fd, 0, 0, static_cast<off_t>(a.bytes)) != 0) {
    a.err = errno;
    a.what = what + ": cannot reserve " + FormatSize(a.bytes) + " (" +
             std::to_string(a.bytes / a.page_size) + " pages of " + FormatSize(a.page_size) +
             "): " + std::strerror(a.err);
    return false;
  }
  std::string self = "/proc/self/fd/" + std::to_string(a.rw_fd);
  a.ro_fd = ::open(self.c_str(), O_RDONLY | O_CLOEXEC);
  if (a.ro_fd < 0) {
    a.err = errno;
    a.what = what + ": cannot open a read-only descriptor through " + self + ": " +
             std::strerror(a.err);
    return false;
  }
  return true;
}

HugeAttempt CreateHugeMemfd(const std::string& name, uint64_t size) {
  HugeAttempt a;
  a.page_size = DefaultHugePageSize();
  if (a.page_size == 0) {
    a.err = EINVAL;
    a.what = "MFD_HUGETLB memfd: this kernel has no hugetlb pages";
    return a;
  }
  a.bytes = RoundUp(size, a.page_size);
  // Sealed like every memfd segment: a client holding the read-write descriptor must not be able
  // to shrink the memory under the other clients' mappings (SIGBUS there) nor grow it past the
  // limits. fchmod 0600 too: a hugetlb memfd's inode is 0777 (issue 14).
  std::string step;
  a.rw_fd = CreateSealedMemfd(name, a.bytes, true, step);
  if (a.rw_fd < 0) {
    a.err = errno;
    a.what = "MFD_HUGETLB memfd: " + step +
             (step == "reserving memory"
                  ? " (" + std::to_string(a.bytes / a.page_size) + " pages of " +
                        FormatSize(a.page_size) + ")"
                  : "") +
             ": " + std::strerror(a.err);
    return a;
  }
  a.ro_fd = ReopenReadOnly(a.rw_fd);
  if (a.ro_fd < 0) {
    a.err = errno;
    a.what = std::string("MFD_HUGETLB memfd: cannot open a read-only descriptor: ") +
             std::strerror(a.err);
    CloseBoth(a);
  }
  return a;
}

HugeAttempt CreateInHugeDir(const HugeDir& dir, const std::string& name, uint64_t size) {
  HugeAttempt a;
  a.page_size = dir.page_size;
  a.bytes = RoundUp(size, a.page_size);
  std::string path = dir.path + "/" + name;
  a.rw_fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (a.rw_fd < 0) {
    a.err = errno;
    a.what = "huge-dir " + dir.path + ": cannot create " + name + ": " + std::strerror(a.err);
    return a;
  }
  // Before anything else: the mode the umask or a default ACL left is not ours to trust.
  if (::fchmod(a.rw_fd, 0600) != 0) {
    a.err = errno;
    a.what = "huge-dir " + dir.path + ": cannot make " + name + " private: " + std::strerror(a.err);
    ::unlink(path.c_str());
    CloseBoth(a);
    return a;
  }
  bool ok = SizeReserveAndReopen(a, "huge-dir " + dir.Describe());
  // Nameless from here on, like a memfd: nothing is left in the directory, whatever happens next.
  ::unlink(path.c_str());
  if (!ok) CloseBoth(a);
  return a;
}

// 16 hex digits from getrandom(): the suffix that makes a named backing's name unguessable, so
// nobody can pre-create it (issue 14, point 2).
std::string RandomSuffix() {
  uint64_t value = 0;
  size_t got = 0;
  while (got < sizeof(value)) {
    ssize_t n = ::getrandom(reinterpret_cast<char*>(&value) + got, sizeof(value) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(value));
  return buf;
}

}  // namespace

const char* BackingName(Backing backing) {
  switch (backing) {
    case Backing::kSealedMemfd:
      return "sealed";
    case Backing::kPosixShm:
      return "named";
    case Backing::kMemfdHugetlb:
      return "hugetlb-memfd";
    case Backing::kHugetlbfsFile:
      return "hugetlbfs";
    case Backing::kTmpfsHugeFile:
      return "tmpfs-huge";
  }
  return "?";
}

bool ParseBackingName(std::string_view name, Backing& backing) {
  for (Backing b : {Backing::kSealedMemfd, Backing::kPosixShm, Backing::kMemfdHugetlb,
                    Backing::kHugetlbfsFile, Backing::kTmpfsHugeFile}) {
    if (name == BackingName(b)) {
      backing = b;
      return true;
    }
  }
  return false;
}

int CreateSealedMemfd(const std::string& label, uint64_t bytes, bool hugetlb, std::string& step) {
  unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING | (hugetlb ? MFD_HUGETLB : 0u);
  int fd = ::memfd_create(label.c_str(), flags);
  if (fd < 0) {
    step = "memfd_create";
    return -1;
  }
  auto fail = [&](const char* what, int err) {
    step = what;
    ::close(fd);
    errno = err;
    return -1;
  };
  if (::fchmod(fd, 0600) != 0) return fail("fchmod", errno);
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) return fail("ftruncate", errno);
  // The memory exists now or the create fails: never a SIGBUS later for a full host. fallocate,
  // not posix_fallocate, for hugetlb: glibc's emulation would write(), which hugetlbfs lacks.
  if (hugetlb) {
    if (::fallocate(fd, 0, 0, static_cast<off_t>(bytes)) != 0) {
      return fail("reserving memory", errno);
    }
  } else if (int e = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)); e != 0) {
    return fail("reserving memory", e);
  }
  if (::fcntl(fd, F_ADD_SEALS, kSegmentSeals) != 0) return fail("sealing", errno);
  return fd;
}

namespace {

// Bytes held by this process's sealed (normal-page) memfds. They are shmem like /dev/shm but do
// not count against its size, so a tmpfs sized for the segments (a container's --shm-size, a
// small /dev/shm) would bound nothing, and a large create would take the host's memory until the
// OOM killer picks someone. So they count as if they lived in /dev/shm: a create must fit in its
// free space minus these, and in the memory the kernel says is available.
std::atomic<uint64_t> g_sealed_bytes{0};

uint64_t MemAvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return UINT64_MAX;  // unknown: no bound from here
}

// "" when `bytes` more of sealed memory fit; else why not, for the error message.
std::string SealedRoomFor(uint64_t bytes) {
  const uint64_t used = g_sealed_bytes.load();
  const uint64_t shm_free = ShmFreeBytes();
  const uint64_t shm_room = shm_free > used ? shm_free - used : 0;
  if (ShmTotalBytes() != 0 && bytes > shm_room) {
    return std::string(kShmDir) + " has " + FormatSize(shm_free) + " free, and this daemon's " +
           "sealed segments (memfds, which count as if they lived there) take " +
           FormatSize(used) + " of it: give " + kShmDir + " more room (docker --shm-size, a " +
           "larger tmpfs) or remove segments";
  }
  const uint64_t available = MemAvailableBytes();
  if (bytes > available) {
    return "the host has only " + FormatSize(available) + " of memory available";
  }
  return "";
}

}  // namespace

int ReopenReadOnly(int fd) {
  std::string self = "/proc/self/fd/" + std::to_string(fd);
  return ::open(self.c_str(), O_RDONLY | O_CLOEXEC);
}

ShmObject::~ShmObject() {
  if (backing_ == Backing::kSealedMemfd) g_sealed_bytes.fetch_sub(reserved_bytes_);
  if (rw_fd_ >= 0) ::close(rw_fd_);
  if (ro_fd_ >= 0) ::close(ro_fd_);
  if (backing_ == Backing::kPosixShm && !keep_) UnlinkShmObject(name_);
}

std::string ShmObject::Describe() const {
  switch (backing_) {
    case Backing::kSealedMemfd:
      return "sealed memfd";
    case Backing::kPosixShm:
      return std::string(kShmDir) + "/" + name_;
    case Backing::kMemfdHugetlb:
      return "MFD_HUGETLB memfd (" + FormatSize(page_size_) + " pages)";
    case Backing::kHugetlbfsFile:
      return "hugetlbfs file in " + location_ + " (" + FormatSize(page_size_) + " pages)";
    case Backing::kTmpfsHugeFile:
      return "tmpfs huge=always file in " + location_ + " (" + FormatSize(page_size_) + " pages)";
  }
  return name_;
}

std::unique_ptr<ShmObject> ShmObject::Create(const ShmRequest& request, Errc& error,
                                             std::string& message) {
  std::unique_ptr<ShmObject> object(new ShmObject());
  object->name_ = request.name;
  object->size_ = request.size;
  if (request.pages == PagePolicy::kNormal) {
    object->page_size_ = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    object->reserved_bytes_ = request.size;
  } else {
    std::vector<HugeAttempt> failures;
    HugeAttempt a = CreateHugeMemfd(request.name, request.size);
    Backing backing = Backing::kMemfdHugetlb;
    std::optional<HugeDir> dir;
    if (a.rw_fd < 0 && !request.huge_dir.empty()) {
      failures.push_back(a);
      std::string dir_error;
      dir = InspectHugeDir(request.huge_dir, dir_error);
      if (dir) {
        a = CreateInHugeDir(*dir, request.name, request.size);
        backing = dir->kind == HugeDir::Kind::kHugetlbfs ? Backing::kHugetlbfsFile
                                                         : Backing::kTmpfsHugeFile;
      } else {
        a = HugeAttempt{};
        a.err = EINVAL;
        a.what = dir_error;
      }
    }
    if (a.rw_fd >= 0) {
      object->backing_ = backing;
      object->page_size_ = a.page_size;
      object->reserved_bytes_ = a.bytes;
      object->rw_fd_ = a.rw_fd;
      object->ro_fd_ = a.ro_fd;
      if (dir) object->location_ = dir->path;
      return object;
    }
    failures.push_back(a);
    std::string reasons;
    bool no_space = false;
    for (const HugeAttempt& f : failures) {
      reasons += (reasons.empty() ? "" : "; ") + f.what;
      no_space = no_space || f.err == ENOSPC || f.err == ENOMEM;
    }
    HugePageHost host = ProbeHugePages();
    uint64_t page = host.page_size != 0 ? host.page_size : TransparentHugePageSize();
    uint64_t pages = RoundUp(request.size, page) / page;
    std::string why = "no huge pages for " + FormatSize(request.size) + " (" +
                      std::to_string(pages) + " pages of " + FormatSize(page) + "): " + reasons +
                      ". " + HowToEnableHugePages(host, pages);
    if (request.pages == PagePolicy::kHuge) {
      error = no_space ? Errc::kNoSpace : Errc::kInvalidArgument;
      message = why + "; or ask for huge pages best effort";
      return nullptr;
    }
    object->huge_fallback_ = true;
    object->fallback_reason_ = why;
    object->page_size_ = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    object->reserved_bytes_ = request.size;
  }

  if (!request.named) {
    if (std::string why = SealedRoomFor(request.size); !why.empty()) {
      error = Errc::kNoSpace;
      message = "cannot reserve " + FormatSize(request.size) + " of shared memory: " + why;
      return nullptr;
    }
    std::string step;
    int rw_fd = CreateSealedMemfd(request.name, request.size, false, step);
    int ro_fd = rw_fd >= 0 ? ReopenReadOnly(rw_fd) : -1;
    if (ro_fd < 0) {
      int err = errno;
      if (rw_fd >= 0) ::close(rw_fd);
      error = err == ENOSPC || err == ENOMEM || err == EFBIG ? Errc::kNoSpace
              : err == EMFILE || err == ENFILE             ? Errc::kLimitConnections
                                                           : ErrcFromErrno(err);
      // memfds are shmem like /dev/shm, and as root they are not bounded by its size: say both.
      message = err == ENOSPC || err == ENOMEM
                    ? "cannot reserve " + std::to_string(request.size) +
                          " bytes of shared memory (a memfd; the same memory as " + kShmDir +
                          "): " + std::strerror(err)
                    : (rw_fd >= 0 ? std::string("reopening read-only") : step) +
                          " for a memfd of " + FormatSize(request.size) + ": " +
                          std::strerror(err);
      return nullptr;
    }
    object->rw_fd_ = rw_fd;
    object->ro_fd_ = ro_fd;
    object->backing_ = Backing::kSealedMemfd;
    g_sealed_bytes.fetch_add(object->reserved_bytes_);
    return object;
  }

  // --backing named: a POSIX shm object under a name nobody can guess beforehand.
  const uint64_t size = request.size;
  std::string name;
  bool created = false;
  try {
    bip::permissions owner_only(0600);
    std::optional<bip::shared_memory_object> rw_object;
    for (int attempt = 0; !rw_object; ++attempt) {
      name = request.name + "." + RandomSuffix();
      try {
        rw_object.emplace(bip::create_only, name.c_str(), bip::read_write, owner_only);
      } catch (const bip::interprocess_exception& e) {
        // Someone made this name first: never theirs to hand out, take another.
        if (e.get_error_code() != bip::already_exists_error || attempt >= 16) throw;
      }
    }
    bip::shared_memory_object& rw = *rw_object;
    created = true;
    object->name_ = name;
    // The umask may have narrowed 0600, never widened it; say it again through the descriptor.
    ::fchmod(rw.get_mapping_handle().handle, 0600);
    rw.truncate(static_cast<bip::offset_t>(size));
    // ftruncate reserves nothing on tmpfs: without this a full /dev/shm shows up as SIGBUS in
    // whichever client first touches an unbacked page (LESSONS: Plasma, multiprocessing).
    int err = ::posix_fallocate(rw.get_mapping_handle().handle, 0, static_cast<off_t>(size));
    if (err != 0) {
      error = ErrcFromErrno(err);
      message = "cannot reserve " + std::to_string(size) + " bytes in " + kShmDir + ": " +
                std::strerror(err);
      bip::shared_memory_object::remove(name.c_str());
      return nullptr;
    }
    int rw_fd = TakeFd(rw);
    int ro_fd = rw_fd >= 0 ? ReopenReadOnly(rw_fd) : -1;
    if (rw_fd < 0 || ro_fd < 0) {
      int dup_err = errno;
      if (rw_fd >= 0) ::close(rw_fd);
      if (ro_fd >= 0) ::close(ro_fd);
      bip::shared_memory_object::remove(name.c_str());
      error = dup_err == EMFILE || dup_err == ENFILE ? Errc::kLimitConnections : Errc::kInternal;
      message = std::string("cannot keep a descriptor for the segment: ") + std::strerror(dup_err);
      return nullptr;
    }
    object->rw_fd_ = rw_fd;
    object->ro_fd_ = ro_fd;
    object->backing_ = Backing::kPosixShm;
  } catch (const bip::interprocess_exception& e) {
    if (created) bip::shared_memory_object::remove(name.c_str());
    int native = e.get_native_error();
    error = native != 0 ? ErrcFromErrno(native) : Errc::kInternal;
    if (e.get_error_code() == bip::already_exists_error) error = Errc::kAlreadyExists;
    if (e.get_error_code() == bip::out_of_space_error) error = Errc::kNoSpace;
    message = "shared memory object " + name + ": " + e.what();
    return nullptr;
  }
  return object;
}

std::unique_ptr<ShmObject> ShmObject::Adopt(int rw_fd, const std::string& name, Backing backing,
                                            uint64_t size, uint64_t reserved_bytes,
                                            uint64_t page_size, Errc& error,
                                            std::string& message) {
  auto fail = [&](Errc code, std::string text) -> std::unique_ptr<ShmObject> {
    ::close(rw_fd);
    error = code;
    message = std::move(text);
    return nullptr;
  };
  struct stat st {};
  if (::fstat(rw_fd, &st) != 0) {
    return fail(Errc::kInternal, std::string("cannot stat the stored descriptor: ") +
                                     std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return fail(Errc::kInvalidArgument, "the stored descriptor is not a regular file");
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 07777) != 0600) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%o", st.st_mode & 07777);
    return fail(Errc::kPermissionDenied,
                "the stored descriptor is not a private file of this daemon's user (uid " +
                    std::to_string(st.st_uid) + ", mode " + mode + ")");
  }
  if (static_cast<uint64_t>(st.st_size) != reserved_bytes) {
    return fail(Errc::kInvalidArgument, "the stored descriptor holds " +
                                            std::to_string(st.st_size) + " bytes, the state says " +
                                            std::to_string(reserved_bytes));
  }
  int flags = ::fcntl(rw_fd, F_GETFL);
  if (flags < 0 || (flags & O_ACCMODE) != O_RDWR) {
    return fail(Errc::kInvalidArgument, "the stored descriptor is not open read-write");
  }
  if (backing == Backing::kSealedMemfd || backing == Backing::kMemfdHugetlb) {
    int seals = ::fcntl(rw_fd, F_GET_SEALS);
    if (seals < 0 || (seals & kSegmentSeals) != kSegmentSeals) {
      return fail(Errc::kInvalidArgument,
                  "the stored descriptor is not sealed against resizing (seals " +
                      std::to_string(seals) + ")");
    }
  }
  int ro_fd = ReopenReadOnly(rw_fd);
  if (ro_fd < 0) {
    return fail(Errc::kInternal, std::string("cannot open a read-only descriptor: ") +
                                     std::strerror(errno));
  }
  std::unique_ptr<ShmObject> object(new ShmObject());
  object->name_ = name;
  object->size_ = size;
  object->reserved_bytes_ = reserved_bytes;
  object->page_size_ = page_size;
  object->backing_ = backing;
  if (backing == Backing::kSealedMemfd) g_sealed_bytes.fetch_add(reserved_bytes);
  object->rw_fd_ = rw_fd;
  object->ro_fd_ = ro_fd;
  return object;
}

uint64_t HugeRoundingSize(const std::string& huge_dir) {
  uint64_t size = DefaultHugePageSize();
  if (!huge_dir.empty()) {
    std::string ignored;
    if (auto dir = InspectHugeDir(huge_dir, ignored)) size = std::max(size, dir->page_size);
  }
  return size;
}

std::unique_ptr<ShmObject> ShmObject::Open(const std::string& name, uint64_t size, Errc& error,
                                           std::string& message) {
  int rw_fd = -1;
  int ro_fd = -1;
  auto fail = [&](Errc code, std::string text) -> std::unique_ptr<ShmObject> {
    if (rw_fd >= 0) ::close(rw_fd);
    if (ro_fd >= 0) ::close(ro_fd);
    error = code;
    message = std::move(text);
    return nullptr;
  };
  try {
    bip::shared_memory_object rw(bip::open_only, name.c_str(), bip::read_write);
    bip::shared_memory_object ro(bip::open_only, name.c_str(), bip::read_only);
    rw_fd = TakeFd(rw);
    ro_fd = TakeFd(ro);
  } catch (const bip::interprocess_exception& e) {
    if (e.get_error_code() == bip::not_found_error || e.get_native_error() == ENOENT) {
      return fail(Errc::kNotFound, "shared memory object " + name + " is gone");
    }
    int native = e.get_native_error();
    return fail(native != 0 ? ErrcFromErrno(native) : Errc::kInternal,
                "shared memory object " + name + ": " + e.what());
  }
  if (rw_fd < 0 || ro_fd < 0) {
    return fail(Errc::kInternal, std::string("cannot keep a descriptor: ") + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(rw_fd, &st) != 0) {
    return fail(Errc::kInternal, "cannot stat " + name + ": " + std::strerror(errno));
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return fail(Errc::kPermissionDenied,
                name + " is not a private object of this daemon's user (uid " +
                    std::to_string(st.st_uid) + ", mode " + std::to_string(st.st_mode & 0777) +
                    "); not adopted");
  }
  if (static_cast<uint64_t>(st.st_size) != size) {
    return fail(Errc::kInvalidArgument, name + " holds " + std::to_string(st.st_size) +
                                            " bytes, the state says " + std::to_string(size));
  }
  std::unique_ptr<ShmObject> object(new ShmObject());
  object->name_ = name;
  object->size_ = size;
  object->reserved_bytes_ = size;
  object->page_size_ = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  object->backing_ = Backing::kPosixShm;
  object->rw_fd_ = rw_fd;
  object->ro_fd_ = ro_fd;
  return object;
}

std::vector<std::string> ListShmObjects(const std::string& prefix) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(kShmDir);
  if (dir == nullptr) return names;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name.compare(0, prefix.size(), prefix) == 0) names.push_back(name);
  }
  ::closedir(dir);
  return names;
}

std::vector<std::string> ListOwnShmObjects(const std::string& prefix) {
  std::vector<std::string> names = ListShmObjects(prefix);
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return names;
  while (dirent* entry = ::readdir(dir)) {
    char target[PATH_MAX];
    std::string link = std::string("/proc/self/fd/") + entry->d_name;
    ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    std::string text(target, static_cast<size_t>(n));
    if (text.rfind(kShmDir, 0) == 0) continue;  // named ones: listed above
    size_t slash = text.rfind('/', text.find(' '));
    std::string name = text.substr(slash + 1, text.find(' ', slash) - slash - 1);
    if (name.rfind("memfd:", 0) == 0) name = name.substr(6);
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  ::closedir(dir);
  return names;
}

bool UnlinkShmObject(const std::string& name) {
  try {
    return bip::shared_memory_object::remove(name.c_str());
  } catch (const bip::interprocess_exception&) {
    return false;
  }
}

uint64_t ShmFreeBytes() {
  struct statvfs st {};
  if (::statvfs(kShmDir, &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace shmlease::server

namespace shmlease::server {
uint64_t ShmTotalBytes() {
  struct statvfs st {};
  if (::statvfs("/dev/shm", &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
}
}  // namespace shmlease::server
