#include "mapping_cache.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "wire_types.hpp"

namespace shmlease::detail {

Mapping::~Mapping() {
  if (address != nullptr && address != MAP_FAILED) ::munmap(address, length);
}

bool Populate(const Mapping& mapping, uint64_t page_size, std::string& why) noexcept {
#ifndef MADV_POPULATE_READ
  constexpr int MADV_POPULATE_READ = 22;  // Linux 5.14 uapi; older headers lack them
  constexpr int MADV_POPULATE_WRITE = 23;
#endif
  if (mapping.length == 0) return true;
  const int advice = mapping.writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
  for (;;) {
    if (::madvise(mapping.address, mapping.length, advice) == 0) return true;
    if (errno == EINTR || errno == EAGAIN) continue;
    if (errno != EINVAL) {
      why = std::string("madvise(MADV_POPULATE_") + (mapping.writable ? "WRITE" : "READ") +
            "): " + std::strerror(errno);
      return false;
    }
    break;  // a kernel before 5.14: touch the pages instead
  }
  uint64_t step = page_size != 0 ? page_size : static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  auto* bytes = static_cast<unsigned char*>(mapping.address);
  for (uint64_t at = 0; at < mapping.length; at += step) {
    if (mapping.writable) {
      // A write fault that changes nothing, even if another process writes the byte meanwhile.
      __atomic_fetch_add(bytes + at, static_cast<unsigned char>(0), __ATOMIC_RELAXED);
    } else {
      (void)*static_cast<volatile unsigned char*>(bytes + at);
    }
  }
  return true;
}

MapOutcome MappingCache::Map(const proto::AcquireOk& ok, const Descriptor* passed) {
  MapOutcome out;
  bool writable = ok.mode == proto::LeaseMode::kWrite;
  Key key{ok.info.id, writable};
  if (passed == nullptr) {
    if (auto it = mappings_.find(key); it != mappings_.end()) {
      out.mapping = it->second;
      return out;
    }
    out.error = Errc::kMapFailed;
    out.message = dropped_.count(key) != 0
                      ? "the descriptor of segment '" + ok.info.name +
                            "' was dropped earlier on this connection (open-file limit) and "
                            "shmleased passes it only once per connection: connect anew"
                      : "no mapping of segment '" + ok.info.name + "' in this process";
    return out;
  }
  if (passed->status == Descriptor::Status::kDropped) {
    dropped_.insert(key);
    out.error = Errc::kMapFailed;
    out.message = "cannot receive the descriptor of segment '" + ok.info.name +
                  "': " + FramedSocket::DroppedReason();
    return out;
  }
  if (passed->status == Descriptor::Status::kMissing) {
    out.error = Errc::kMapFailed;
    out.message = "shmleased announced a descriptor that did not arrive";
    return out;
  }
  // Whole pages of the segment's page size: a huge-page mapping can only be unmapped whole
  // (munmap of a length that ends inside a huge page fails with EINVAL).
  size_t length = static_cast<size_t>(ReservedBytes(ok.info));
  void* address = ::mmap(nullptr, length, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
                         passed->fd, 0);
  int err = errno;
  ::close(passed->fd);
  if (address == MAP_FAILED) {
    out.error = Errc::kMapFailed;
    out.message = "cannot map segment '" + ok.info.name + "': " + std::strerror(err);
    return out;
  }
  out.mapping =
      std::make_shared<Mapping>(address, length, writable, ok.info.id, ok.info.created_unix_ns);
  mappings_[key] = out.mapping;
  return out;
}

void MappingCache::Forget(uint64_t segment_id) {
  mappings_.erase({segment_id, false});
  mappings_.erase({segment_id, true});
}

std::vector<proto::ReclaimMapping> MappingCache::Snapshot() const {
  std::vector<proto::ReclaimMapping> out;
  for (const auto& [key, mapping] : mappings_) {
    out.push_back(proto::ReclaimMapping{mapping->segment_id, mapping->created_unix_ns,
                                        static_cast<uint8_t>(key.second ? 1 : 0)});
  }
  return out;
}

void MappingCache::Retain(const std::vector<proto::ReclaimMapping>& accepted) {
  std::set<Key> keep;
  for (const auto& m : accepted) keep.insert({m.segment_id, m.writable != 0});
  for (auto it = mappings_.begin(); it != mappings_.end();) {
    it = keep.count(it->first) != 0 ? std::next(it) : mappings_.erase(it);
  }
  dropped_.clear();
}

}  // namespace shmlease::detail
