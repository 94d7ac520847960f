// The only place in the daemon that touches Boost.Interprocess and POSIX shared memory.
// Owns: each ShmObject owns one POSIX shm object (its name in /dev/shm) and two descriptors, one
// read-write and one read-only; the destructor closes both and unlinks the name. Boost exceptions
// never leave this file: they become Errc values with a message.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "shmlease/errc.hpp"

namespace shmlease::server {

class ShmObject {
 public:
  ~ShmObject();
  ShmObject(const ShmObject&) = delete;
  ShmObject& operator=(const ShmObject&) = delete;

  // Creates `name` (mode 0600, owned by the daemon), sizes it to `size` bytes and reserves every
  // page now (posix_fallocate), so a full /dev/shm is kNoSpace here and never a SIGBUS later.
  static std::unique_ptr<ShmObject> Create(const std::string& name, uint64_t size, Errc& error,
                                           std::string& message);

  // Re-adopts `name` after a daemon restart (docs/RESTART.md): opens it read-write and read-only
  // and checks that it is this user's, private (no group/other bits) and exactly `size` bytes.
  // kNotFound when the object is gone.
  static std::unique_ptr<ShmObject> Open(const std::string& name, uint64_t size, Errc& error,
                                         std::string& message);
  // The destructor then only closes the descriptors and leaves the name (and the memory) in place,
  // for a daemon that keeps its segments across a restart.
  void KeepOnDestroy() { keep_ = true; }

  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }
  int rw_fd() const { return rw_fd_; }
  int ro_fd() const { return ro_fd_; }

 private:
  ShmObject(std::string name, uint64_t size, int rw_fd, int ro_fd)
      : name_(std::move(name)), size_(size), rw_fd_(rw_fd), ro_fd_(ro_fd) {}

  std::string name_;
  uint64_t size_;
  int rw_fd_;
  int ro_fd_;
  bool keep_ = false;
};

// Names in /dev/shm that start with `prefix` (left over by an earlier daemon on the same prefix).
std::vector<std::string> ListShmObjects(const std::string& prefix);
// Unlinks a shm object by name; false if it could not be.
bool UnlinkShmObject(const std::string& name);
// Bytes free in the filesystem that backs POSIX shm (/dev/shm), or 0 if unknown.
uint64_t ShmFreeBytes();
// The size of that filesystem, or 0 if unknown.
uint64_t ShmTotalBytes();

}  // namespace shmlease::server
