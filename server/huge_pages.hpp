// What huge-page support the host offers: reserved hugetlb pages (/proc/meminfo), hugetlbfs
// mounts and tmpfs mounts with transparent huge pages (/proc/self/mountinfo). Pure reads of
// /proc and statfs(); owns nothing. Used by the shm backend to choose a backing and to explain a
// failure, and by the daemon for its startup line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shmlease::server {

struct HugePageHost {
  uint64_t page_size = 0;  // Hugepagesize: the default hugetlb page size; 0 = no hugetlb support
  uint64_t total = 0;      // HugePages_Total: pages reserved in the pool (vm.nr_hugepages)
  uint64_t free = 0;       // HugePages_Free
  uint64_t reserved = 0;   // HugePages_Rsvd: free but promised to existing mappings
  uint64_t available() const { return free > reserved ? free - reserved : 0; }
  struct Mount {
    std::string path;
    std::string type;  // "hugetlbfs" or "tmpfs" (mounted with huge=always or within_size)
    uint64_t page_size = 0;
  };
  std::vector<Mount> mounts;
};

// Reads /proc/meminfo and the mount table. Never fails: what cannot be read is left 0/empty.
HugePageHost ProbeHugePages();

// Hugepagesize from /proc/meminfo (what MFD_HUGETLB uses), read once; 0 without hugetlb support.
uint64_t DefaultHugePageSize();

// The size of a transparent huge page (a PMD), 2 MiB on x86-64.
uint64_t TransparentHugePageSize();

// A directory that can hold huge-page-backed files: on hugetlbfs, or on a tmpfs mounted with
// huge=always or huge=within_size.
struct HugeDir {
  std::string path;
  enum class Kind { kHugetlbfs, kTmpfsHuge } kind = Kind::kHugetlbfs;
  uint64_t page_size = 0;
  std::string Describe() const;
};

// Checks `path` (statfs + mount options). nullopt with `error` saying why when it cannot serve.
std::optional<HugeDir> InspectHugeDir(const std::string& path, std::string& error);

// One line for the startup log: what the host has, and what the daemon will do with
// `huge_dir` ("" = none) and `threshold` (0 = off).
std::string DescribeHugePageSupport(const HugePageHost& host, const std::string& huge_dir,
                                    uint64_t threshold);

// How to get `pages_needed` huge pages on this host, for error messages: the sysctl (with the
// value that would make them free) and the mounts.
std::string HowToEnableHugePages(const HugePageHost& host, uint64_t pages_needed);

}  // namespace shmlease::server
