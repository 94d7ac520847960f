// Reserves huge pages for a test or a benchmark where it runs as root, and gives them back.
// Owns: the previous value of /proc/sys/vm/nr_hugepages (written back by the destructor when this
// object changed it) and an exclusive flock on a lock file in the temporary directory, held for
// the object's lifetime so that reservations by parallel tests (C++ and pytest) never interleave
// their read-modify-write of the sysctl.
#pragma once

#include <cstdint>
#include <string>

namespace shmlease::testing {

// What /proc/meminfo says of the default huge page pool.
struct HugePagePool {
  uint64_t page_size = 0;  // 0: no hugetlb support
  uint64_t total = 0;
  uint64_t available = 0;  // HugePages_Free - HugePages_Rsvd
};
HugePagePool ReadHugePagePool();

class HugePageReservation {
 public:
  // Makes at least `pages` huge pages available, raising vm.nr_hugepages if needed. Check ok():
  // when it is false, reason() says why (not root, no hugetlb, the kernel found too little memory)
  // and nothing was changed.
  explicit HugePageReservation(uint64_t pages);
  ~HugePageReservation();
  HugePageReservation(const HugePageReservation&) = delete;
  HugePageReservation& operator=(const HugePageReservation&) = delete;

  bool ok() const { return ok_; }
  const std::string& reason() const { return reason_; }

 private:
  int lock_fd_ = -1;
  bool ok_ = false;
  bool changed_ = false;
  uint64_t previous_ = 0;
  std::string reason_;
};

// The /proc/self/smaps fields of the mapping that starts at `address` (kB values in bytes):
// Rss, Shared_Hugetlb, Private_Hugetlb, KernelPageSize. Missing fields are 0.
struct MappingResidency {
  bool found = false;
  uint64_t rss = 0;
  uint64_t hugetlb = 0;  // Shared_Hugetlb + Private_Hugetlb
  uint64_t kernel_page_size = 0;
};
MappingResidency ReadMappingResidency(const void* address);

}  // namespace shmlease::testing
