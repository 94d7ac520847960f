#include "framed_socket.hpp"

#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "shmlease/fd_io.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease::detail {

FramedSocket::~FramedSocket() {
  if (fd_ >= 0) ::close(fd_);
  for (int fd : fds_) ::close(fd);
}

bool FramedSocket::SendHeld(std::span<const std::byte> frames) {
  return WriteAll(fd_, frames.data(), frames.size());
}

void FramedSocket::Replace(int fd, std::span<const std::byte> leftover) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  for (int passed : fds_) ::close(passed);
  fds_.clear();
  fds_dropped_ = 0;
  in_.assign(leftover.begin(), leftover.end());
  filled_ = in_.size();
  consumed_ = 0;
}

FramedSocket::ReadStatus FramedSocket::Read(int poll_ms) {
  if (in_.size() - filled_ < 4096) in_.resize(std::max<size_t>(in_.size() * 2, 64 * 1024));
  if (poll_ms >= 0) {
    pollfd p{fd_, POLLIN, 0};
    int ready = ::poll(&p, 1, poll_ms);
    if (ready == 0 || (ready < 0 && errno == EINTR)) return ReadStatus::kNothing;
    // Readable, hung up or failed: recvmsg below says which.
  }
  iovec iov{in_.data() + filled_, in_.size() - filled_};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerRead)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return ReadStatus::kClosed;
  // The kernel drops a passed descriptor it cannot install (EMFILE) and says so only here.
  if ((msg.msg_flags & MSG_CTRUNC) != 0) ++fds_dropped_;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds_.push_back(fd);
    }
  }
  filled_ += static_cast<size_t>(n);
  return ReadStatus::kRead;
}

proto::FrameResult FramedSocket::NextFrame() {
  auto input = std::span<const std::byte>(in_.data() + consumed_, filled_ - consumed_);
  proto::FrameResult frame = proto::DecodeFrame(input, proto::kClientMaxReply);
  if (frame.status == proto::DecodeStatus::kOk) {
    consumed_ += frame.consumed;
  } else if (frame.status == proto::DecodeStatus::kNeedMore && consumed_ > 0) {
    std::memmove(in_.data(), in_.data() + consumed_, filled_ - consumed_);
    filled_ -= consumed_;
    consumed_ = 0;
  }
  return frame;
}

Descriptor FramedSocket::TakeDescriptor() {
  if (!fds_.empty()) {
    int fd = fds_.front();
    fds_.pop_front();
    return {Descriptor::Status::kOk, fd};
  }
  if (fds_dropped_ > 0) {
    --fds_dropped_;
    return {Descriptor::Status::kDropped, -1};
  }
  return {Descriptor::Status::kMissing, -1};
}

std::string FramedSocket::DroppedReason() {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  return "this process has reached its limit of open files (RLIMIT_NOFILE " +
         std::to_string(limit.rlim_cur) + "); close some or raise the limit (ulimit -n)";
}

void FramedSocket::ShutDown() noexcept { ::shutdown(fd_, SHUT_RDWR); }

bool FramedSocket::PeerHungUp() const noexcept {
  pollfd p{fd_, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

}  // namespace shmlease::detail
