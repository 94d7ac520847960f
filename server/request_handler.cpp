#include "request_handler.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

#include <boost/asio/post.hpp>

#include "shmlease/format.hpp"

namespace shmlease::server {

RequestHandler::RequestHandler(boost::asio::io_context& io, const Config& config,
                               SegmentRegistry& registry, SessionManager& sessions)
    : io_(io), config_(config), registry_(registry), sessions_(sessions) {
  // A removed segment's quota is paid by the uids whose leases keep it alive.
  registry_.set_lease_holders([this](uint64_t segment_id) {
    std::vector<uint32_t> uids;
    for (const LeaseRecord& lease : table_.HoldersOf(segment_id)) {
      if (const Session* holder = sessions_.Find(lease.conn_id)) uids.push_back(holder->peer().uid);
    }
    return uids;
  });
  registry_.set_channel_holdings(
      [this](std::optional<uint32_t> uid) { return channels_.HoldingsOf(uid); });
}

void RequestHandler::Handle(const SessionPtr& s, const proto::Header& header,
                            proto::Request&& request) {
  uint32_t id = header.request_id;
  if (!s->helloed() && !std::holds_alternative<proto::Hello>(request)) {
    s->FailAndClose(Errc::kNotHelloed, "the first message must be hello", id);
    return;
  }
  std::visit(
      [&](auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, proto::Hello>) OnHello(s, id, m);
        if constexpr (std::is_same_v<T, proto::Ping>) s->Send(proto::Pong{}, id);
        if constexpr (std::is_same_v<T, proto::Create>) OnCreate(s, id, m);
        if constexpr (std::is_same_v<T, proto::Acquire>) OnAcquire(s, id, m);
        if constexpr (std::is_same_v<T, proto::Release>) OnRelease(s, header, m);
        if constexpr (std::is_same_v<T, proto::Remove>) OnRemove(s, id, m);
        if constexpr (std::is_same_v<T, proto::Stat>) OnStat(s, id, m);
        if constexpr (std::is_same_v<T, proto::List>) OnList(s, id);
        if constexpr (std::is_same_v<T, proto::Chmod>) OnChmod(s, id, m);
        if constexpr (std::is_same_v<T, proto::Stats>) OnStats(s, id);
        if constexpr (std::is_same_v<T, proto::Reclaim>) OnReclaim(s, id, m);
        if constexpr (std::is_same_v<T, proto::Cancel>) OnCancel(s, m);
        if constexpr (std::is_same_v<T, proto::ChannelCreate>) OnChannelCreate(s, id, m);
        if constexpr (std::is_same_v<T, proto::ChannelStat>) OnChannelStat(s, id, m);
        if constexpr (std::is_same_v<T, proto::ChannelAttach>) OnChannelAttach(s, id, m);
        if constexpr (std::is_same_v<T, proto::ChannelPart>) OnChannelPart(s, id, m);
        if constexpr (std::is_same_v<T, proto::ChannelDetach>) OnChannelDetach(s, header, m);
        if constexpr (std::is_same_v<T, proto::ChannelEvict>) OnChannelEvict(s, id, m);
        if constexpr (std::is_same_v<T, proto::ChannelRemove>) OnChannelRemove(s, id, m);
        if constexpr (std::is_same_v<T, proto::ChannelList>) OnChannelList(s, id);
      },
      request);
}

void RequestHandler::OnHello(const SessionPtr& s, uint32_t id, const proto::Hello& m) {
  if (m.version != proto::kVersion) {
    s->FailAndClose(Errc::kVersionMismatch,
                    "client speaks protocol version " + std::to_string(m.version) +
                        ", shmleased speaks " + std::to_string(proto::kVersion),
                    id);
    return;
  }
  if (s->helloed()) {
    s->Send(proto::ErrorReply{Errc::kBadMessage, "hello was already exchanged"}, id);
    return;
  }
  s->set_helloed();
  s->Send(proto::HelloOk{proto::kVersion, static_cast<uint32_t>(::getpid()),
                         static_cast<uint32_t>(config_.max_message_size), SHMLEASE_VERSION},
          id);
}

void RequestHandler::OnCreate(const SessionPtr& s, uint32_t id, const proto::Create& m) {
  if ((m.flags & proto::kCreateExistOk) != 0) {
    if (Segment* existing = registry_.FindByName(m.name)) {
      if (!CheckAccess(*s, id, *existing, Access::kRead)) return;
      Errc error = Errc::kOk;
      std::string message;
      if (!SegmentRegistry::MatchesExisting(*existing, m, error, message)) {
        spdlog::info("create '{}' (exist_ok) by pid {} refused: {}", m.name, s->peer().pid,
                     message);
        s->Send(proto::ErrorReply{error, message}, id);
        return;
      }
      if (existing->creating) {
        creating_[existing->id].push_back({s, id});
      } else {
        s->Send(proto::CreateOk{Info(*existing)}, id);
      }
      return;
    }
  }
  if (channels_.FindByName(m.name) != nullptr) {
    s->Send(proto::ErrorReply{Errc::kAlreadyExists,
                              "a channel named '" + m.name +
                                  "' exists; a segment cannot take a channel's name"},
            id);
    return;
  }
  Errc error = Errc::kOk;
  std::string message;
  Segment* segment =
      registry_.Reserve(m, Creator{static_cast<uint32_t>(s->peer().pid), s->peer().uid, s->peer().gid},
                        error, message);
  if (segment == nullptr) {
    spdlog::info("create '{}' by pid {} refused: {}", m.name, s->peer().pid, message);
    s->Send(proto::ErrorReply{error, message}, id);
    return;
  }
  creating_[segment->id].push_back({s, id});
  boost::asio::post(workers_, [this, segment_id = segment->id,
                               request = ShmRequest{segment->shm_name, segment->size,
                                                    segment->pages, config_.huge_dir,
                                                    config_.backing == "named"}] {
    Errc e = Errc::kOk;
    std::string text;
    std::unique_ptr<ShmObject> shm = ShmObject::Create(request, e, text);
    boost::asio::post(io_, [this, segment_id, shm = std::move(shm), e, text]() mutable {
      OnCreated(segment_id, std::move(shm), e, text);
    });
  });
}

void RequestHandler::OnCreated(uint64_t segment_id, std::unique_ptr<ShmObject> shm, Errc error,
                               const std::string& message) {
  std::vector<CreateWaiter> waiters = std::move(creating_[segment_id]);
  creating_.erase(segment_id);
  Segment* segment = registry_.FindById(segment_id);
  if (segment == nullptr) return;
  if (!shm) {
    spdlog::warn("create '{}' failed: {}", segment->name, message);
    registry_.Abandon(segment_id);
    for (auto& w : waiters) {
      if (auto session = w.session.lock()) session->Send(proto::ErrorReply{error, message}, w.request_id);
    }
    return;
  }
  if (shm->huge_fallback()) {
    spdlog::warn("create '{}': huge pages asked for, best effort: using normal pages; {}",
                 segment->name, shm->fallback_reason());
  }
  std::string backing = shm->Describe();
  registry_.Complete(segment_id, std::move(shm));
  Creator creator{segment->creator_pid, segment->creator_uid};
  spdlog::info("created '{}' ({}, format '{}') for pid {} in {}", segment->name,
               FormatSize(segment->size), segment->format, creator.pid, backing);
  for (auto& w : waiters) {
    if (auto session = w.session.lock()) session->Send(proto::CreateOk{Info(*segment)}, w.request_id);
  }
}

Segment* RequestHandler::FindReady(Session& s, uint32_t id, const std::string& name) {
  Segment* segment = registry_.FindByName(name);
  if (segment == nullptr || segment->creating) {
    std::string message = segment ? "segment '" + name + "' is still being created"
                                  : "no segment named '" + name + "'";
    if (!segment && channels_.FindByName(name) != nullptr) message += " ('" + name + "' is a channel)";
    s.Send(proto::ErrorReply{Errc::kNotFound, message}, id);
    return nullptr;
  }
  return segment;
}

void RequestHandler::OnAcquire(const SessionPtr& s, uint32_t id, const proto::Acquire& m) {
  Segment* segment = FindReady(*s, id, m.name);
  if (segment == nullptr) return;
  if (!CheckAccess(*s, id, *segment,
                   m.mode == proto::LeaseMode::kWrite ? Access::kWrite : Access::kRead)) {
    return;
  }
  if (m.timeout_ms < proto::kWaitForever) {
    s->Send(proto::ErrorReply{Errc::kInvalidArgument, "timeout must be -1 (forever) or >= 0 ms"},
            id);
    return;
  }
  // An exclusive lease locks every other client out, the owner too: it takes the right to write
  // (or ownership), never read permission alone (issue 14).
  if (m.exclusive != 0 && s->peer().uid != segment->owner_uid &&
      !Allowed(s->peer(), *segment, Access::kWrite)) {
    spdlog::info("uid {} (pid {}) refused an exclusive read lease on '{}': no write permission",
                 s->peer().uid, s->peer().pid, segment->name);
    s->Send(proto::ErrorReply{Errc::kPermissionDenied,
                              fmt::format("uid {} may not take an exclusive lease on segment '{}': "
                                          "exclusive locks everyone else out and needs write "
                                          "permission (or ownership); ask for a shared read lease",
                                          s->peer().uid, segment->name)},
            id);
    return;
  }
  if (table_.ConnLeaseCount(s->id()) + table_.ConnTicketCount(s->id()) >=
      config_.max_leases_per_connection) {
    s->Send(proto::ErrorReply{Errc::kLimitLeases,
                              "this connection holds its limit of " +
                                  std::to_string(config_.max_leases_per_connection) +
                                  " leases (max-leases-per-connection, waiting requests counted)"},
            id);
    return;
  }
  // Past a waiter limit the request may still be granted at once, but it may not queue.
  std::string wait_limit = m.timeout_ms != 0 ? WaitLimitReached(*s) : std::string();
  auto result = table_.Request(segment->id, s->id(), m.mode, m.exclusive != 0,
                               m.timeout_ms != 0 && wait_limit.empty());
  switch (result.outcome) {
    case LeaseTable::Outcome::kGranted:
      SendGrant(*s, id, result.lease);
      return;
    case LeaseTable::Outcome::kWouldBlock:
      if (!wait_limit.empty()) {
        s->Send(proto::ErrorReply{Errc::kLimitLeases, "segment '" + m.name + "' is leased " +
                                                          (m.exclusive ? "by others" : "exclusively") +
                                                          " and this request may not wait: " +
                                                          wait_limit},
                id);
        return;
      }
      s->Send(proto::ErrorReply{Errc::kTimeout,
                                "segment '" + m.name + "' is leased " +
                                    (m.exclusive ? "by others" : "exclusively") +
                                    " and timeout is 0 (" + Holders(segment->id) + ")"},
              id);
      return;
    case LeaseTable::Outcome::kQueued: {
      Wait wait{s, id, nullptr};
      wait.counted = UidWaitCount(waits_by_uid_, s->peer().uid);
      wait.mode = m.mode;
      wait.exclusive = m.exclusive != 0;
      wait.timeout_ms = m.timeout_ms;
      // The timer counts in the steady clock's nanoseconds: a timeout it cannot hold (above
      // about 292 years, such as std::chrono::milliseconds::max()) overflowed into a timer that
      // fired at once. It is a wait without limit.
      static_assert(kLongestTimerMs == std::chrono::duration_cast<std::chrono::milliseconds>(
                                           boost::asio::steady_timer::duration::max())
                                           .count());
      if (m.timeout_ms > 0 && m.timeout_ms <= kLongestTimerMs) {
        wait.timer = std::make_unique<boost::asio::steady_timer>(
            io_, std::chrono::milliseconds(m.timeout_ms));
        uint64_t ticket = result.ticket;
        wait.timer->async_wait([this, ticket](const boost::system::error_code& ec) {
          if (!ec) OnWaitExpired(ticket);
        });
      }
      waits_.emplace(result.ticket, std::move(wait));
      spdlog::debug("client {}: lease on '{}' waits (ticket {})", s->id(), m.name, result.ticket);
      return;
    }
  }
}

std::string RequestHandler::WaitLimitReached(const Session& s) const {
  if (table_.ConnTicketCount(s.id()) >= config_.max_waiters_per_connection) {
    return "this connection already has " + std::to_string(config_.max_waiters_per_connection) +
           " lease requests waiting (max-waiters-per-connection)";
  }
  auto uid = waits_by_uid_.find(s.peer().uid);
  if (uid != waits_by_uid_.end() && uid->second >= config_.max_waiters_per_uid) {
    return "uid " + std::to_string(s.peer().uid) + " already has " +
           std::to_string(config_.max_waiters_per_uid) +
           " lease requests waiting on all its connections (max-waiters-per-uid)";
  }
  return {};
}

void RequestHandler::SendGrant(Session& session, uint32_t request_id, const LeaseRecord& lease) {
  Segment* segment = registry_.FindById(lease.segment_id);
  bool writable = lease.mode == proto::LeaseMode::kWrite;
  const bool pass_fd = !session.HasFd(segment->id, writable);
  int fd = pass_fd ? (writable ? segment->shm->rw_fd() : segment->shm->ro_fd()) : -1;
  proto::AcquireOk ok{lease.lease_id, lease.mode, static_cast<uint8_t>(lease.exclusive),
                      Info(*segment)};
  if (!session.Send(ok, request_id, fd)) {
    // Out of descriptors: the client got an error instead of the grant and never learns the
    // lease id, so the lease is undone here rather than held until the connection closes.
    spdlog::warn("client {}: lease {} on '{}' undone: its descriptor could not be passed",
                 session.id(), lease.lease_id, segment->name);
    if (auto released = table_.Release(lease.lease_id, lease.conn_id)) {
      PromoteWaiters(released->segment_id);
      FreeIfUnused(released->segment_id);
    }
    return;
  }
  if (pass_fd) session.MarkFdSent(segment->id, writable);
}

std::string RequestHandler::Holders(uint64_t segment_id) const {
  std::vector<std::string> parts;
  for (const LeaseRecord& lease : table_.HoldersOf(segment_id)) {
    std::string who = "connection " + std::to_string(lease.conn_id);
    if (const Session* holder = sessions_.Find(lease.conn_id)) {
      who = "pid " + std::to_string(holder->peer().pid) + " (" + holder->peer().process + ")";
    }
    parts.push_back(who + " " + (lease.mode == proto::LeaseMode::kWrite ? "w" : "r") +
                    (lease.exclusive ? " exclusive" : ""));
  }
  std::string text = parts.empty() ? "held by nobody" : "held by ";
  for (size_t i = 0; i < parts.size(); ++i) text += (i ? ", " : "") + parts[i];
  return text + "; " + std::to_string(table_.Counts(segment_id).waiting) + " waiting";
}

void RequestHandler::OnWaitExpired(uint64_t ticket) {
  auto it = waits_.find(ticket);
  if (it == waits_.end()) return;
  auto segment_id = table_.SegmentOfTicket(ticket);
  table_.Cancel(ticket);
  if (auto session = it->second.session.lock()) {
    const Wait& w = it->second;
    std::string text = "timed out waiting for the lease";
    // Who holds the segment is told only to a caller who may lease it anyway.
    const Segment* segment = segment_id ? registry_.FindById(*segment_id) : nullptr;
    if (segment != nullptr &&
        Allowed(session->peer(), *segment,
                w.mode == proto::LeaseMode::kWrite ? Access::kWrite : Access::kRead)) {
      text = "timed out after " + std::to_string(w.timeout_ms) + " ms waiting for a " +
             (w.mode == proto::LeaseMode::kWrite ? "write" : "read") +
             (w.exclusive ? " exclusive" : "") + " lease on segment '" + segment->name +
             "': " + Holders(segment->id);
    }
    session->Send(proto::ErrorReply{Errc::kTimeout, text}, w.request_id);
  }
  waits_.erase(it);
  // The expired request may have been the head of the queue, holding back others.
  if (segment_id) PromoteWaiters(*segment_id);
}

void RequestHandler::OnCancel(const SessionPtr& s, const proto::Cancel& m) {
  // Only this connection's own waits: a request id means nothing on another connection.
  for (uint64_t ticket : table_.TicketsOf(s->id())) {
    auto it = waits_.find(ticket);
    if (it == waits_.end() || it->second.request_id != m.request_id) continue;
    auto segment_id = table_.SegmentOfTicket(ticket);
    table_.Cancel(ticket);
    const Segment* segment = segment_id ? registry_.FindById(*segment_id) : nullptr;
    s->Send(proto::ErrorReply{Errc::kCancelled,
                              "the lease request on '" + (segment ? segment->name : std::string()) +
                                  "' was cancelled by the client"},
            m.request_id);
    waits_.erase(it);  // destroys the timer, cancelling it
    spdlog::debug("client {}: lease wait #{} cancelled (ticket {})", s->id(), m.request_id,
                  ticket);
    // The withdrawn request may have been the head of the queue, holding back others.
    if (segment_id) PromoteWaiters(*segment_id);
    return;
  }
  // Unknown or finished (granted, timed out, removed): nothing to withdraw; a grant that crossed
  // the Cancel is released by the client.
}

void RequestHandler::PromoteWaiters(uint64_t segment_id) {
  for (bool again = true; again;) {
    again = false;
    for (const Grant& grant : table_.Promote(segment_id)) {
      auto it = waits_.find(grant.ticket);
      std::shared_ptr<Session> session;
      uint32_t request_id = 0;
      if (it != waits_.end()) {
        session = it->second.session.lock();
        request_id = it->second.request_id;
        waits_.erase(it);  // destroys the timer, cancelling it
      }
      if (!session || session->closed()) {
        // A closed connection's waits are withdrawn a slice at a time (OnClose), so one may reach
        // the head of its queue first: undo the grant and look at the queue again.
        spdlog::debug("granted ticket {} of a closed connection; releasing", grant.ticket);
        table_.Release(grant.lease.lease_id, grant.lease.conn_id);
        again = true;
        continue;
      }
      SendGrant(*session, request_id, grant.lease);
    }
  }
}

void RequestHandler::OnRelease(const SessionPtr& s, const proto::Header& h,
                               const proto::Release& m) {
  auto released = table_.Release(m.lease_id, s->id());
  if (!released) {
    s->Send(proto::ErrorReply{Errc::kNotHeld, "lease " + std::to_string(m.lease_id) +
                                                  " is not held by this connection"},
            h.request_id);
    return;
  }
  PromoteWaiters(released->segment_id);
  FreeIfUnused(released->segment_id);
  if ((h.flags & proto::kFlagNoReply) == 0) s->Send(proto::ReleaseOk{}, h.request_id);
}

void RequestHandler::OnRemove(const SessionPtr& s, uint32_t id, const proto::Remove& m) {
  Segment* found = FindReady(*s, id, m.name);
  if (found == nullptr || !CheckAccess(*s, id, *found, Access::kWrite)) return;
  Segment* segment = registry_.Unname(m.name);
  uint64_t segment_id = segment->id;
  size_t leases = table_.LeaseCount(segment_id);
  spdlog::info("removed '{}' for pid {}{}", m.name, s->peer().pid,
               leases ? fmt::format(" (freed when its {} lease(s) are released)", leases) : "");
  for (uint64_t ticket : table_.CancelAll(segment_id)) {
    auto it = waits_.find(ticket);
    if (it == waits_.end()) continue;
    if (auto waiter = it->second.session.lock()) {
      waiter->Send(proto::ErrorReply{Errc::kNotFound, "segment '" + m.name + "' was removed"},
                   it->second.request_id);
    }
    waits_.erase(it);
  }
  // Free before answering: once remove() returns, an unleased segment's memory is gone.
  FreeIfUnused(segment_id);
  s->Send(proto::RemoveOk{}, id);
}

void RequestHandler::OnStat(const SessionPtr& s, uint32_t id, const proto::Stat& m) {
  Segment* segment = FindReady(*s, id, m.name);
  if (segment == nullptr || !CheckAccess(*s, id, *segment, Access::kRead)) return;
  s->Send(proto::StatOk{Info(*segment)}, id);
}

void RequestHandler::OnList(const SessionPtr& s, uint32_t id) {
  proto::ListOk list;
  for (const Segment* segment : registry_.Named()) {
    if (Allowed(s->peer(), *segment, Access::kRead)) list.segments.push_back(Info(*segment));
  }
  s->Send(list, id);
}

void RequestHandler::OnChmod(const SessionPtr& s, uint32_t id, const proto::Chmod& m) {
  Segment* segment = FindReady(*s, id, m.name);
  if (segment == nullptr) return;
  if (s->peer().uid != segment->owner_uid && !IsAdmin(s->peer())) {
    // The owner's uid only to a caller who may read the segment (and see it in stat anyway).
    std::string owner = Allowed(s->peer(), *segment, Access::kRead)
                            ? " (uid " + std::to_string(segment->owner_uid) + ")"
                            : std::string();
    s->Send(proto::ErrorReply{Errc::kPermissionDenied,
                              "only the owner" + owner + " or an administrator may chmod '" +
                                  m.name + "'"},
            id);
    return;
  }
  if (m.mode > 0777) {
    s->Send(proto::ErrorReply{Errc::kInvalidArgument, "mode must be between 0 and 0777"}, id);
    return;
  }
  spdlog::info("chmod '{}' {:04o} -> {:04o} by uid {}", m.name, segment->mode, m.mode,
               s->peer().uid);
  segment->mode = m.mode;
  registry_.Changed();  // the state file records owner and mode
  s->Send(proto::ChmodOk{Info(*segment)}, id);
}

void RequestHandler::OnStats(const SessionPtr& s, uint32_t id) {
  proto::StatsOk stats;
  stats.segments = static_cast<uint32_t>(registry_.count());
  stats.bytes = registry_.total_bytes();
  stats.max_bytes = config_.max_total_bytes;
  stats.leases = static_cast<uint32_t>(table_.TotalLeases());
  stats.connections = static_cast<uint32_t>(sessions_.size());
  stats.uptime_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              std::chrono::steady_clock::now() - started_)
                                              .count());
  bool admin = IsAdmin(s->peer());
  sessions_.ForEach([&](Session& session) {
    // Others' processes are visible to administrators only.
    if (!admin && session.peer().uid != s->peer().uid) return;
    proto::ClientInfo client;
    client.conn_id = session.id();
    client.pid = static_cast<uint32_t>(session.peer().pid);
    client.uid = session.peer().uid;
    client.gid = session.peer().gid;
    client.process = session.peer().process;
    client.waiting = static_cast<uint32_t>(table_.ConnTicketCount(session.id()));
    for (uint64_t lease_id : table_.LeasesOf(session.id())) {
      auto lease = table_.Find(lease_id);
      const Segment* segment = lease ? registry_.FindById(lease->segment_id) : nullptr;
      if (segment == nullptr) continue;
      client.leases.push_back({segment->name, lease->mode, static_cast<uint8_t>(lease->exclusive)});
    }
    stats.clients.push_back(std::move(client));
  });
  s->Send(stats, id);
}

bool RequestHandler::IsAdmin(const Peer& peer) const {
  for (uint64_t uid : config_.admins) {
    if (uid == peer.uid) return true;
  }
  return false;
}

bool RequestHandler::Allowed(const Peer& peer, const Segment& segment, Access access) const {
  return Allowed(peer, segment.owner_uid, segment.owner_gid, segment.mode, access);
}

bool RequestHandler::Allowed(const Peer& peer, uint32_t owner_uid, uint32_t owner_gid,
                             uint32_t mode, Access access) const {
  if (IsAdmin(peer)) return true;
  uint32_t bits = mode & 07;  // others
  if (peer.uid == owner_uid) {
    bits = (mode >> 6) & 07;
  } else if (peer.gid == owner_gid ||
             std::find(peer.groups.begin(), peer.groups.end(), owner_gid) != peer.groups.end()) {
    bits = (mode >> 3) & 07;
  }
  return (bits & static_cast<uint32_t>(access)) != 0;
}

bool RequestHandler::CheckAccess(Session& s, uint32_t id, const Segment& segment, Access access) {
  if (Allowed(s.peer(), segment, access)) return true;
  spdlog::info("uid {} (pid {}) refused {} access to '{}' (owner {}:{}, mode {:04o})", s.peer().uid,
               s.peer().pid, access == Access::kWrite ? "write" : "read", segment.name,
               segment.owner_uid, segment.owner_gid, segment.mode);
  // Owner and mode are for those who may read the segment (stat shows them the same); anyone
  // else learns only that the name is taken, which create tells everybody anyway (docs/PROTOCOL.md,
  // "Who sees what").
  std::string text = fmt::format("uid {} may not {} segment '{}'", s.peer().uid,
                                 access == Access::kWrite ? "write" : "read", segment.name);
  text += Allowed(s.peer(), segment, Access::kRead)
              ? fmt::format(" (owner {}:{}, mode {:04o})", segment.owner_uid, segment.owner_gid,
                            segment.mode)
              : " (ask its owner for access)";
  s.Send(proto::ErrorReply{Errc::kPermissionDenied, text}, id);
  return false;
}

void RequestHandler::OnClose(Session& session) {
  channels_.OnClose(session.id());
  std::string who = fmt::format("client {} disconnected (pid {}, {})", session.id(),
                                session.peer().pid, session.peer().process);
  WithdrawClosed(session.id(), table_.TicketsOf(session.id()), 0, std::move(who));
}

void RequestHandler::WithdrawClosed(uint64_t conn_id, std::vector<uint64_t> tickets, size_t done,
                                    std::string who) {
  // 20,000 waits take the loop ~8 ms to withdraw, ten such connections closing at once ~80 ms
  // (issue 14): a slice per turn, so that everyone else's requests are served in between. Until
  // then a ticket of the closed connection that reaches the head of its queue is undone by
  // PromoteWaiters.
  constexpr size_t kSlice = 2048;
  const size_t end = std::min(tickets.size(), done + kSlice);
  for (size_t i = done; i < end; ++i) {
    auto segment_id = table_.SegmentOfTicket(tickets[i]);
    table_.Cancel(tickets[i]);  // false if its timer or a grant has withdrawn it meanwhile
    waits_.erase(tickets[i]);
    if (segment_id) PromoteWaiters(*segment_id);
  }
  if (end < tickets.size()) {
    boost::asio::post(io_, [this, conn_id, tickets = std::move(tickets), end,
                            who = std::move(who)]() mutable {
      WithdrawClosed(conn_id, std::move(tickets), end, std::move(who));
    });
    return;
  }
  std::vector<uint64_t> leases = table_.LeasesOf(conn_id);
  for (uint64_t lease_id : leases) {
    auto released = table_.Release(lease_id, conn_id);
    if (!released) continue;
    PromoteWaiters(released->segment_id);
    FreeIfUnused(released->segment_id);
  }
  spdlog::info("{}{}{}", who,
               leases.empty() ? "" : fmt::format(", released {} lease(s)", leases.size()),
               tickets.empty() ? "" : fmt::format(", withdrew {} wait(s)", tickets.size()));
}

void RequestHandler::FreeIfUnused(uint64_t segment_id) {
  Segment* segment = registry_.FindById(segment_id);
  if (segment == nullptr || !segment->removed || table_.LeaseCount(segment_id) != 0) return;
  spdlog::info("freed removed segment '{}' ({})", segment->name, FormatSize(segment->size));
  registry_.Destroy(segment_id);
  sessions_.ForEach([&](Session& session) {
    if (!session.closed() && session.ForgetSegment(segment_id)) {
      session.Send(proto::SegmentGone{segment_id}, 0);
    }
  });
}

proto::SegmentInfo RequestHandler::Info(const Segment& segment) const {
  SegmentCounts counts = table_.Counts(segment.id);
  proto::SegmentInfo info;
  info.id = segment.id;
  info.name = segment.name;
  info.size = segment.size;
  info.format = segment.format;
  info.shape = segment.shape;
  info.created_unix_ns = segment.created_unix_ns;
  info.creator_pid = segment.creator_pid;
  info.creator_uid = segment.creator_uid;
  info.readers = counts.readers;
  info.writers = counts.writers;
  info.exclusive = counts.exclusive ? 1 : 0;
  info.waiting = counts.waiting;
  info.removed = segment.removed ? 1 : 0;
  info.page_size = static_cast<uint32_t>(segment.page_size);
  info.huge_fallback = segment.huge_fallback ? 1 : 0;
  info.owner_uid = segment.owner_uid;
  info.owner_gid = segment.owner_gid;
  info.mode = segment.mode;
  return info;
}

}  // namespace shmlease::server
