// Who holds which lease, and who waits: the daemon's single source of truth, as pure logic.
// No I/O, no clocks, no sockets: the RequestHandler feeds it events and acts on what it returns,
// so every rule below is unit-tested on its own (tests/unit/lease_table_test.cpp).
//
// Rules: a lease is held by one connection on one segment, in read or write mode, optionally
// exclusive. An exclusive lease is granted only when no other lease exists on the segment; while it
// is held no other lease is granted. Requests that cannot be granted at once wait in arrival order
// (strict FIFO per segment, so a waiting exclusive request is not starved by a stream of shared ones).
//
// Cost: every operation costs the work of its own connection or segment, never the number of
// other clients' waiters (issue 14: one uid queueing 200,000 waits must not slow anyone else). A
// queue is a std::list; each ticket keeps the iterator of its node, and each connection the set
// of its tickets, so Cancel, TicketsOf and a closing connection touch only what they own.
#pragma once

#include <algorithm>
#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "shmlease/protocol.hpp"

namespace shmlease::server {

using proto::LeaseMode;

struct LeaseRecord {
  uint64_t lease_id = 0;
  uint64_t segment_id = 0;
  uint64_t conn_id = 0;
  LeaseMode mode = LeaseMode::kRead;
  bool exclusive = false;
};

// A queued request, granted later: `ticket` names the wait, `lease` the lease it became.
struct Grant {
  uint64_t ticket = 0;
  LeaseRecord lease;
};

struct SegmentCounts {
  uint32_t readers = 0;
  uint32_t writers = 0;
  bool exclusive = false;
  uint32_t waiting = 0;
};

class LeaseTable {
 public:
  enum class Outcome { kGranted, kQueued, kWouldBlock };

  struct RequestResult {
    Outcome outcome = Outcome::kWouldBlock;
    LeaseRecord lease;    // when kGranted
    uint64_t ticket = 0;  // when kQueued
  };

  // Grants at once if the rules allow and nobody waits ahead; otherwise queues the request when
  // `may_wait`, or answers kWouldBlock.
  RequestResult Request(uint64_t segment_id, uint64_t conn_id, LeaseMode mode, bool exclusive,
                        bool may_wait);

  // Releases `lease_id` if `conn_id` holds it; returns the released record, or nullopt when that
  // connection holds no such lease. Call Promote(segment) afterwards.
  std::optional<LeaseRecord> Release(uint64_t lease_id, uint64_t conn_id);

  // Grants queued requests of `segment_id` from the head of its queue while the rules allow.
  std::vector<Grant> Promote(uint64_t segment_id);

  // Withdraws a queued request (timeout, or its connection closed). False if it was not queued
  // (already granted or cancelled). Call Promote(segment) afterwards: the head may have moved.
  bool Cancel(uint64_t ticket);

  // Withdraws every queued request of `segment_id` (it was removed); returns their tickets.
  std::vector<uint64_t> CancelAll(uint64_t segment_id);

  // Every lease and queued ticket of a connection, for release when it closes; ascending. They
  // cost O(k log k) in the connection's own k leases or tickets.
  std::vector<uint64_t> LeasesOf(uint64_t conn_id) const;
  std::vector<uint64_t> TicketsOf(uint64_t conn_id) const;
  // How many requests of a connection wait, and of everyone: O(1).
  size_t ConnTicketCount(uint64_t conn_id) const;
  size_t TotalWaiting() const { return tickets_.size(); }

  // Lease ids from here on start at `first` (never lower than now): a restarted daemon starts a new
  // range so that its ids cannot be mistaken for an earlier process's (docs/RESTART.md).
  void StartLeaseIdsAt(uint64_t first) { next_lease_ = std::max(next_lease_, first); }

  SegmentCounts Counts(uint64_t segment_id) const;
  size_t LeaseCount(uint64_t segment_id) const;  // leases held (not waiting)
  size_t ConnLeaseCount(uint64_t conn_id) const;
  size_t TotalLeases() const { return leases_.size(); }
  std::optional<LeaseRecord> Find(uint64_t lease_id) const;
  // The leases held on `segment_id`, by lease id (for messages that say who holds it).
  std::vector<LeaseRecord> HoldersOf(uint64_t segment_id) const;
  std::optional<uint64_t> SegmentOfTicket(uint64_t ticket) const;

 private:
  struct Waiter {
    uint64_t ticket;
    uint64_t conn_id;
    LeaseMode mode;
    bool exclusive;
  };
  struct SegmentState {
    std::unordered_set<uint64_t> holders;  // lease ids
    uint32_t readers = 0;
    uint32_t writers = 0;
    bool exclusive_held = false;
    std::list<Waiter> queue;  // arrival order; nodes stay put, so tickets keep iterators
  };
  struct TicketRef {
    uint64_t segment_id;
    std::list<Waiter>::iterator node;  // into segments_[segment_id].queue
  };

  bool Grantable(const SegmentState& s, bool exclusive) const;
  LeaseRecord Add(uint64_t segment_id, uint64_t conn_id, LeaseMode mode, bool exclusive);
  void DropIfIdle(uint64_t segment_id);
  // Forgets a ticket's index entries (not its queue node).
  void Unindex(uint64_t ticket, uint64_t conn_id);

  std::unordered_map<uint64_t, SegmentState> segments_;
  std::unordered_map<uint64_t, LeaseRecord> leases_;
  std::unordered_map<uint64_t, std::unordered_set<uint64_t>> by_conn_;  // conn -> lease ids
  // Values of an unordered_map never move, so the list iterators in tickets_ stay valid while
  // their segment's state exists (DropIfIdle erases it only once its queue is empty).
  std::unordered_map<uint64_t, TicketRef> tickets_;
  std::unordered_map<uint64_t, std::unordered_set<uint64_t>> tickets_by_conn_;  // conn -> tickets
  uint64_t next_lease_ = 1;
  uint64_t next_ticket_ = 1;
};

}  // namespace shmlease::server
