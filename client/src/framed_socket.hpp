// A stream socket that carries whole frames one way and frames plus SCM_RIGHTS descriptors the
// other: the client's end of a connection to shmleased. It knows frames, not requests.
// Owns: the socket descriptor, the bytes read but not yet taken as frames, and the descriptors
// received but not yet taken; all are closed in the destructor or when the socket is replaced.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "shmlease/codec.hpp"

namespace shmlease::detail {

// Most descriptors one read accepts (SCM_RIGHTS); the daemon passes one per AcquireOk.
inline constexpr size_t kMaxFdsPerRead = 32;

// A descriptor that came (or should have come) with a frame flagged kFlagFd.
struct Descriptor {
  enum class Status {
    kOk,       // fd is the descriptor, now the taker's to close
    kDropped,  // the kernel dropped it on receipt: this process was at its open-file limit
    kMissing,  // announced, but none arrived
  };
  Status status = Status::kMissing;
  int fd = -1;
};

class FramedSocket {
 public:
  enum class ReadStatus {
    kRead,     // bytes (and perhaps descriptors) arrived
    kNothing,  // the poll timed out or a signal interrupted it: nothing was read
    kClosed,   // the peer closed the connection, or the socket failed
  };

  // Takes ownership of `fd` (-1 for none yet).
  explicit FramedSocket(int fd) : fd_(fd) {}
  ~FramedSocket();
  FramedSocket(const FramedSocket&) = delete;
  FramedSocket& operator=(const FramedSocket&) = delete;

  // Writes whole frames. Any thread; one writer at a time, so frames never interleave. False when
  // the socket broke (errno says why).
  bool Send(std::span<const std::byte> frames) {
    std::lock_guard<std::mutex> lock(send_mu_);
    return SendHeld(frames);
  }
  // Holds off every Send while the returned lock lives: for Replace.
  std::unique_lock<std::mutex> HoldSends() { return std::unique_lock<std::mutex>(send_mu_); }
  // Send, for the holder of HoldSends().
  bool SendHeld(std::span<const std::byte> frames);
  // Closes the socket and every descriptor not yet taken, forgets what was read and dropped, and
  // installs `fd` with `leftover` (bytes already read from it) as the first bytes to frame.
  // The caller holds HoldSends() and no thread reads.
  void Replace(int fd, std::span<const std::byte> leftover);

  // --- The read side: one thread at a time (the caller ensures it), never with Replace. ---

  // Reads once (recvmsg), keeping the bytes and any descriptors that came with them. With
  // `poll_ms` >= 0, waits at most that long for something to read first.
  ReadStatus Read(int poll_ms = -1);
  // Takes the next whole frame from what was read. kOk: `header` and `body` (valid until the next
  // Read or NextFrame) describe it; kNeedMore: no whole frame yet; kBad: malformed (`reason`).
  proto::FrameResult NextFrame();
  // The descriptor that came with the frame just taken (one flagged kFlagFd): descriptors are
  // taken in the order they arrived, as frames are.
  Descriptor TakeDescriptor();
  // Why a descriptor was dropped (Descriptor::kDropped), with this process's open-file limit.
  static std::string DroppedReason();

  // Shuts the socket down both ways: a blocked Read returns kClosed, later Sends fail.
  void ShutDown() noexcept;
  // True when the peer hung up (seen without reading).
  bool PeerHungUp() const noexcept;

 private:
  int fd_;
  std::mutex send_mu_;  // one writer at a time on fd_; held by Replace while fd_ changes

  // Read side, owned by the one reading thread.
  std::vector<std::byte> in_;
  size_t filled_ = 0;    // bytes of in_ read
  size_t consumed_ = 0;  // of those, taken as frames
  std::deque<int> fds_;  // received, not yet taken
  // Descriptors the kernel dropped on receipt (MSG_CTRUNC: this process was at its open-file
  // limit); TakeDescriptor reports kDropped for each when no received one is left.
  size_t fds_dropped_ = 0;
};

}  // namespace shmlease::detail
