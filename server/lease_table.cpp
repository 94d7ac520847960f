#include "lease_table.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>

namespace shmlease::server {
namespace {

// A broken invariant is a bug in the daemon: say so loudly and stop, never limp on.
[[noreturn]] void InvariantBroken(const char* what) {
  spdlog::critical("lease table invariant broken: {}", what);
  std::abort();
}

}  // namespace

bool LeaseTable::Grantable(const SegmentState& s, bool exclusive) const {
  return exclusive ? s.holders.empty() : !s.exclusive_held;
}

LeaseRecord LeaseTable::Add(uint64_t segment_id, uint64_t conn_id, LeaseMode mode,
                            bool exclusive) {
  LeaseRecord rec{next_lease_++, segment_id, conn_id, mode, exclusive};
  SegmentState& s = segments_[segment_id];
  s.holders.insert(rec.lease_id);
  (mode == LeaseMode::kWrite ? s.writers : s.readers)++;
  if (exclusive) s.exclusive_held = true;
  leases_.emplace(rec.lease_id, rec);
  by_conn_[conn_id].insert(rec.lease_id);
  return rec;
}

LeaseTable::RequestResult LeaseTable::Request(uint64_t segment_id, uint64_t conn_id,
                                              LeaseMode mode, bool exclusive, bool may_wait) {
  SegmentState& s = segments_[segment_id];
  RequestResult result;
  if (s.queue.empty() && Grantable(s, exclusive)) {
    result.outcome = Outcome::kGranted;
    result.lease = Add(segment_id, conn_id, mode, exclusive);
    return result;
  }
  if (!may_wait) {
    DropIfIdle(segment_id);
    result.outcome = Outcome::kWouldBlock;
    return result;
  }
  result.outcome = Outcome::kQueued;
  result.ticket = next_ticket_++;
  auto node = s.queue.insert(s.queue.end(), Waiter{result.ticket, conn_id, mode, exclusive});
  tickets_.emplace(result.ticket, TicketRef{segment_id, node});
  tickets_by_conn_[conn_id].insert(result.ticket);
  return result;
}

std::optional<LeaseRecord> LeaseTable::Release(uint64_t lease_id, uint64_t conn_id) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end() || it->second.conn_id != conn_id) return std::nullopt;
  LeaseRecord rec = it->second;
  leases_.erase(it);
  auto conn = by_conn_.find(conn_id);
  if (conn == by_conn_.end() || conn->second.erase(lease_id) != 1) InvariantBroken("lease not in its connection's set");
  if (conn->second.empty()) by_conn_.erase(conn);

  auto seg = segments_.find(rec.segment_id);
  if (seg == segments_.end() || seg->second.holders.erase(lease_id) != 1) InvariantBroken("lease not in its segment's holders");
  uint32_t& count = rec.mode == LeaseMode::kWrite ? seg->second.writers : seg->second.readers;
  if (count == 0) InvariantBroken("negative lease count");
  --count;
  if (rec.exclusive) seg->second.exclusive_held = false;
  DropIfIdle(rec.segment_id);
  return rec;
}

std::vector<Grant> LeaseTable::Promote(uint64_t segment_id) {
  std::vector<Grant> grants;
  auto seg = segments_.find(segment_id);
  if (seg == segments_.end()) return grants;
  auto& queue = seg->second.queue;
  while (!queue.empty() && Grantable(seg->second, queue.front().exclusive)) {
    Waiter w = queue.front();
    queue.pop_front();
    Unindex(w.ticket, w.conn_id);
    grants.push_back(Grant{w.ticket, Add(segment_id, w.conn_id, w.mode, w.exclusive)});
  }
  return grants;
}

bool LeaseTable::Cancel(uint64_t ticket) {
  auto t = tickets_.find(ticket);
  if (t == tickets_.end()) return false;
  TicketRef ref = t->second;
  auto seg = segments_.find(ref.segment_id);
  if (seg == segments_.end()) InvariantBroken("ticket of an unknown segment");
  if (ref.node->ticket != ticket) InvariantBroken("ticket's queue node holds another ticket");
  uint64_t conn_id = ref.node->conn_id;
  seg->second.queue.erase(ref.node);
  Unindex(ticket, conn_id);
  DropIfIdle(ref.segment_id);
  return true;
}

void LeaseTable::Unindex(uint64_t ticket, uint64_t conn_id) {
  if (tickets_.erase(ticket) != 1) InvariantBroken("ticket not indexed");
  auto conn = tickets_by_conn_.find(conn_id);
  if (conn == tickets_by_conn_.end() || conn->second.erase(ticket) != 1) {
    InvariantBroken("ticket not in its connection's set");
  }
  if (conn->second.empty()) tickets_by_conn_.erase(conn);
}

std::vector<uint64_t> LeaseTable::CancelAll(uint64_t segment_id) {
  std::vector<uint64_t> tickets;
  auto seg = segments_.find(segment_id);
  if (seg == segments_.end()) return tickets;
  for (const Waiter& w : seg->second.queue) {
    tickets.push_back(w.ticket);
    Unindex(w.ticket, w.conn_id);
  }
  seg->second.queue.clear();
  DropIfIdle(segment_id);
  return tickets;
}

std::vector<uint64_t> LeaseTable::LeasesOf(uint64_t conn_id) const {
  auto it = by_conn_.find(conn_id);
  if (it == by_conn_.end()) return {};
  std::vector<uint64_t> ids(it->second.begin(), it->second.end());
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<uint64_t> LeaseTable::TicketsOf(uint64_t conn_id) const {
  auto it = tickets_by_conn_.find(conn_id);
  if (it == tickets_by_conn_.end()) return {};
  std::vector<uint64_t> tickets(it->second.begin(), it->second.end());
  std::sort(tickets.begin(), tickets.end());
  return tickets;
}

size_t LeaseTable::ConnTicketCount(uint64_t conn_id) const {
  auto it = tickets_by_conn_.find(conn_id);
  return it == tickets_by_conn_.end() ? 0 : it->second.size();
}

SegmentCounts LeaseTable::Counts(uint64_t segment_id) const {
  auto seg = segments_.find(segment_id);
  if (seg == segments_.end()) return {};
  return SegmentCounts{seg->second.readers, seg->second.writers, seg->second.exclusive_held,
                       static_cast<uint32_t>(seg->second.queue.size())};
}

size_t LeaseTable::LeaseCount(uint64_t segment_id) const {
  auto seg = segments_.find(segment_id);
  return seg == segments_.end() ? 0 : seg->second.holders.size();
}

size_t LeaseTable::ConnLeaseCount(uint64_t conn_id) const {
  auto it = by_conn_.find(conn_id);
  return it == by_conn_.end() ? 0 : it->second.size();
}

std::optional<LeaseRecord> LeaseTable::Find(uint64_t lease_id) const {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return std::nullopt;
  return it->second;
}

std::vector<LeaseRecord> LeaseTable::HoldersOf(uint64_t segment_id) const {
  std::vector<LeaseRecord> out;
  auto seg = segments_.find(segment_id);
  if (seg == segments_.end()) return out;
  for (uint64_t lease_id : seg->second.holders) out.push_back(leases_.at(lease_id));
  std::sort(out.begin(), out.end(),
            [](const LeaseRecord& a, const LeaseRecord& b) { return a.lease_id < b.lease_id; });
  return out;
}

std::optional<uint64_t> LeaseTable::SegmentOfTicket(uint64_t ticket) const {
  auto it = tickets_.find(ticket);
  if (it == tickets_.end()) return std::nullopt;
  return it->second.segment_id;
}

void LeaseTable::DropIfIdle(uint64_t segment_id) {
  auto seg = segments_.find(segment_id);
  if (seg != segments_.end() && seg->second.holders.empty() && seg->second.queue.empty()) {
    segments_.erase(seg);
  }
}

}  // namespace shmlease::server
