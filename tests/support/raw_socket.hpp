// A raw Unix-socket peer for tests that must speak bad protocol on purpose.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "shmlease/codec.hpp"

namespace shmlease::testing {

class RawSocket {
 public:
  explicit RawSocket(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawSocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool Send(const std::vector<std::byte>& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  bool SendRequest(const proto::Request& request, uint32_t id, uint16_t flags = 0) {
    std::vector<std::byte> frame;
    proto::EncodeRequest(request, id, flags, frame);
    return Send(frame);
  }
  // Reads one reply, waiting up to `timeout_ms`; nullopt on timeout or when the peer closed.
  std::optional<proto::Reply> ReadReply(int timeout_ms = 5000, proto::Header* header = nullptr) {
    for (;;) {
      auto frame = proto::DecodeFrame(buffer_, proto::kClientMaxReply);
      if (frame.status == proto::DecodeStatus::kOk) {
        proto::Reply reply;
        Errc error;
        std::string reason;
        bool ok = proto::DecodeReply(frame.header, frame.body, reply, error, reason);
        if (header != nullptr) *header = frame.header;
        buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<long>(frame.consumed));
        if (!ok) return std::nullopt;
        return reply;
      }
      if (frame.status == proto::DecodeStatus::kBad) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
      std::byte chunk[65536];
      ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return std::nullopt;
      buffer_.insert(buffer_.end(), chunk, chunk + n);
    }
  }
  // True once the peer has closed the connection (reads drain whatever is pending first).
  bool PeerClosed(int timeout_ms = 5000) {
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return false;
      std::byte chunk[65536];
      ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return true;
    }
  }
  bool Hello() {
    if (!SendRequest(proto::Hello{proto::kVersion, "raw-test"}, 1)) return false;
    auto reply = ReadReply();
    return reply && std::holds_alternative<proto::HelloOk>(*reply);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::vector<std::byte> buffer_;
};

// Leaves a Unix socket file at `path` that nobody listens on: what a daemon that died leaves.
inline void BindStaleSocket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
}

inline std::vector<std::byte> Bytes(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

}  // namespace shmlease::testing
