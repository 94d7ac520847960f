#include "shm_backend.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstring>

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

Errc FromErrno(int err) {
  switch (err) {
    case ENOSPC:
    case ENOMEM:
    case EFBIG:
      return Errc::kNoSpace;
    case EACCES:
    case EPERM:
      return Errc::kPermissionDenied;
    case EEXIST:
      return Errc::kAlreadyExists;
    default:
      return Errc::kInternal;
  }
}

}  // namespace

ShmObject::~ShmObject() {
  if (rw_fd_ >= 0) ::close(rw_fd_);
  if (ro_fd_ >= 0) ::close(ro_fd_);
  if (!keep_) UnlinkShmObject(name_);
}

std::unique_ptr<ShmObject> ShmObject::Create(const std::string& name, uint64_t size, Errc& error,
                                             std::string& message) {
  int rw_fd = -1;
  int ro_fd = -1;
  bool created = false;
  try {
    bip::permissions owner_only(0600);
    bip::shared_memory_object rw(bip::create_only, name.c_str(), bip::read_write, owner_only);
    created = true;
    rw.truncate(static_cast<bip::offset_t>(size));
    // ftruncate reserves nothing on tmpfs: without this a full /dev/shm shows up as SIGBUS in
    // whichever client first touches an unbacked page (LESSONS: Plasma, multiprocessing).
    int err = ::posix_fallocate(rw.get_mapping_handle().handle, 0, static_cast<off_t>(size));
    if (err != 0) {
      error = FromErrno(err);
      message = "cannot reserve " + std::to_string(size) + " bytes in " + kShmDir + ": " +
                std::strerror(err);
      bip::shared_memory_object::remove(name.c_str());
      return nullptr;
    }
    bip::shared_memory_object ro(bip::open_only, name.c_str(), bip::read_only);
    rw_fd = TakeFd(rw);
    ro_fd = TakeFd(ro);
    if (rw_fd < 0 || ro_fd < 0) {
      int dup_err = errno;
      if (rw_fd >= 0) ::close(rw_fd);
      if (ro_fd >= 0) ::close(ro_fd);
      bip::shared_memory_object::remove(name.c_str());
      error = dup_err == EMFILE || dup_err == ENFILE ? Errc::kLimitConnections : Errc::kInternal;
      message = std::string("cannot keep a descriptor for the segment: ") + std::strerror(dup_err);
      return nullptr;
    }
  } catch (const bip::interprocess_exception& e) {
    if (created) bip::shared_memory_object::remove(name.c_str());
    int native = e.get_native_error();
    error = native != 0 ? FromErrno(native) : Errc::kInternal;
    if (e.get_error_code() == bip::already_exists_error) error = Errc::kAlreadyExists;
    if (e.get_error_code() == bip::out_of_space_error) error = Errc::kNoSpace;
    message = "shared memory object " + name + ": " + e.what();
    return nullptr;
  }
  return std::unique_ptr<ShmObject>(new ShmObject(name, size, rw_fd, ro_fd));
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
    return fail(native != 0 ? FromErrno(native) : Errc::kInternal,
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
  return std::unique_ptr<ShmObject>(new ShmObject(name, size, rw_fd, ro_fd));
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
