#include "huge_page_reservation.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace shmlease::testing {
namespace {

constexpr const char* kSysctl = "/proc/sys/vm/nr_hugepages";

bool ReadNumber(const char* path, uint64_t& out) {
  std::ifstream in(path);
  return static_cast<bool>(in >> out);
}

bool WriteNumber(const char* path, uint64_t value, std::string& error) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    error = std::string("cannot open ") + path + " for writing: " + std::strerror(errno);
    return false;
  }
  std::string text = std::to_string(value) + "\n";
  ssize_t n = ::write(fd, text.data(), text.size());
  int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    error = std::string("cannot write ") + path + ": " + std::strerror(err);
    return false;
  }
  return true;
}

}  // namespace

HugePagePool ReadHugePagePool() {
  HugePagePool pool;
  std::ifstream in("/proc/meminfo");
  std::string line;
  uint64_t free = 0;
  uint64_t rsvd = 0;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    uint64_t value = 0;
    if (!(fields >> key >> value)) continue;
    if (key == "HugePages_Total:") pool.total = value;
    if (key == "HugePages_Free:") free = value;
    if (key == "HugePages_Rsvd:") rsvd = value;
    if (key == "Hugepagesize:") pool.page_size = value * 1024;
  }
  pool.available = free > rsvd ? free - rsvd : 0;
  return pool;
}

HugePageReservation::HugePageReservation(uint64_t pages) {
  std::string lock_path =
      (std::filesystem::temp_directory_path() / "shmlease-nr_hugepages.lock").string();
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (lock_fd_ >= 0) ::flock(lock_fd_, LOCK_EX);
  HugePagePool pool = ReadHugePagePool();
  if (pool.page_size == 0) {
    reason_ = "this kernel has no hugetlb huge pages";
    return;
  }
  if (pool.available >= pages) {
    ok_ = true;
    return;
  }
  if (::geteuid() != 0) {
    reason_ = "needs " + std::to_string(pages) + " free huge pages (the host has " +
              std::to_string(pool.available) + ") and only root may reserve more " +
              "(sysctl vm.nr_hugepages)";
    return;
  }
  if (!ReadNumber(kSysctl, previous_)) {
    reason_ = std::string("cannot read ") + kSysctl;
    return;
  }
  std::string error;
  if (!WriteNumber(kSysctl, previous_ + (pages - pool.available), error)) {
    reason_ = error;
    return;
  }
  changed_ = true;
  pool = ReadHugePagePool();
  if (pool.available < pages) {
    reason_ = "the kernel could only reserve " + std::to_string(pool.available) + " of " +
              std::to_string(pages) + " huge pages (memory too fragmented?)";
    return;
  }
  ok_ = true;
}

HugePageReservation::~HugePageReservation() {
  if (changed_) {
    std::string error;
    if (!WriteNumber(kSysctl, previous_, error)) {
      std::fprintf(stderr, "HugePageReservation: could not restore vm.nr_hugepages=%" PRIu64 ": %s\n",
                   previous_, error.c_str());
    }
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

MappingResidency ReadMappingResidency(const void* address) {
  MappingResidency r;
  std::ifstream in("/proc/self/smaps");
  std::string line;
  const auto start = reinterpret_cast<uintptr_t>(address);
  bool inside = false;
  while (std::getline(in, line)) {
    // A mapping's header: "start-end perms offset dev inode path".
    uintptr_t from = 0;
    uintptr_t to = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " ", &from, &to) == 2 &&
        line.find(':') > line.find(' ')) {
      if (inside) break;
      inside = from == start;
      r.found = r.found || inside;
      continue;
    }
    if (!inside) continue;
    std::istringstream fields(line);
    std::string key;
    uint64_t kb = 0;
    if (!(fields >> key >> kb)) continue;
    if (key == "Rss:") r.rss = kb * 1024;
    if (key == "Shared_Hugetlb:" || key == "Private_Hugetlb:") r.hugetlb += kb * 1024;
    if (key == "KernelPageSize:") r.kernel_page_size = kb * 1024;
  }
  return r;
}

}  // namespace shmlease::testing
