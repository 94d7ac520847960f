// The request multiplexer: many threads' requests over one FramedSocket, each caller handed the
// reply to its own request id. Whichever waiting thread finds no reader becomes the reader
// (leader/follower): it reads, routes every reply to its waiter, and wakes them; the others wait
// on a condition variable. So one slow wait (an exclusive lease) never blocks another's reply.
// Owns: the replies read but not yet taken by their callers. The socket and the reply hook are
// its owner's (Connection) and outlive it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "framed_socket.hpp"
#include "shmlease/client.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease::detail {

struct Mapping;

// A descriptor this process owns: closed with its holder unless released.
class OwnedFd {
 public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) : fd_(fd) {}
  ~OwnedFd();
  OwnedFd(OwnedFd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  OwnedFd& operator=(OwnedFd&& o) noexcept;
  int get() const { return fd_; }

 private:
  int fd_ = -1;
};

// A decoded reply and what came with it.
struct Response {
  proto::Reply reply;
  std::shared_ptr<Mapping> mapping;  // for AcquireOk: the mapping the lease reads through
  Errc map_error = Errc::kOk;        // for AcquireOk: why no mapping could be made
  std::string map_message;
  uint64_t lease_handle = 0;  // for AcquireOk with a mapping: the lease, as tracked here
  OwnedFd fd;                 // for ChannelAttachOk and ChannelPartOk: the part passed
};

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

// What the multiplexer's owner does with each message before it is routed.
class ReplyHook {
 public:
  // Called for every reply and unsolicited message (request id 0), in wire order, by the reading
  // thread with the multiplexer's lock held. `awaited`: a caller waits for this reply. May fill
  // in `response` beyond its reply (a mapping, a lease handle); false to consume the message, so
  // that nobody receives it.
  virtual bool OnReply(const proto::Header& header, const proto::Reply& reply, Response& response,
                       bool awaited) = 0;

 protected:
  ~ReplyHook() = default;
};

class RequestMux {
 public:
  // `socket_path` names the daemon in messages.
  RequestMux(FramedSocket& socket, ReplyHook& hook, std::string socket_path)
      : socket_(socket), hook_(hook), socket_path_(std::move(socket_path)) {}

  // A request id, never 0 (the id of unsolicited messages). Any thread.
  uint32_t NextId() noexcept {
    uint32_t id = next_request_.fetch_add(1, std::memory_order_relaxed);
    return id != 0 ? id : next_request_.fetch_add(1, std::memory_order_relaxed);
  }

  // Sends `request` and waits for its reply, on the current socket only: nullopt when the
  // connection is dead, or breaks (or its socket is replaced) before the reply arrives. With
  // `control`, the wait polls control->interrupted and sends a Cancel once it returns true.
  // Without one, the wait blocks in recvmsg or on the condition variable: no timer, no poll.
  std::optional<Response> Call(const proto::Request& request, CallControl* control);
  // Sends a request whose success needs no answer (kFlagNoReply); an error answer to it is
  // dropped. False if it could not be sent. Never throws.
  bool SendOneWay(const proto::Request& request) noexcept;

  // True once the connection broke or was shut down, until Revive. Any thread, no lock.
  bool dead() const noexcept { return dead_.load(); }

  // --- For the owner. Lock() is mu_; the members marked "lock held" expect it held. ---
  std::unique_lock<std::mutex> Lock() const { return std::unique_lock<std::mutex>(mu_); }
  // Lock held. Marks the connection dead, once: later calls keep the first reason.
  // `reconnectable`: the socket broke (the daemon went away); not for faults or refusals.
  void MarkDead(const std::string& why, Errc code = Errc::kConnectionLost,
                bool reconnectable = false);
  // Lock held. Why the connection is dead, as the Error a caller gets.
  Error DeadError() const { return Error(dead_code_, dead_reason_); }
  const std::string& dead_reason() const { return dead_reason_; }
  // Lock held. Whether the connection died of a broken socket (MarkDead's `reconnectable`).
  bool reconnectable() const { return reconnectable_; }
  // Lock held: shuts the socket down, so a blocked reader wakes, and waits until nobody reads.
  // While the connection stays dead, nobody starts reading again.
  void StopReading(std::unique_lock<std::mutex>& lock);
  // Lock held, nobody reading, the socket replaced: live again. Routes what was read with the new
  // socket already, and wakes the waiters of the old one (they see the new generation).
  void Revive();
  // Takes the lock: shuts the socket down for good and wakes every waiter (kConnectionLost, `why`).
  void Kill(const std::string& why) noexcept;

 private:
  // Lock held, reader role held. Reads once and routes every whole frame; false when the
  // connection ended. With `poll_ms` >= 0, returns true having read nothing when nothing came.
  bool ReadAndRoute(std::unique_lock<std::mutex>& lock, int poll_ms = -1);
  // Lock held. Routes every whole frame read; false on a malformed one (the connection is dead).
  bool RouteBuffered();
  void Route(const proto::Header& header, proto::Reply&& reply);

  FramedSocket& socket_;
  ReplyHook& hook_;
  const std::string socket_path_;
  std::atomic<uint32_t> next_request_{1};
  std::atomic<bool> dead_{false};  // written under mu_

  // mu_ guards the members below, the read side of socket_ (through reading_: only the thread
  // that set it reads), and whatever the hook changes (it runs under mu_). It is never held
  // while the socket is written or a callback runs. Lock order: socket_'s HoldSends() before mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;  // reading_ cleared, a reply routed, the connection died or revived
  bool reading_ = false;        // a thread holds the reader role
  uint64_t generation_ = 0;     // bumped by Revive: a waiter of an older one gives up
  bool reconnectable_ = false;
  std::string dead_reason_;
  Errc dead_code_ = Errc::kConnectionLost;
  std::unordered_map<uint32_t, bool> waiting_;                       // ids whose callers wait
  std::unordered_map<uint32_t, std::unique_ptr<Response>> replies_;  // routed, not yet taken
};

}  // namespace shmlease::detail
