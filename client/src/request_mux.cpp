#include "request_mux.hpp"

#include <unistd.h>

#include <utility>
#include <vector>

#include "shmlease/codec.hpp"

namespace shmlease::detail {

OwnedFd::~OwnedFd() {
  if (fd_ >= 0) ::close(fd_);
}
OwnedFd& OwnedFd::operator=(OwnedFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}


std::optional<Response> RequestMux::Call(const proto::Request& request, CallControl* control) {
  uint32_t id = NextId();
  std::vector<std::byte> frame;
  proto::EncodeRequest(request, id, 0, frame);

  std::unique_lock<std::mutex> lock(mu_);
  if (dead_) return std::nullopt;
  uint64_t generation = generation_;
  waiting_[id] = true;
  lock.unlock();
  if (!socket_.Send(frame)) {
    lock.lock();
    waiting_.erase(id);
    if (generation_ != generation) return std::nullopt;  // sent on a socket replaced meanwhile
    // The daemon may have said why before it closed (e.g. its connection limit): read that.
    if (!reading_ && !dead_) {
      reading_ = true;
      ReadAndRoute(lock);
      reading_ = false;
      cv_.notify_all();
    }
    MarkDead("connection to shmleased at " + socket_path_ + " lost while sending",
             Errc::kConnectionLost, /*reconnectable=*/true);
    return std::nullopt;
  }
  const bool interruptible =
      control != nullptr && control->interrupted != nullptr && *control->interrupted;
  lock.lock();
  for (;;) {
    auto it = replies_.find(id);
    if (it != replies_.end()) {
      Response response = std::move(*it->second);
      replies_.erase(it);
      waiting_.erase(id);
      return response;
    }
    if (dead_ || generation_ != generation) {
      waiting_.erase(id);
      return std::nullopt;
    }
    if (interruptible && !control->cancelled) {
      // The callback runs without any lock held: it may take its time or call back into Python.
      lock.unlock();
      bool stop = (*control->interrupted)();
      if (stop) {
        control->cancelled = true;
        std::vector<std::byte> cancel;
        proto::EncodeRequest(proto::Cancel{id}, NextId(), proto::kFlagNoReply, cancel);
        socket_.Send(cancel);  // if it fails, the broken connection ends the wait below
      }
      lock.lock();
      // The reply may have come meanwhile; after a Cancel the wait goes on without polling.
      if (stop) continue;
      it = replies_.find(id);
      if (it != replies_.end() || dead_ || generation_ != generation) continue;
    }
    if (!reading_) {
      reading_ = true;
      bool ok = ReadAndRoute(lock, interruptible && !control->cancelled
                                       ? static_cast<int>(kInterruptPoll.count())
                                       : -1);
      reading_ = false;
      if (!ok && !dead_) {
        MarkDead("shmleased at " + socket_path_ + " closed the connection", Errc::kConnectionLost,
                 /*reconnectable=*/true);
      }
      cv_.notify_all();
    } else if (interruptible && !control->cancelled) {
      cv_.wait_for(lock, kInterruptPoll);
    } else {
      cv_.wait(lock);
    }
  }
}

bool RequestMux::SendOneWay(const proto::Request& request) noexcept {
  if (dead_) return false;
  try {
    std::vector<std::byte> frame;
    proto::EncodeRequest(request, NextId(), proto::kFlagNoReply, frame);
    return socket_.Send(frame);
  } catch (...) {
    return false;
  }
}

void RequestMux::MarkDead(const std::string& why, Errc code, bool reconnectable) {
  if (dead_) return;
  dead_reason_ = why;
  dead_code_ = code;
  reconnectable_ = reconnectable;
  dead_ = true;
}

void RequestMux::StopReading(std::unique_lock<std::mutex>& lock) {
  socket_.ShutDown();
  cv_.wait(lock, [&] { return !reading_; });
}

void RequestMux::Revive() {
  dead_ = false;
  reconnectable_ = false;
  dead_reason_.clear();
  dead_code_ = Errc::kConnectionLost;
  ++generation_;
  RouteBuffered();
  cv_.notify_all();
}

void RequestMux::Kill(const std::string& why) noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  socket_.ShutDown();
  MarkDead(why);
  cv_.notify_all();
}

bool RequestMux::ReadAndRoute(std::unique_lock<std::mutex>& lock, int poll_ms) {
  lock.unlock();
  FramedSocket::ReadStatus status = socket_.Read(poll_ms);
  lock.lock();
  if (status == FramedSocket::ReadStatus::kNothing) return true;
  if (status == FramedSocket::ReadStatus::kClosed) return false;
  return RouteBuffered();
}

bool RequestMux::RouteBuffered() {
  for (;;) {
    proto::FrameResult frame = socket_.NextFrame();
    if (frame.status == proto::DecodeStatus::kNeedMore) return true;
    if (frame.status == proto::DecodeStatus::kBad) {
      MarkDead("shmleased sent a malformed reply: " + frame.reason);
      socket_.ShutDown();
      return false;
    }
    proto::Reply reply;
    Errc error;
    std::string reason;
    if (!proto::DecodeReply(frame.header, frame.body, reply, error, reason)) {
      MarkDead("shmleased sent a reply this client cannot read: " + reason);
      socket_.ShutDown();
      return false;
    }
    Route(frame.header, std::move(reply));
  }
}

void RequestMux::Route(const proto::Header& header, proto::Reply&& reply) {
  auto response = std::make_unique<Response>();
  const bool awaited = waiting_.count(header.request_id) != 0;
  if (!hook_.OnReply(header, reply, *response, awaited)) return;
  if (auto* err = std::get_if<proto::ErrorReply>(&reply); err && header.request_id == 0) {
    // An error to no request: the daemon refused the connection itself (e.g. connection limit).
    MarkDead(err->message, err->code);
    return;
  }
  if (!awaited) return;  // an answer to a one-way request: dropped
  response->reply = std::move(reply);
  replies_[header.request_id] = std::move(response);
}

}  // namespace shmlease::detail
