// One client connection: reads and frames its requests, hands them to the RequestHandler, and
// writes replies, passing descriptors with SCM_RIGHTS.
// Owns: its socket, its input buffer, and the queued replies with the descriptor copies (dup'd when
// queued, closed once sent or when the session closes). Kept alive by the SessionManager and by
// its own pending asynchronous operations.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <map>
#include <set>
#include <unordered_map>
#include <string>
#include <utility>
#include <vector>

#include "config.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease::server {

class RequestHandler;
class SessionManager;

// What the kernel says about the peer (SO_PEERCRED), never what the client says.
struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (SO_PEERGROUPS)
  std::string process;  // /proc/PID/comm, for logs
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  using Socket = boost::asio::local::stream_protocol::socket;

  Session(Socket socket, uint64_t conn_id, Peer peer, RequestHandler& handler,
          SessionManager& manager, const Config& config);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void Start();
  // Queues a reply; `fd_to_pass` (if >= 0) is duplicated now and passed with it. False when the
  // descriptor could not be duplicated (the daemon is out of descriptors): an Error reply
  // (kInternal, saying so) was queued instead of `reply`, and the caller must undo what `reply`
  // announced.
  bool Send(const proto::Reply& reply, uint32_t request_id, int fd_to_pass = -1);
  // Sends an error reply, then closes once it is written (or at once if writing is stuck).
  void FailAndClose(Errc code, const std::string& message, uint32_t request_id);
  // Closes now: the handler releases everything this connection held.
  void Close();

  uint64_t id() const { return conn_id_; }
  const Peer& peer() const { return peer_; }
  bool helloed() const { return helloed_; }
  // The hello deadline no longer applies (the next read re-arms the deadline for what follows).
  void set_helloed() { helloed_ = true; }
  bool closed() const { return closed_; }

  // Descriptors already passed on this connection, by (segment, writable): each is sent once.
  bool HasFd(uint64_t segment_id, bool writable) const {
    return sent_fds_.count({segment_id, writable}) != 0;
  }
  void MarkFdSent(uint64_t segment_id, bool writable) { sent_fds_.insert({segment_id, writable}); }
  // Forgets a freed segment; true if this connection had been sent a descriptor for it.
  bool ForgetSegment(uint64_t segment_id);

 private:
  struct Outgoing {
    std::vector<std::byte> bytes;
    int fd = -1;  // owned copy, closed once sent
    size_t offset = 0;
  };

  void Read();
  void OnRead(const boost::system::error_code& ec, size_t n);
  // Decodes and dispatches every complete frame in the buffer; false if the connection must end.
  bool ProcessInput();
  void Flush();
  // Arms the one deadline that applies now: the hello's (counted from the connect) until Hello
  // has been handled, then a frame's (counted from when its first byte was read) while a frame
  // is incomplete; none between complete frames, however long the client stays idle.
  void UpdateDeadline();
  // The deadline that applies now under the current (live) settings; the epoch for none.
  std::chrono::steady_clock::time_point Deadline() const;
  void OnDeadline();

  Socket socket_;
  uint64_t conn_id_;
  Peer peer_;
  RequestHandler& handler_;
  SessionManager& manager_;
  const Config& config_;

  std::vector<std::byte> in_;
  size_t filled_ = 0;
  std::deque<Outgoing> out_;
  size_t pending_bytes_ = 0;
  bool write_waiting_ = false;
  bool close_after_flush_ = false;
  bool helloed_ = false;
  bool closed_ = false;
  std::set<std::pair<uint64_t, bool>> sent_fds_;
  boost::asio::steady_timer deadline_timer_;
  std::chrono::steady_clock::time_point connected_at_;
  std::chrono::steady_clock::time_point frame_started_at_;  // of the incomplete frame in in_
  std::chrono::steady_clock::time_point armed_for_{};       // the deadline the timer waits for
};

// Every live session, for the connection limit, for shutdown and for SegmentGone notices.
class SessionManager {
 public:
  void Add(const std::shared_ptr<Session>& session);
  void Remove(uint64_t conn_id);
  // Live sessions of `uid`, for the per-uid connection limit; O(1).
  size_t CountOf(uid_t uid) const {
    auto it = per_uid_.find(uid);
    return it == per_uid_.end() ? 0 : it->second;
  }
  // Closes every session (shutdown).
  void CloseAll();
  size_t size() const { return sessions_.size(); }
  // The live session of `conn_id`, or nullptr.
  Session* Find(uint64_t conn_id) const {
    auto it = sessions_.find(conn_id);
    return it == sessions_.end() ? nullptr : it->second.get();
  }
  // Calls f on each session; f may close sessions (the walk is over a snapshot).
  template <typename F>
  void ForEach(F&& f) {
    std::vector<std::shared_ptr<Session>> snapshot;
    snapshot.reserve(sessions_.size());
    for (auto& [id, session] : sessions_) snapshot.push_back(session);
    for (auto& session : snapshot) f(*session);
  }

 private:
  std::map<uint64_t, std::shared_ptr<Session>> sessions_;
  std::unordered_map<uid_t, size_t> per_uid_;  // live sessions by peer uid; no zero entries
};

}  // namespace shmlease::server
