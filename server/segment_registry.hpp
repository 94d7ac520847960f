// The daemon's segments: by name (while named) and by id (until freed), with the limits on their
// number and bytes. Owns every ShmObject; a segment's memory is released when Destroy() drops it.
// A removed segment keeps counting against the limits until it is destroyed; against the quotas
// of the uids whose leases keep it alive (docs/PROTOCOL.md, "Limits and quotas").
#pragma once

#include <cstdint>
#include <functional>
#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "config.hpp"
#include "shm_backend.hpp"
#include "state_store.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease::server {

// A segment: what survives a restart (PersistedSegment: identity, geometry, owner, mode, removed,
// shm name), and what lives only in this process.
struct Segment : PersistedSegment {
  // True from Reserve() until Complete(): the name and bytes are taken, the memory is not there
  // yet (it is being reserved off the event loop). Such a segment cannot be leased or removed.
  bool creating = false;
  PagePolicy pages = PagePolicy::kNormal;  // decided by Reserve() from the flags and huge-threshold
  // Bytes counted against the limits: while creating, the size rounded up to the largest huge
  // page size the segment might get; once complete, what its backing really holds.
  uint64_t counted_bytes = 0;
  uint64_t page_size = 0;       // set by Complete()
  bool huge_fallback = false;   // set by Complete()
  std::unique_ptr<ShmObject> shm;
};

// Objects and bytes held outside this registry (the daemon's channels): they count against the
// same limits and quotas as segments.
struct Holdings {
  uint64_t objects = 0;
  uint64_t bytes = 0;
};

struct Creator {
  uint32_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
};

class SegmentRegistry {
 public:
  explicit SegmentRegistry(const Config& config) : config_(config) {}

  // Validates name, size, format and shape, checks the limits, and takes the name and the bytes
  // for a segment in the `creating` state. Returns nullptr with `error`/`message` set on failure.
  // Decides the segment's PagePolicy (Create.flags, else huge-threshold) and counts a huge
  // segment's size rounded up to whole huge pages. Its shm object is made by
  // ShmObject::Create({segment->shm_name, size, segment->pages, ...}) and handed to Complete(),
  // which corrects the count to the backing's real size, or the reservation is dropped with
  // Abandon().
  Segment* Reserve(const proto::Create& request, Creator creator, Errc& error,
                   std::string& message);
  void Complete(uint64_t id, std::unique_ptr<ShmObject> shm);
  void Abandon(uint64_t id);

  // Create with exist_ok of an existing name: true when `existing` is of the size, format and
  // shape asked for, compared after the request is completed as a create would complete it (size
  // 0 = derived from format and shape; empty shape = the 1-D default of size / itemsize items;
  // empty format = raw bytes, the same as "B"). Otherwise false with kInvalidArgument for a
  // request that is not valid in itself, or kAlreadyExists and a message naming both shapes.
  // Page backing (huge) and mode are not compared.
  static bool MatchesExisting(const Segment& existing, const proto::Create& request, Errc& error,
                              std::string& message);

  Segment* FindByName(const std::string& name);
  Segment* FindById(uint64_t id);

  // Takes the name away (a new segment may reuse it at once); the segment lives on, by id, until
  // Destroy(). Returns nullptr if no segment has that name.
  Segment* Unname(const std::string& name);
  // Frees the segment's memory and forgets it.
  void Destroy(uint64_t id);

  // Who pays quota for a removed segment: the uids holding leases on it, told by the lease
  // table's owner (RequestHandler). Its owner pays only while it holds one too, or while nobody
  // does (the memory is then about to be freed); a removed segment nobody can reach otherwise
  // keeps the owner out of its own quota for as long as another user holds on to it.
  void set_lease_holders(std::function<std::vector<uint32_t>(uint64_t segment_id)> holders) {
    lease_holders_ = std::move(holders);
  }
  // True when `segment` counts against `uid`'s quotas (by the rule above).
  bool Charged(const Segment& segment, uint32_t uid) const;

  // What the daemon's channels hold, told by their registry's owner (RequestHandler): all of
  // them (no uid), or those `uid` created. Counted with the segments by the two checks below.
  void set_channel_holdings(std::function<Holdings(std::optional<uint32_t> uid)> holdings) {
    channel_holdings_ = std::move(holdings);
  }
  // True if one more segment or channel of `bytes` fits max-segments and max-total-bytes (every
  // segment and channel until freed); else false with kLimitSegments or kLimitBytes.
  bool CheckRoom(uint64_t bytes, Errc& error, std::string& message) const;
  // True if `uid` may own one more segment or channel of `bytes`: the segments it pays for
  // (Charged) and the channels it created, against quota-segments and quota-bytes; else false
  // with kQuotaSegments or kQuotaBytes.
  bool CheckQuota(uint32_t uid, uint64_t bytes, Errc& error, std::string& message) const;

  // --- Durable state (docs/RESTART.md) ---
  // Called after every change the state file records: a segment completed, removed or freed.
  void set_on_change(std::function<void()> on_change) { on_change_ = std::move(on_change); }
  // Called when a segment with a nameless backing (IsNameless) gets its memory (true: store its
  // descriptor with the service manager) and when it is freed (false: drop it from there).
  void set_on_backing(std::function<void(const Segment&, bool)> on_backing) {
    on_backing_ = std::move(on_backing);
  }
  // For changes made to a segment's fields in place (owner, group, mode): records them.
  void Changed() {
    if (on_change_ && !preserved_) on_change_();
  }
  // Takes over a segment of an earlier daemon process, with its id, name (unless removed) and
  // shm object. False if its id or name is taken.
  bool Adopt(std::unique_ptr<Segment> segment);
  uint64_t next_id() const { return next_id_; }
  void set_next_id(uint64_t next_id) { next_id_ = std::max(next_id_, next_id); }
  // Every segment that exists (not still being created, removed ones too), in id order.
  std::vector<const Segment*> All() const;
  // The daemon is stopping and keeps its segments for the next one: from now on nothing is freed
  // (Destroy() does nothing) and every shm object outlives this registry.
  void Preserve();

  // Named segments that exist (not still being created), in name order.
  std::vector<const Segment*> Named() const;
  size_t count() const { return by_id_.size(); }
  uint64_t total_bytes() const { return total_bytes_; }

 private:
  const Config& config_;
  std::unordered_map<uint64_t, std::unique_ptr<Segment>> by_id_;
  std::map<std::string, Segment*> by_name_;
  uint64_t total_bytes_ = 0;
  uint64_t next_id_ = 1;
  std::function<void()> on_change_;
  std::function<void(const Segment&, bool)> on_backing_;
  std::function<std::vector<uint32_t>(uint64_t)> lease_holders_;
  std::function<Holdings(std::optional<uint32_t>)> channel_holdings_;
  bool preserved_ = false;
};

}  // namespace shmlease::server
