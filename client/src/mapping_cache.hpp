// The segments this process has mapped, made from the descriptors the daemon passes.
// Owns: every Mapping it makes jointly with the Leases that read through it (a shared_ptr each;
// the last owner unmaps it); the cache lets go of a segment's mappings when the daemon frees it
// (SegmentGone) or a reconnect does not restore them. Closes each passed descriptor once mapped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "framed_socket.hpp"
#include "shmlease/client.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease::detail {

// A segment mapped into this process. Unmapped when its last owner (cache or Lease) lets go.
struct Mapping {
  Mapping(void* at, size_t bytes, bool rw, uint64_t segment, int64_t created)
      : address(at), length(bytes), writable(rw), segment_id(segment), created_unix_ns(created) {}
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  void* address;
  size_t length;
  bool writable;
  uint64_t segment_id;  // with created_unix_ns: which segment, across daemon restarts
  int64_t created_unix_ns;
};

// Faults every page of `mapping` in (MADV_POPULATE_WRITE for a writable mapping, else
// MADV_POPULATE_READ; one touch per `page_size` bytes where the kernel lacks them). False with
// `why` set when the kernel refuses (out of memory). Never changes the mapped bytes.
bool Populate(const Mapping& mapping, uint64_t page_size, std::string& why) noexcept;

// The mapping a grant reads through, or why there is none.
struct MapOutcome {
  std::shared_ptr<Mapping> mapping;
  Errc error = Errc::kOk;  // kMapFailed when mapping is null
  std::string message;
};

// Mappings by (segment id, writable), reused by later grants of the same segment and mode until
// the daemon frees the segment. Not locked itself: Connection calls it only under mux_.Lock(), from
// the reply hook (the reading thread) or from a reconnect (while nothing is read).
class MappingCache {
 public:
  // The mapping for grant `ok`: made from `passed` when the grant came with a descriptor
  // (`passed` is then taken: closed once mapped), else the cached one. Grants must be given in
  // wire order, so a grant that reuses a mapping finds the one its predecessor carried.
  MapOutcome Map(const proto::AcquireOk& ok, const Descriptor* passed);
  // The daemon freed the segment: later grants of it come with a new descriptor.
  void Forget(uint64_t segment_id);
  // What a reconnect asks the new connection to keep.
  std::vector<proto::ReclaimMapping> Snapshot() const;
  // After a reconnect: keeps the mappings the daemon `accepted`, lets go of the rest, and forgets
  // the descriptors dropped on the old connection.
  void Retain(const std::vector<proto::ReclaimMapping>& accepted);

 private:
  using Key = std::pair<uint64_t, bool>;  // segment id, writable
  std::map<Key, std::shared_ptr<Mapping>> mappings_;
  // Keys whose descriptor was dropped (open-file limit): the daemon counts it as passed and will
  // not pass it again on this connection.
  std::set<Key> dropped_;
};

}  // namespace shmlease::detail
