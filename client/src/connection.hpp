// One connection to shmleased, shared by a Client and its Leases: the façade over the rooms that
// make it up (framed_socket.hpp, request_mux.hpp, mapping_cache.hpp, reclaim.hpp).
// Owns: the FramedSocket (and so the socket and the descriptors not yet mapped), the multiplexer
// over it, the mapping cache and the table of live leases; all go with the last owner (the Client
// or a Lease). Replaces the socket when the connection is re-established.
// Thread safety: any thread may call any member; see RequestMux for how replies reach callers.
// Reconnect (docs/RESTART.md): when the socket breaks, the first caller that notices reconnects
// with bounded backoff, says hello, reclaims the live leases and the mappings, and installs the new
// socket; callers retry what is safe to repeat. Never in a forked child, never after Shutdown().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "framed_socket.hpp"
#include "mapping_cache.hpp"
#include "reclaim.hpp"
#include "request_mux.hpp"
#include "shmlease/client.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease::detail {

inline constexpr std::chrono::milliseconds kDefaultReconnectTimeout{10000};

class Connection final : private ReplyHook {
 public:
  // Connects and exchanges hellos. Throws Error.
  static std::shared_ptr<Connection> Open(const std::string& socket_path);
  ~Connection();

  // Sends a request and waits for its reply; an ErrorReply is returned as a reply, not thrown.
  // If the connection breaks, reconnects (see above) and repeats the request when that is safe:
  // Ping, Stat, List, Acquire, and Create with exist_ok. Throws Error(kConnectionLost) for a
  // request that may have taken effect, or with the reason when reconnecting fails.
  // With `control` (see CallControl), the wait can be interrupted; a request whose Cancel was
  // sent is never repeated after a reconnect: Call throws Error(kCancelled) instead.
  Response Call(const proto::Request& request, CallControl* control = nullptr);
  // Sends a request whose success needs no answer (kFlagNoReply). Never throws; false if the
  // connection is gone.
  bool SendOneWay(const proto::Request& request) noexcept;
  // Shuts the socket down for good: waiters wake with kConnectionLost, later calls fail at once,
  // and the connection is never re-established.
  void Shutdown() noexcept;

  // Live leases, by handle (stable for the Lease's life; the daemon's id may change on reconnect).
  // Forgets the lease and releases it (one-way). Never throws and never waits for a reconnect.
  void ReleaseLease(uint64_t handle) noexcept;
  // The daemon's current id of the lease, or 0 once it was released or lost.
  uint64_t LeaseId(uint64_t handle) const noexcept;
  // True when a reconnect could not restore the lease.
  bool LeaseLost(uint64_t handle) const noexcept;
  // True while the daemon counts the lease: it is live here and the connection is up, or broken
  // but about to be re-established (reconnecting on, not closed by the user, not in a forked
  // child). False once released, lost in a reconnect, or the connection is gone for good.
  bool LeaseHeld(uint64_t handle) const noexcept;

  // How long to try to reconnect after the connection breaks; 0 disables reconnecting.
  void set_reconnect_timeout(std::chrono::milliseconds timeout) noexcept {
    reconnect_timeout_ms_.store(timeout.count());
  }
  std::chrono::milliseconds reconnect_timeout() const noexcept {
    return std::chrono::milliseconds(reconnect_timeout_ms_.load());
  }
  // Times the connection was re-established.
  uint64_t reconnects() const noexcept { return reconnects_.load(); }

  const std::string& socket_path() const { return socket_path_; }
  uint32_t server_pid() const { return server_pid_.load(); }
  bool alive() const { return !mux_.dead(); }
  // True while this is still the connection (not re-established since `reconnects_seen`), it is
  // up, and the daemon has not hung up (looked at without reading: a poll). For what the daemon
  // knows by the connection alone, as a channel attachment.
  bool Unbroken(uint64_t reconnects_seen) const noexcept {
    return !mux_.dead() && reconnects_.load() == reconnects_seen && !socket_.PeerHungUp();
  }

 private:
  Connection(int fd, std::string socket_path);
  // False in a child forked after the connection was made: the socket is the parent's, and a
  // child must neither talk on it nor shut it down.
  bool OwnedByThisProcess() const noexcept;

  // The reply hook (RequestMux): maps a grant's segment and tracks its lease; forgets the
  // mappings of a segment the daemon freed.
  bool OnReply(const proto::Header& header, const proto::Reply& reply, Response& response,
               bool awaited) override;
  // Under mux_.Lock(): whether a dead connection may be re-established.
  bool CanReconnect() const;
  // Re-establishes the connection unless another thread did since `attempts_seen`. Throws Error
  // with the reason when it cannot within the reconnect timeout.
  void Reconnect(uint64_t attempts_seen);

  const std::string socket_path_;
  const uint64_t fork_generation_;
  std::atomic<uint32_t> server_pid_{0};
  std::atomic<bool> closed_by_user_{false};
  std::atomic<int64_t> reconnect_timeout_ms_{kDefaultReconnectTimeout.count()};
  std::atomic<uint64_t> reconnects_{0};
  std::atomic<uint64_t> reconnect_attempts_{0};

  // One reconnect at a time; guards the two members below. Lock order: reconnect_mu_, then
  // socket_.HoldSends(), then mux_.Lock().
  std::mutex reconnect_mu_;
  Errc last_reconnect_code_ = Errc::kConnectionLost;
  std::string last_reconnect_error_;

  FramedSocket socket_;
  RequestMux mux_;  // mux_.Lock() guards, besides the multiplexer's state, the members below
  bool established_ = false;   // hello done: from then on a broken socket may be reconnected
  bool reconnecting_ = false;  // a thread is reconnecting: releases go out on the new socket
  MappingCache mappings_;
  LeaseTable leases_;
};

}  // namespace shmlease::detail
