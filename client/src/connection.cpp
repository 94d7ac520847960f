#include "connection.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "shmlease/codec.hpp"

namespace shmlease::detail {
namespace {

constexpr size_t kMaxFdsPerRead = 32;

// Counts forks in this process's lineage: a child sees a higher value than its parent had when it
// made its connections. Cheaper than getpid() (a syscall) on every call.
std::atomic<uint64_t> g_fork_generation{0};
void OnFork() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }
const bool kForkHandlerInstalled = [] {
  ::pthread_atfork(nullptr, nullptr, OnFork);
  return true;
}();

std::string SelfName() {
  std::ifstream comm("/proc/self/comm");
  std::string name;
  std::getline(comm, name);
  return name;
}

}  // namespace

Mapping::~Mapping() {
  if (address != nullptr && address != MAP_FAILED) ::munmap(address, length);
}

bool Populate(const Mapping& mapping, uint64_t page_size, std::string& why) noexcept {
#ifndef MADV_POPULATE_READ
  constexpr int MADV_POPULATE_READ = 22;  // Linux 5.14 uapi; older headers lack them
  constexpr int MADV_POPULATE_WRITE = 23;
#endif
  if (mapping.length == 0) return true;
  const int advice = mapping.writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
  for (;;) {
    if (::madvise(mapping.address, mapping.length, advice) == 0) return true;
    if (errno == EINTR || errno == EAGAIN) continue;
    if (errno != EINVAL) {
      why = std::string("madvise(MADV_POPULATE_") + (mapping.writable ? "WRITE" : "READ") +
            "): " + std::strerror(errno);
      return false;
    }
    break;  // a kernel before 5.14: touch the pages instead
  }
  uint64_t step = page_size != 0 ? page_size : static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  auto* bytes = static_cast<unsigned char*>(mapping.address);
  for (uint64_t at = 0; at < mapping.length; at += step) {
    if (mapping.writable) {
      // A write fault that changes nothing, even if another process writes the byte meanwhile.
      __atomic_fetch_add(bytes + at, static_cast<unsigned char>(0), __ATOMIC_RELAXED);
    } else {
      (void)*static_cast<volatile unsigned char*>(bytes + at);
    }
  }
  return true;
}

std::shared_ptr<Connection> Connection::Open(const std::string& socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    throw Error(Errc::kInvalidArgument, "socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw Error(Errc::kInternal, std::string("cannot create a socket: ") + std::strerror(errno));
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EACCES || err == EPERM) {
      throw Error(Errc::kPermissionDenied, "cannot connect to shmleased at " + socket_path + ": " +
                                               std::strerror(err));
    }
    throw Error(Errc::kDaemonUnavailable, "shmleased is not running: nobody answers on " +
                                              socket_path + " (" + std::strerror(err) + ")");
  }
  std::shared_ptr<Connection> conn(new Connection(fd, socket_path));
  Response hello = conn->Call(proto::Hello{proto::kVersion, SelfName()});
  if (auto* err = std::get_if<proto::ErrorReply>(&hello.reply)) {
    throw Error(err->code, err->message);
  }
  auto* ok = std::get_if<proto::HelloOk>(&hello.reply);
  if (ok == nullptr) throw Error(Errc::kBadMessage, "shmleased answered hello with something else");
  if (ok->version != proto::kVersion) {
    throw Error(Errc::kVersionMismatch, "shmleased speaks protocol version " +
                                            std::to_string(ok->version) + ", this client " +
                                            std::to_string(proto::kVersion));
  }
  conn->server_pid_ = ok->server_pid;
  return conn;
}

Connection::Connection(int fd, std::string socket_path)
    : fd_(fd),
      socket_path_(std::move(socket_path)),
      fork_generation_(g_fork_generation.load(std::memory_order_relaxed)) {
  (void)kForkHandlerInstalled;
}

bool Connection::OwnedByThisProcess() const noexcept {
  return g_fork_generation.load(std::memory_order_relaxed) == fork_generation_;
}

Connection::~Connection() {
  ::close(fd_);
  for (int fd : fds_) ::close(fd);
}

bool Connection::SendFrame(const std::vector<std::byte>& frame) {
  std::lock_guard<std::mutex> lock(send_mu_);
  size_t sent = 0;
  while (sent < frame.size()) {
    ssize_t n = ::send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    sent += static_cast<size_t>(n);
  }
  return true;
}

Response Connection::Call(const proto::Request& request) {
  uint32_t id = next_request_.fetch_add(1);
  if (id == 0) id = next_request_.fetch_add(1);  // 0 is for unsolicited messages
  std::vector<std::byte> frame;
  proto::EncodeRequest(request, id, 0, frame);

  if (!OwnedByThisProcess()) {
    throw Error(Errc::kConnectionLost,
                "this connection was made by the parent process before fork(); connect again");
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (dead_) throw Error(dead_code_, dead_reason_);
  waiting_[id] = true;
  lock.unlock();
  if (!SendFrame(frame)) {
    lock.lock();
    waiting_.erase(id);
    // The daemon may have said why before it closed (e.g. its connection limit): read that.
    if (!reading_ && !dead_) {
      reading_ = true;
      ReadAndDispatch(lock);
      reading_ = false;
      cv_.notify_all();
    }
    MarkDead("connection to shmleased at " + socket_path_ + " lost while sending");
    throw Error(dead_code_, dead_reason_);
  }
  lock.lock();
  for (;;) {
    auto it = replies_.find(id);
    if (it != replies_.end()) {
      Response response = std::move(*it->second);
      replies_.erase(it);
      waiting_.erase(id);
      return response;
    }
    if (dead_) {
      waiting_.erase(id);
      throw Error(dead_code_, dead_reason_);
    }
    if (!reading_) {
      reading_ = true;
      bool ok = ReadAndDispatch(lock);
      reading_ = false;
      if (!ok && !dead_) MarkDead("shmleased at " + socket_path_ + " closed the connection");
      cv_.notify_all();
    } else {
      cv_.wait(lock);
    }
  }
}

bool Connection::SendOneWay(const proto::Request& request) noexcept {
  if (dead_ || !OwnedByThisProcess()) return false;
  try {
    std::vector<std::byte> frame;
    uint32_t id = next_request_.fetch_add(1);
    if (id == 0) id = next_request_.fetch_add(1);
    proto::EncodeRequest(request, id, proto::kFlagNoReply, frame);
    return SendFrame(frame);
  } catch (...) {
    return false;
  }
}

void Connection::Shutdown() noexcept {
  if (!OwnedByThisProcess()) return;
  ::shutdown(fd_, SHUT_RDWR);
  std::lock_guard<std::mutex> lock(mu_);
  MarkDead("connection to shmleased at " + socket_path_ + " was closed by this client");
  cv_.notify_all();
}

void Connection::MarkDead(const std::string& why, Errc code) {
  if (dead_) return;
  dead_reason_ = why;
  dead_code_ = code;
  dead_ = true;
}

bool Connection::ReadAndDispatch(std::unique_lock<std::mutex>& lock) {
  if (in_.size() - filled_ < 4096) in_.resize(std::max<size_t>(in_.size() * 2, 64 * 1024));
  lock.unlock();
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
  lock.lock();
  if (n > 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds_.push_back(fd);
      }
    }
  }
  if (n <= 0) return false;
  filled_ += static_cast<size_t>(n);

  size_t start = 0;
  for (;;) {
    auto input = std::span<const std::byte>(in_.data() + start, filled_ - start);
    proto::FrameResult frame = proto::DecodeFrame(input, proto::kClientMaxReply);
    if (frame.status == proto::DecodeStatus::kNeedMore) break;
    if (frame.status == proto::DecodeStatus::kBad) {
      MarkDead("shmleased sent a malformed reply: " + frame.reason);
      ::shutdown(fd_, SHUT_RDWR);
      return false;
    }
    proto::Reply reply;
    Errc error;
    std::string reason;
    if (!proto::DecodeReply(frame.header, frame.body, reply, error, reason)) {
      MarkDead("shmleased sent a reply this client cannot read: " + reason);
      ::shutdown(fd_, SHUT_RDWR);
      return false;
    }
    Dispatch(frame.header, std::move(reply));
    start += frame.consumed;
  }
  if (start > 0) {
    std::memmove(in_.data(), in_.data() + start, filled_ - start);
    filled_ -= start;
  }
  return true;
}

void Connection::Dispatch(const proto::Header& header, proto::Reply&& reply) {
  auto response = std::make_unique<Response>();
  if (auto* ok = std::get_if<proto::AcquireOk>(&reply)) {
    // Mappings are made here, in wire order, so a reply that reuses a mapping always finds the
    // one its predecessor carried, whichever thread waits for which.
    bool writable = ok->mode == proto::LeaseMode::kWrite;
    auto key = std::make_pair(ok->info.id, writable);
    if ((header.flags & proto::kFlagFd) != 0) {
      if (fds_.empty()) {
        response->map_error = Errc::kMapFailed;
        response->map_message = "shmleased announced a descriptor that did not arrive";
      } else {
        int fd = fds_.front();
        fds_.pop_front();
        // Whole pages of the segment's page size: a huge-page mapping can only be unmapped whole
        // (munmap of a length that ends inside a huge page fails with EINVAL).
        size_t length = static_cast<size_t>(ReservedBytes(ok->info));
        void* address = ::mmap(nullptr, length, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                               MAP_SHARED, fd, 0);
        int err = errno;
        ::close(fd);
        if (address == MAP_FAILED) {
          response->map_error = Errc::kMapFailed;
          response->map_message = "cannot map segment '" + ok->info.name + "': " + std::strerror(err);
        } else {
          auto mapping = std::make_shared<Mapping>(address, length, writable);
          mappings_[key] = mapping;
          response->mapping = std::move(mapping);
        }
      }
    } else {
      auto it = mappings_.find(key);
      if (it != mappings_.end()) {
        response->mapping = it->second;
      } else {
        response->map_error = Errc::kMapFailed;
        response->map_message = "no mapping of segment '" + ok->info.name + "' in this process";
      }
    }
  } else if (auto* gone = std::get_if<proto::SegmentGone>(&reply)) {
    mappings_.erase({gone->segment_id, false});
    mappings_.erase({gone->segment_id, true});
    return;
  } else if (auto* err = std::get_if<proto::ErrorReply>(&reply); err && header.request_id == 0) {
    // An error to no request: the daemon refused the connection itself (e.g. connection limit).
    MarkDead(err->message, err->code);
    return;
  }
  if (waiting_.count(header.request_id) == 0) return;  // answer to a one-way request: dropped
  response->reply = std::move(reply);
  replies_[header.request_id] = std::move(response);
}

}  // namespace shmlease::detail
