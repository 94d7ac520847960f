// One connection to shmleased, shared by a Client and its Leases.
// Owns: the socket descriptor (closed in the destructor, after the last owner is gone), the
// descriptors received with replies until they are mapped, and the per-segment mapping cache.
// Thread safety: any thread may call Call()/SendOneWay(); replies are read by whichever waiting
// thread holds the reader role and handed to their callers (leader/follower), so one slow wait
// (an exclusive lease) never blocks another caller's reply.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "shmlease/client.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease::detail {

// A segment mapped into this process. Unmapped when its last owner (cache or Lease) lets go.
struct Mapping {
  Mapping(void* at, size_t bytes, bool rw) : address(at), length(bytes), writable(rw) {}
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  void* address;
  size_t length;
  bool writable;
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
};

class Connection {
 public:
  // Connects and exchanges hellos. Throws Error.
  static std::shared_ptr<Connection> Open(const std::string& socket_path);
  ~Connection();

  // Sends a request and waits for its reply. Throws Error(kConnectionLost) if the connection ends;
  // an ErrorReply is returned as a reply, not thrown.
  Response Call(const proto::Request& request);
  // Sends a request whose success needs no answer (kFlagNoReply). Never throws; false if the
  // connection is gone.
  bool SendOneWay(const proto::Request& request) noexcept;
  // Shuts the socket down: waiters wake with kConnectionLost, later calls fail at once.
  void Shutdown() noexcept;

  const std::string& socket_path() const { return socket_path_; }
  uint32_t server_pid() const { return server_pid_; }
  bool alive() const { return !dead_.load(); }

 private:
  Connection(int fd, std::string socket_path);
  // False in a child forked after the connection was made: the socket is the parent's, and a
  // child must neither talk on it nor shut it down.
  bool OwnedByThisProcess() const noexcept;

  bool SendFrame(const std::vector<std::byte>& frame);
  // Reads once from the socket and dispatches every whole frame; false when the connection ended.
  bool ReadAndDispatch(std::unique_lock<std::mutex>& lock);
  void Dispatch(const proto::Header& header, proto::Reply&& reply);
  void MarkDead(const std::string& why, Errc code = Errc::kConnectionLost);

  int fd_;
  std::string socket_path_;
  uint64_t fork_generation_;
  uint32_t server_pid_ = 0;
  std::atomic<uint32_t> next_request_{1};
  std::atomic<bool> dead_{false};

  std::mutex send_mu_;  // one writer at a time on the socket

  std::mutex mu_;  // everything below
  std::condition_variable cv_;
  bool reading_ = false;
  std::string dead_reason_;
  Errc dead_code_ = Errc::kConnectionLost;
  std::vector<std::byte> in_;
  size_t filled_ = 0;
  std::deque<int> fds_;  // received, not yet claimed by an AcquireOk
  std::unordered_map<uint32_t, std::unique_ptr<Response>> replies_;  // by request id
  std::unordered_map<uint32_t, bool> waiting_;  // request ids whose callers wait
  // Mappings by (segment id, writable), reused by later leases until the daemon frees the segment.
  std::map<std::pair<uint64_t, bool>, std::shared_ptr<Mapping>> mappings_;
};

}  // namespace shmlease::detail
