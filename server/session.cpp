#include "session.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "request_handler.hpp"
#include "shmlease/codec.hpp"

namespace shmlease::server {

namespace asio = boost::asio;

Session::Session(Socket socket, uint64_t conn_id, Peer peer, RequestHandler& handler,
                 SessionManager& manager, const Config& config)
    : socket_(std::move(socket)),
      conn_id_(conn_id),
      peer_(std::move(peer)),
      handler_(handler),
      manager_(manager),
      config_(config),
      in_(proto::kHeaderSize + 4096),
      deadline_timer_(socket_.get_executor()),
      connected_at_(std::chrono::steady_clock::now()) {}

Session::~Session() {
  for (Outgoing& o : out_) {
    if (o.fd >= 0) ::close(o.fd);
  }
}

void Session::Start() {
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  UpdateDeadline();
  Read();
}

std::chrono::steady_clock::time_point Session::Deadline() const {
  using std::chrono::milliseconds;
  if (!helloed_ && config_.hello_timeout_ms != 0) {
    return connected_at_ + milliseconds(config_.hello_timeout_ms);
  }
  if (helloed_ && filled_ > 0 && config_.frame_timeout_ms != 0) {
    return frame_started_at_ + milliseconds(config_.frame_timeout_ms);
  }
  return {};  // none
}

void Session::UpdateDeadline() {
  const std::chrono::steady_clock::time_point deadline = Deadline();
  if (deadline == armed_for_) return;
  armed_for_ = deadline;
  if (deadline == std::chrono::steady_clock::time_point{}) {
    deadline_timer_.cancel();
    return;
  }
  deadline_timer_.expires_at(deadline);
  deadline_timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->OnDeadline();
  });
}

void Session::OnDeadline() {
  if (closed_ || close_after_flush_) return;
  armed_for_ = {};
  // A reload may have moved or lifted the deadline since the timer was armed.
  if (const auto deadline = Deadline(); deadline == std::chrono::steady_clock::time_point{} ||
                                        deadline > std::chrono::steady_clock::now()) {
    UpdateDeadline();
    return;
  }
  std::string why;
  if (!helloed_) {
    why = "no Hello within " + std::to_string(config_.hello_timeout_ms) +
          " ms of connecting (hello-timeout-ms)";
  } else if (filled_ > 0) {
    why = "a request begun " + std::to_string(config_.frame_timeout_ms) + " ms ago is still " +
          "incomplete (" + std::to_string(filled_) + " bytes of it arrived; frame-timeout-ms)";
  }
  spdlog::warn("client {} (pid {}, uid {}): {}; closing", conn_id_, peer_.pid, peer_.uid, why);
  FailAndClose(Errc::kTimeout, "shmleased closes this connection: " + why, 0);
}

void Session::Read() {
  if (closed_ || close_after_flush_) return;
  if (filled_ == in_.size()) {
    // Grow only as far as a frame may legally be; DecodeFrame has refused longer ones already.
    size_t limit = proto::kHeaderSize + config_.max_message_size;
    in_.resize(std::min(limit, in_.size() * 2));
  }
  socket_.async_read_some(asio::buffer(in_.data() + filled_, in_.size() - filled_),
                          [self = shared_from_this()](const boost::system::error_code& ec,
                                                      size_t n) { self->OnRead(ec, n); });
}

void Session::OnRead(const boost::system::error_code& ec, size_t n) {
  if (closed_) return;
  if (ec) {
    if (ec != asio::error::eof && ec != asio::error::operation_aborted &&
        ec != asio::error::connection_reset) {
      spdlog::warn("client {} (pid {}): read failed: {}", conn_id_, peer_.pid, ec.message());
    }
    Close();
    return;
  }
  // A frame starts with the first byte read after the previous one ended.
  if (filled_ == 0 && n > 0) frame_started_at_ = std::chrono::steady_clock::now();
  filled_ += n;
  if (!ProcessInput()) return;
  UpdateDeadline();
  Read();
}

bool Session::ProcessInput() {
  size_t start = 0;
  while (!closed_ && !close_after_flush_) {
    auto input = std::span<const std::byte>(in_.data() + start, filled_ - start);
    proto::FrameResult frame = proto::DecodeFrame(input, static_cast<uint32_t>(config_.max_message_size));
    if (frame.status == proto::DecodeStatus::kNeedMore) break;
    if (frame.status == proto::DecodeStatus::kBad) {
      spdlog::warn("client {} (pid {}): {}; closing", conn_id_, peer_.pid, frame.reason);
      uint32_t request_id = input.size() >= proto::kHeaderSize ? frame.header.request_id : 0;
      FailAndClose(frame.error, frame.reason, request_id);
      return false;
    }
    proto::Request request;
    Errc error = Errc::kOk;
    std::string reason;
    if (proto::DecodeRequest(frame.header, frame.body, request, error, reason)) {
      spdlog::debug("client {}: {} #{}", conn_id_, proto::TypeName(frame.header.type),
                    frame.header.request_id);
      handler_.Handle(shared_from_this(), frame.header, std::move(request));
    } else {
      // The framing is intact, so the connection can go on: answer this one request with an error.
      spdlog::info("client {} (pid {}): {}", conn_id_, peer_.pid, reason);
      Send(proto::ErrorReply{error, reason}, frame.header.request_id);
    }
    start += frame.consumed;
  }
  if (closed_) return false;
  if (start > 0) {
    std::memmove(in_.data(), in_.data() + start, filled_ - start);
    filled_ -= start;
    // What is left began in this read, after the frames just consumed.
    if (filled_ > 0) frame_started_at_ = std::chrono::steady_clock::now();
  }
  return !close_after_flush_;
}

bool Session::Send(const proto::Reply& reply, uint32_t request_id, int fd_to_pass) {
  if (closed_) return true;
  Outgoing o;
  uint16_t flags = 0;
  bool delivered = true;
  if (fd_to_pass >= 0) {
    o.fd = ::dup(fd_to_pass);
    if (o.fd < 0) {
      int err = errno;
      spdlog::error("client {}: cannot duplicate a descriptor to pass: {}", conn_id_,
                    std::strerror(err));
      proto::EncodeReply(proto::ErrorReply{Errc::kInternal,
                                           std::string("shmleased cannot pass the segment's "
                                                       "descriptor: ") +
                                               std::strerror(err) + "; try again later"},
                         request_id, 0, o.bytes);
      delivered = false;
    } else {
      flags = proto::kFlagFd;
    }
  }
  if (o.bytes.empty()) proto::EncodeReply(reply, request_id, flags, o.bytes);
  pending_bytes_ += o.bytes.size();
  out_.push_back(std::move(o));
  if (pending_bytes_ > config_.max_pending_reply_bytes) {
    spdlog::warn("client {} (pid {}) is not reading its replies ({} bytes queued); disconnecting",
                 conn_id_, peer_.pid, pending_bytes_);
    Close();
    return delivered;
  }
  Flush();
  return delivered;
}

void Session::FailAndClose(Errc code, const std::string& message, uint32_t request_id) {
  Send(proto::ErrorReply{code, message}, request_id);
  close_after_flush_ = true;
  if (!closed_ && out_.empty()) Close();
}

void Session::Flush() {
  while (!closed_ && !write_waiting_ && !out_.empty()) {
    Outgoing& o = out_.front();
    iovec iov{o.bytes.data() + o.offset, o.bytes.size() - o.offset};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (o.fd >= 0 && o.offset == 0) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cmsg), &o.fd, sizeof(int));
    }
    ssize_t n = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        write_waiting_ = true;
        socket_.async_wait(Socket::wait_write,
                           [self = shared_from_this()](const boost::system::error_code& ec) {
                             self->write_waiting_ = false;
                             if (ec) {
                               self->Close();
                               return;
                             }
                             self->Flush();
                           });
        return;
      }
      spdlog::info("client {} (pid {}): write failed: {}", conn_id_, peer_.pid,
                   std::strerror(errno));
      Close();
      return;
    }
    if (o.fd >= 0) {
      ::close(o.fd);
      o.fd = -1;
    }
    o.offset += static_cast<size_t>(n);
    if (o.offset == o.bytes.size()) {
      pending_bytes_ -= o.bytes.size();
      out_.pop_front();
    }
  }
  if (!closed_ && close_after_flush_ && out_.empty()) Close();
}

void Session::Close() {
  if (closed_) return;
  closed_ = true;
  auto self = shared_from_this();  // the manager may hold the last reference
  deadline_timer_.cancel();
  handler_.OnClose(*this);
  boost::system::error_code ec;
  socket_.shutdown(Socket::shutdown_both, ec);
  socket_.close(ec);
  for (Outgoing& o : out_) {
    if (o.fd >= 0) ::close(o.fd);
  }
  out_.clear();
  manager_.Remove(conn_id_);
}

bool Session::ForgetSegment(uint64_t segment_id) {
  size_t erased = sent_fds_.erase({segment_id, false}) + sent_fds_.erase({segment_id, true});
  return erased != 0;
}

void SessionManager::Add(const std::shared_ptr<Session>& session) {
  if (sessions_.emplace(session->id(), session).second) ++per_uid_[session->peer().uid];
}

void SessionManager::Remove(uint64_t conn_id) {
  auto it = sessions_.find(conn_id);
  if (it == sessions_.end()) return;
  auto count = per_uid_.find(it->second->peer().uid);
  if (count != per_uid_.end() && --count->second == 0) per_uid_.erase(count);
  sessions_.erase(it);
}

void SessionManager::CloseAll() {
  // Close() removes each session from the map: iterate over a copy.
  auto sessions = sessions_;
  for (auto& [id, session] : sessions) session->Close();
}

}  // namespace shmlease::server
