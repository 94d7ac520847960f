// Leases after a restart: a client that reconnects says which leases it still holds and which
// segments it still has mapped; the daemon re-grants what the rules allow (docs/RESTART.md).
// Part of RequestHandler, kept in its own file.
#include <spdlog/spdlog.h>

#include "request_handler.hpp"

namespace shmlease::server {
namespace {

// The segment a client means: the same id and the same creation time, so that a segment of a
// daemon that lost its state (and counts ids from 1 again) is never mistaken for it.
Segment* Match(SegmentRegistry& registry, uint64_t id, int64_t created_unix_ns) {
  Segment* segment = registry.FindById(id);
  if (segment == nullptr || segment->creating || !segment->shm ||
      segment->created_unix_ns != created_unix_ns) {
    return nullptr;
  }
  return segment;
}

}  // namespace

void RequestHandler::OnReclaim(const SessionPtr& s, uint32_t id, const proto::Reclaim& m) {
  proto::ReclaimOk ok;
  // Mappings first: a reclaimed lease on a mapped segment then needs no descriptor, and neither do
  // later Acquires of it on this connection (the client's mapping is still valid).
  for (const proto::ReclaimMapping& mapping : m.mappings) {
    Segment* segment = Match(registry_, mapping.segment_id, mapping.created_unix_ns);
    if (segment == nullptr) continue;
    s->MarkFdSent(segment->id, mapping.writable != 0);
    ok.mappings.push_back(mapping);
  }
  size_t granted = 0;
  for (const proto::ReclaimLease& lease : m.leases) {
    proto::ReclaimResult result{lease.lease_id, 0, Errc::kOk};
    Segment* segment = Match(registry_, lease.segment_id, lease.created_unix_ns);
    if (segment == nullptr) {
      result.status = Errc::kNotFound;
    } else if (table_.ConnLeaseCount(s->id()) + table_.ConnTicketCount(s->id()) >=
               config_.max_leases_per_connection) {
      result.status = Errc::kLimitLeases;
    } else if (!Allowed(s->peer(), *segment,
                        lease.mode == proto::LeaseMode::kWrite ? Access::kWrite : Access::kRead)) {
      // A reclaim takes a lease as an Acquire does and passes the same check (a chmod may have
      // happened; and it passes no descriptor, so it never opens memory the client could not map).
      result.status = Errc::kPermissionDenied;
    } else {
      auto r = table_.Request(segment->id, s->id(), lease.mode, lease.exclusive != 0,
                              /*may_wait=*/false);
      if (r.outcome == LeaseTable::Outcome::kGranted) {
        result.new_lease_id = r.lease.lease_id;
        ++granted;
      } else {
        // Someone was granted a conflicting lease between the restart and this reclaim.
        result.status = Errc::kTimeout;
      }
    }
    ok.leases.push_back(result);
  }
  spdlog::info("client {} (pid {}) reclaimed {} of {} lease(s) and {} of {} mapping(s)", s->id(),
               s->peer().pid, granted, m.leases.size(), ok.mappings.size(), m.mappings.size());
  s->Send(ok, id);
}

void RequestHandler::FreeUnclaimed() {
  std::vector<uint64_t> unclaimed;
  for (const Segment* segment : registry_.All()) {
    if (segment->removed && table_.LeaseCount(segment->id) == 0) unclaimed.push_back(segment->id);
  }
  if (!unclaimed.empty()) {
    spdlog::info("reclaim grace over: freeing {} removed segment(s) nobody reclaimed",
                 unclaimed.size());
  }
  for (uint64_t id : unclaimed) FreeIfUnused(id);
}

}  // namespace shmlease::server
