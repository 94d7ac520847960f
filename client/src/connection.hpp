// One connection to shmleased, shared by a Client and its Leases.
// Owns: the socket descriptor (closed in the destructor, after the last owner is gone; replaced
// when the connection is re-established), the descriptors received with replies until they are
// mapped, the per-segment mapping cache, and the table of live leases (what a reconnect reclaims).
// Thread safety: any thread may call Call()/SendOneWay(); replies are read by whichever waiting
// thread holds the reader role and handed to their callers (leader/follower), so one slow wait
// (an exclusive lease) never blocks another caller's reply.
// Reconnect (docs/RESTART.md): when the socket breaks, the first caller that notices reconnects
// with bounded backoff, says hello, reclaims the live leases and the mappings, and installs the new
// socket; callers retry what is safe to repeat. Never in a forked child, never after Shutdown().
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

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
  uint64_t segment_id;      // with created_unix_ns: which segment, across daemon restarts
  int64_t created_unix_ns;
};

// Faults every page of `mapping` in (MADV_POPULATE_WRITE for a writable mapping, else
// MADV_POPULATE_READ; one touch per `page_size` bytes where the kernel lacks them). False with
// `why` set when the kernel refuses (out of memory). Never changes the mapped bytes.
bool Populate(const Mapping& mapping, uint64_t page_size, std::string& why) noexcept;

// A decoded reply and what came with it.
struct Response {
  proto::Reply reply;
  std::shared_ptr<Mapping> mapping;  // for AcquireOk: the mapping the lease reads through
  Errc map_error = Errc::kOk;        // for AcquireOk: why no mapping could be made
  std::string map_message;
  uint64_t lease_handle = 0;         // for AcquireOk with a mapping: the lease, as tracked here
};

inline constexpr std::chrono::milliseconds kDefaultReconnectTimeout{10000};

// How often a wait with an interrupted() callback polls it.
inline constexpr std::chrono::milliseconds kInterruptPoll{50};

// An interruptible wait for one request's reply (an Acquire): `interrupted` is polled at least
// every kInterruptPoll while the reply is awaited. Once it returns true a Cancel of the request
// is sent and `cancelled` set; the call still waits for the daemon's answer to the request
// (ErrorReply kCancelled, or a grant that raced ahead, which the caller must release).
struct CallControl {
  const std::function<bool()>* interrupted = nullptr;
  bool cancelled = false;
};

class Connection {
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
  bool alive() const { return !dead_.load(); }

 private:
  struct LiveLease {
    uint64_t id = 0;  // the daemon's id on the current connection
    uint64_t segment_id = 0;
    int64_t created_unix_ns = 0;
    proto::LeaseMode mode = proto::LeaseMode::kRead;
    bool exclusive = false;
  };
  struct Snapshot {
    std::vector<std::pair<uint64_t, LiveLease>> leases;  // by handle
    std::vector<proto::ReclaimMapping> mappings;
  };
  struct Handshake {
    uint32_t server_pid = 0;
    std::vector<proto::ReclaimResult> leases;     // in the order of the snapshot's leases
    std::vector<proto::ReclaimMapping> mappings;  // accepted
    std::vector<std::byte> leftover;              // bytes read past the last reply
  };

  Connection(int fd, std::string socket_path);
  // False in a child forked after the connection was made: the socket is the parent's, and a
  // child must neither talk on it nor shut it down.
  bool OwnedByThisProcess() const noexcept;

  bool SendFrame(const std::vector<std::byte>& frame);
  // One attempt on the current socket: the reply, or nullopt when the socket broke (or was
  // replaced) before the reply arrived.
  std::optional<Response> CallOnce(const proto::Request& request, CallControl* control);
  // Reads once from the socket and dispatches every whole frame; false when the connection ended.
  // With `poll_ms` >= 0, waits at most that long for bytes first (poll(2)) and returns true
  // having read nothing when none came (or a signal interrupted the wait).
  bool ReadAndDispatch(std::unique_lock<std::mutex>& lock, int poll_ms = -1);
  // Dispatches every whole frame in in_; false on a malformed one (the connection is then dead).
  bool DispatchBuffered();
  void Dispatch(const proto::Header& header, proto::Reply&& reply);
  // `reconnectable`: the socket broke (the daemon went away); not for protocol faults or refusals.
  void MarkDead(const std::string& why, Errc code = Errc::kConnectionLost,
                bool reconnectable = false);
  bool CanReconnect() const;
  // Re-establishes the connection unless another thread did since `attempts_seen`. Throws Error
  // with the reason when it cannot within the reconnect timeout.
  void Reconnect(uint64_t attempts_seen);
  // Hello and Reclaim on a fresh socket, blocking, before it is installed. Throws Error.
  Handshake Greet(int fd, const Snapshot& snapshot);

  int fd_;
  std::string socket_path_;
  uint64_t fork_generation_;
  std::atomic<uint32_t> server_pid_{0};
  std::atomic<uint32_t> next_request_{1};
  std::atomic<bool> dead_{false};
  std::atomic<bool> closed_by_user_{false};
  std::atomic<int64_t> reconnect_timeout_ms_{kDefaultReconnectTimeout.count()};
  std::atomic<uint64_t> reconnects_{0};
  std::mutex reconnect_mu_;  // one reconnect at a time; taken before send_mu_ and mu_
  std::atomic<uint64_t> reconnect_attempts_{0};
  Errc last_reconnect_code_ = Errc::kConnectionLost;  // under reconnect_mu_
  std::string last_reconnect_error_;

  std::mutex send_mu_;  // one writer at a time on the socket

  mutable std::mutex mu_;  // everything below
  std::condition_variable cv_;
  bool reading_ = false;
  bool established_ = false;   // hello done: from then on a broken socket may be reconnected
  bool reconnectable_ = false; // why dead_: the socket broke (true) or a fault/refusal/close
  bool reconnecting_ = false;
  uint64_t generation_ = 0;    // bumped when a new socket is installed
  std::string dead_reason_;
  Errc dead_code_ = Errc::kConnectionLost;
  std::vector<std::byte> in_;
  size_t filled_ = 0;
  std::deque<int> fds_;  // received, not yet claimed by an AcquireOk
  // Descriptors the kernel dropped on receipt (MSG_CTRUNC: this process was at its open-file
  // limit); the AcquireOk that announced each one fails with a message that says so.
  size_t fds_dropped_ = 0;
  // (segment id, writable) whose descriptor was dropped: the daemon counts it as passed and will
  // not pass it again on this connection.
  std::set<std::pair<uint64_t, bool>> dropped_keys_;
  std::unordered_map<uint32_t, std::unique_ptr<Response>> replies_;  // by request id
  std::unordered_map<uint32_t, bool> waiting_;  // request ids whose callers wait
  // Mappings by (segment id, writable), reused by later leases until the daemon frees the segment.
  std::map<std::pair<uint64_t, bool>, std::shared_ptr<Mapping>> mappings_;
  std::unordered_map<uint64_t, LiveLease> leases_;  // by handle
  std::unordered_set<uint64_t> lost_;               // handles a reconnect could not restore
  uint64_t next_handle_ = 1;
};

}  // namespace shmlease::detail
