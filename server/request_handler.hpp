// Carries out each decoded request against the segment registry and the lease table, and keeps
// the lease waits (with their timers). The only place where leases are granted and released, so
// the daemon stays the single authority over who holds what.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "channel_registry.hpp"
#include "config.hpp"
#include "lease_table.hpp"
#include "segment_registry.hpp"
#include "session.hpp"

namespace shmlease::server {

class RequestHandler {
 public:
  RequestHandler(boost::asio::io_context& io, const Config& config, SegmentRegistry& registry,
                 SessionManager& sessions);

  void Handle(const std::shared_ptr<Session>& session, const proto::Header& header,
              proto::Request&& request);
  // Releases every lease and wait of a closing session: at once for up to 2048 waits, more a
  // slice per turn of the loop (its leases after its last wait).
  void OnClose(Session& session);

  const LeaseTable& table() const { return table_; }

  // --- Restart (reclaim.cpp, docs/RESTART.md) ---
  void StartLeaseIdsAt(uint64_t first) { table_.StartLeaseIdsAt(first); }
  // Frees every removed segment that nobody holds a lease on: at the end of the reclaim grace
  // period after a restart, for segments re-adopted as removed whose holders did not come back.
  void FreeUnclaimed();

 private:
  // Counts one wait against its uid for as long as it lives (max-waiters-per-uid): every way a
  // wait ends erases it from waits_, and that gives the count back.
  class UidWaitCount {
   public:
    UidWaitCount() = default;
    UidWaitCount(std::unordered_map<uint32_t, uint64_t>& counts, uint32_t uid)
        : counts_(&counts), uid_(uid) {
      ++counts[uid];
    }
    UidWaitCount(UidWaitCount&& other) noexcept
        : counts_(std::exchange(other.counts_, nullptr)), uid_(other.uid_) {}
    UidWaitCount& operator=(UidWaitCount&& other) noexcept {
      if (this != &other) {
        GiveBack();
        counts_ = std::exchange(other.counts_, nullptr);
        uid_ = other.uid_;
      }
      return *this;
    }
    ~UidWaitCount() { GiveBack(); }

   private:
    void GiveBack() {
      if (counts_ == nullptr) return;
      auto it = counts_->find(uid_);
      if (it != counts_->end() && --it->second == 0) counts_->erase(it);
      counts_ = nullptr;
    }
    std::unordered_map<uint32_t, uint64_t>* counts_ = nullptr;
    uint32_t uid_ = 0;
  };
  struct Wait {
    std::weak_ptr<Session> session;
    uint32_t request_id = 0;
    std::unique_ptr<boost::asio::steady_timer> timer;
    proto::LeaseMode mode = proto::LeaseMode::kRead;  // as asked, for the timeout's message
    bool exclusive = false;
    int64_t timeout_ms = 0;
    UidWaitCount counted;
  };
  using SessionPtr = std::shared_ptr<Session>;

  void OnHello(const SessionPtr& s, uint32_t id, const proto::Hello& m);
  void OnCreate(const SessionPtr& s, uint32_t id, const proto::Create& m);
  // Back on the loop once the worker has reserved (or failed to reserve) a segment's memory.
  void OnCreated(uint64_t segment_id, std::unique_ptr<ShmObject> shm, Errc error,
                 const std::string& message);
  // The named segment if it exists and is not still being created; else replies kNotFound.
  Segment* FindReady(Session& s, uint32_t id, const std::string& name);
  void OnAcquire(const SessionPtr& s, uint32_t id, const proto::Acquire& m);
  void OnRelease(const SessionPtr& s, const proto::Header& h, const proto::Release& m);
  void OnRemove(const SessionPtr& s, uint32_t id, const proto::Remove& m);
  void OnStat(const SessionPtr& s, uint32_t id, const proto::Stat& m);
  void OnList(const SessionPtr& s, uint32_t id);
  void OnChmod(const SessionPtr& s, uint32_t id, const proto::Chmod& m);
  void OnStats(const SessionPtr& s, uint32_t id);
  // Withdraws this connection's waiting Acquire m.request_id; ignores unknown or finished ones.
  void OnCancel(const SessionPtr& s, const proto::Cancel& m);
  // "held by pid 12 (python3) w exclusive, pid 40 (shmlease) r; 2 waiting", for messages.
  std::string Holders(uint64_t segment_id) const;

  // Access control, from what the kernel says about the peer and the segment's owner and mode.
  enum class Access : uint32_t { kRead = 4, kWrite = 2 };
  bool IsAdmin(const Peer& peer) const;
  bool Allowed(const Peer& peer, const Segment& segment, Access access) const;
  bool Allowed(const Peer& peer, uint32_t owner_uid, uint32_t owner_gid, uint32_t mode,
               Access access) const;
  // Replies kPermissionDenied and returns false when `access` is not allowed. The reply names
  // the segment's owner and mode only to a caller who may read it (who sees them in stat anyway).
  bool CheckAccess(Session& s, uint32_t id, const Segment& segment, Access access);
  // Refuses (kLimitLeases, naming the setting) a request that would wait past a waiter limit.
  std::string WaitLimitReached(const Session& s) const;
  void OnReclaim(const SessionPtr& s, uint32_t id, const proto::Reclaim& m);

  // --- Channels (channel_requests.cpp) ---
  void OnChannelCreate(const SessionPtr& s, uint32_t id, const proto::ChannelCreate& m);
  void OnChannelStat(const SessionPtr& s, uint32_t id, const proto::ChannelStat& m);
  void OnChannelAttach(const SessionPtr& s, uint32_t id, const proto::ChannelAttach& m);
  void OnChannelPart(const SessionPtr& s, uint32_t id, const proto::ChannelPart& m);
  void OnChannelDetach(const SessionPtr& s, const proto::Header& h, const proto::ChannelDetach& m);
  void OnChannelEvict(const SessionPtr& s, uint32_t id, const proto::ChannelEvict& m);
  void OnChannelRemove(const SessionPtr& s, uint32_t id, const proto::ChannelRemove& m);
  void OnChannelList(const SessionPtr& s, uint32_t id);
  // The named channel; else replies kNotFound (saying so when the name is a segment's).
  ChannelObject* FindChannel(Session& s, uint32_t id, const std::string& name);
  bool CheckChannelAccess(Session& s, uint32_t id, const ChannelObject& ch, Access access);

  // Sends AcquireOk for a granted lease, passing the descriptor if this connection lacks it.
  void SendGrant(Session& session, uint32_t request_id, const LeaseRecord& lease);
  void OnWaitExpired(uint64_t ticket);
  // OnClose's work: withdraws tickets[done...] of closed connection `conn_id` a slice at a time,
  // then releases its leases and logs `who` disconnected.
  void WithdrawClosed(uint64_t conn_id, std::vector<uint64_t> tickets, size_t done,
                      std::string who);
  // Replies to every queued request that can now be granted on `segment_id` (granting none to a
  // closed connection).
  void PromoteWaiters(uint64_t segment_id);
  // Frees a removed segment whose last lease is gone, telling connections that mapped it.
  void FreeIfUnused(uint64_t segment_id);
  proto::SegmentInfo Info(const Segment& segment) const;

  boost::asio::io_context& io_;
  const Config& config_;
  SegmentRegistry& registry_;
  SessionManager& sessions_;
  LeaseTable table_;
  ChannelRegistry channels_;
  std::unordered_map<uint32_t, uint64_t> waits_by_uid_;  // before waits_: outlives its counts
  std::unordered_map<uint64_t, Wait> waits_;             // by ticket
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  struct CreateWaiter {
    std::weak_ptr<Session> session;
    uint32_t request_id = 0;
  };
  // Creates in flight, by segment id: everyone waiting for the answer (exist_ok joins the first).
  std::unordered_map<uint64_t, std::vector<CreateWaiter>> creating_;
  // Reserving memory (posix_fallocate) takes ~90 ms per GiB: done here, never on the loop.
  // Last member, so it is joined before anything a running job could touch is destroyed.
  boost::asio::thread_pool workers_{1};
};

}  // namespace shmlease::server
