#include "huge_pages.hpp"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <fstream>
#include <sstream>

#include "shmlease/format.hpp"

namespace shmlease::server {
namespace {

// Mount points in /proc/self/mountinfo escape space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size() && text[i + 1] >= '0' && text[i + 1] <= '3') {
      out += static_cast<char>((text[i + 1] - '0') * 64 + (text[i + 2] - '0') * 8 + (text[i + 3] - '0'));
      i += 3;
    } else {
      out += text[i];
    }
  }
  return out;
}

struct MountEntry {
  std::string path;
  std::string type;
  std::string options;  // the superblock options (where tmpfs keeps huge=)
};

std::vector<MountEntry> ReadMounts() {
  std::vector<MountEntry> mounts;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mount-point options [optional...] - type source super-options
    std::istringstream fields(line);
    std::string id, parent, dev, root, point, options, word;
    if (!(fields >> id >> parent >> dev >> root >> point >> options)) continue;
    while (fields >> word && word != "-") {
    }
    MountEntry entry;
    std::string source;
    if (!(fields >> entry.type >> source)) continue;
    fields >> entry.options;
    entry.path = Unescape(point);
    mounts.push_back(std::move(entry));
  }
  return mounts;
}

// The value of `key=` in a comma-separated option list, or "".
std::string OptionValue(const std::string& options, const std::string& key) {
  std::istringstream in(options);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.compare(0, key.size() + 1, key + "=") == 0) return item.substr(key.size() + 1);
  }
  return {};
}

bool IsHugeTmpfs(const MountEntry& m) {
  if (m.type != "tmpfs") return false;
  std::string huge = OptionValue(m.options, "huge");
  return huge == "always" || huge == "within_size";
}

uint64_t HugetlbfsPageSize(const MountEntry& m, uint64_t fallback) {
  if (auto size = ParseSize(OptionValue(m.options, "pagesize"))) return *size;
  struct statfs st {};
  if (::statfs(m.path.c_str(), &st) == 0) return static_cast<uint64_t>(st.f_bsize);
  return fallback;
}

}  // namespace

HugePageHost ProbeHugePages() {
  HugePageHost host;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t value = 0;
  std::string unit;
  std::string line;
  while (std::getline(meminfo, line)) {
    std::istringstream fields(line);
    unit.clear();
    if (!(fields >> key >> value)) continue;
    fields >> unit;
    if (key == "HugePages_Total:") host.total = value;
    if (key == "HugePages_Free:") host.free = value;
    if (key == "HugePages_Rsvd:") host.reserved = value;
    if (key == "Hugepagesize:") host.page_size = unit == "kB" ? value * 1024 : value;
  }
  for (const MountEntry& m : ReadMounts()) {
    if (m.type == "hugetlbfs") {
      host.mounts.push_back({m.path, m.type, HugetlbfsPageSize(m, host.page_size)});
    } else if (IsHugeTmpfs(m)) {
      host.mounts.push_back({m.path, m.type, TransparentHugePageSize()});
    }
  }
  return host;
}

uint64_t DefaultHugePageSize() {
  static const uint64_t size = ProbeHugePages().page_size;
  return size;
}

uint64_t TransparentHugePageSize() {
  static const uint64_t size = [] {
    std::ifstream in("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
    uint64_t bytes = 0;
    if (in >> bytes && bytes > 0) return bytes;
    return uint64_t{2} << 20;
  }();
  return size;
}

std::string HugeDir::Describe() const {
  return (kind == Kind::kHugetlbfs ? "hugetlbfs " : "tmpfs (transparent huge pages) ") + path +
         " (" + FormatSize(page_size) + " pages)";
}

std::optional<HugeDir> InspectHugeDir(const std::string& path, std::string& error) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    error = "huge-dir " + path + " is not a directory";
    return std::nullopt;
  }
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) != 0) {
    error = "cannot statfs huge-dir " + path;
    return std::nullopt;
  }
  if (fs.f_type == HUGETLBFS_MAGIC) {
    return HugeDir{path, HugeDir::Kind::kHugetlbfs, static_cast<uint64_t>(fs.f_bsize)};
  }
  if (fs.f_type == TMPFS_MAGIC) {
    // The mount options tell whether tmpfs gives this mount huge pages: find the mount whose
    // device is the directory's (the longest matching mount point would also do, but bind
    // mounts make the device the reliable key).
    for (const MountEntry& m : ReadMounts()) {
      struct stat mst {};
      if (::stat(m.path.c_str(), &mst) != 0 || mst.st_dev != st.st_dev) continue;
      if (IsHugeTmpfs(m)) {
        return HugeDir{path, HugeDir::Kind::kTmpfsHuge, TransparentHugePageSize()};
      }
    }
    error = "huge-dir " + path +
            " is on a tmpfs without huge pages: mount one with `mount -t tmpfs -o huge=always "
            "none DIR`";
    return std::nullopt;
  }
  error = "huge-dir " + path +
          " is neither on hugetlbfs (`mount -t hugetlbfs none DIR`) nor on a tmpfs mounted with "
          "huge=always";
  return std::nullopt;
}

std::string HowToEnableHugePages(const HugePageHost& host, uint64_t pages_needed) {
  std::string how = "the host has " + std::to_string(host.available()) + " of " +
                    std::to_string(host.total) + " reserved huge pages free";
  if (host.page_size != 0) how += " (" + FormatSize(host.page_size) + " each)";
  uint64_t missing = pages_needed > host.available() ? pages_needed - host.available() : 0;
  how += "; reserve more as root with `sysctl vm.nr_hugepages=" +
         std::to_string(host.total + missing) +
         "` (or vm.nr_hugepages in /etc/sysctl.d), or give shmleased --huge-dir on a hugetlbfs "
         "mount (`mount -t hugetlbfs none DIR`) or on a tmpfs mounted with huge=always";
  return how;
}

std::string DescribeHugePageSupport(const HugePageHost& host, const std::string& huge_dir,
                                    uint64_t threshold) {
  std::string text = "huge pages: ";
  if (host.page_size == 0) {
    text += "this kernel has no hugetlb pages";
  } else {
    text += std::to_string(host.available()) + " of " + std::to_string(host.total) + " reserved " +
            FormatSize(host.page_size) + " pages free (vm.nr_hugepages)";
  }
  std::string mounts;
  for (const auto& m : host.mounts) {
    mounts += (mounts.empty() ? "" : ", ") + m.path + " (" + m.type + ", " +
              FormatSize(m.page_size) + ")";
  }
  text += "; huge-page mounts: " + (mounts.empty() ? std::string("none") : mounts);
  text += "; backing: MFD_HUGETLB memfd";
  text += huge_dir.empty() ? std::string(", no huge-dir") : ", then huge-dir " + huge_dir;
  text += "; ";
  if (threshold == 0) {
    text += "huge pages only when a client asks for them (huge-threshold off)";
  } else {
    text += "segments of " + FormatSize(threshold) +
            " or more get huge pages by default, best effort (huge-threshold)";
  }
  if (host.available() == 0 && huge_dir.empty()) {
    text += "; no huge page is free now, so huge creates will fail or fall back to normal pages "
            "until some are reserved (sysctl vm.nr_hugepages=N)";
  }
  return text;
}

}  // namespace shmlease::server
