#include "connection.hpp"

#include <pthread.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <utility>
#include <vector>

#include "daemon_socket.hpp"
#include "shmlease/codec.hpp"

namespace shmlease::detail {
namespace {

// Counts forks in this process's lineage: a child sees a higher value than its parent had when it
// made its connections. Cheaper than getpid() (a syscall) on every call.
std::atomic<uint64_t> g_fork_generation{0};
void OnFork() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }
const bool kForkHandlerInstalled = [] {
  ::pthread_atfork(nullptr, nullptr, OnFork);
  return true;
}();

bool Retryable(const proto::Request& request) {
  if (auto* create = std::get_if<proto::Create>(&request)) {
    return (create->flags & proto::kCreateExistOk) != 0;
  }
  return std::holds_alternative<proto::Ping>(request) ||
         std::holds_alternative<proto::Stat>(request) ||
         std::holds_alternative<proto::List>(request) ||
         std::holds_alternative<proto::Acquire>(request);
}

std::chrono::milliseconds ReconnectTimeoutFromEnv() {
  const char* value = std::getenv("SHMLEASE_RECONNECT_TIMEOUT_MS");
  if (value == nullptr || *value == '\0') return kDefaultReconnectTimeout;
  char* end = nullptr;
  long long ms = std::strtoll(value, &end, 10);
  if (end == value || *end != '\0' || ms < 0) return kDefaultReconnectTimeout;
  return std::chrono::milliseconds(ms);
}

}  // namespace

std::shared_ptr<Connection> Connection::Open(const std::string& socket_path) {
  int fd = ConnectSocket(socket_path);
  std::shared_ptr<Connection> conn(new Connection(fd, socket_path));
  Response hello = conn->Call(MakeHello());
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
  std::unique_lock<std::mutex> lock = conn->mux_.Lock();
  conn->established_ = true;
  return conn;
}

Connection::Connection(int fd, std::string socket_path)
    : socket_path_(std::move(socket_path)),
      fork_generation_(g_fork_generation.load(std::memory_order_relaxed)),
      socket_(fd),
      mux_(socket_, *this, socket_path_) {
  (void)kForkHandlerInstalled;
  reconnect_timeout_ms_.store(ReconnectTimeoutFromEnv().count());
}

Connection::~Connection() = default;

bool Connection::OwnedByThisProcess() const noexcept {
  return g_fork_generation.load(std::memory_order_relaxed) == fork_generation_;
}

Response Connection::Call(const proto::Request& request, CallControl* control) {
  if (!OwnedByThisProcess()) {
    throw Error(Errc::kConnectionLost,
                "this connection was made by the parent process before fork(); connect again");
  }
  for (int attempt = 0;; ++attempt) {
    uint64_t attempts_seen = reconnect_attempts_.load();
    bool tried = false;
    if (!mux_.dead()) {
      if (std::optional<Response> response = mux_.Call(request, control)) {
        return std::move(*response);
      }
      tried = true;  // it may have reached the daemon
    }
    // A withdrawn request is not asked again: its wait ended with the connection, nothing of it
    // is left in the daemon (a daemon that lost the connection dropped its queue and leases).
    if (control != nullptr && control->cancelled) {
      throw Error(Errc::kCancelled, std::string("the ") + proto::TypeName(proto::TypeOf(request)) +
                                        " request was cancelled (and the connection was lost)");
    }
    {
      std::unique_lock<std::mutex> lock = mux_.Lock();
      if (mux_.dead() && !CanReconnect()) throw mux_.DeadError();
    }
    // A daemon that dies again at once must not keep a caller here forever.
    if (attempt >= 8) {
      throw Error(Errc::kConnectionLost, "the connection to shmleased at " + socket_path_ +
                                             " broke again after every reconnect");
    }
    Reconnect(attempts_seen);  // returns at once if another thread already did
    if (tried && !Retryable(request)) {
      throw Error(Errc::kConnectionLost,
                  std::string("the connection to shmleased was lost before it answered ") +
                      proto::TypeName(proto::TypeOf(request)) +
                      "; it was re-established, but the request was not repeated because it "
                      "may have taken effect (check, e.g. with stat, and retry)");
    }
  }
}

bool Connection::OnReply(const proto::Header& header, const proto::Reply& reply, Response& response,
                         bool awaited) {
  if (auto* ok = std::get_if<proto::AcquireOk>(&reply)) {
    // Mapped here, in wire order, so a reply that reuses a mapping always finds the one its
    // predecessor carried, whichever thread waits for which.
    MapOutcome mapped;
    if ((header.flags & proto::kFlagFd) != 0) {
      Descriptor passed = socket_.TakeDescriptor();
      mapped = mappings_.Map(*ok, &passed);
    } else {
      mapped = mappings_.Map(*ok, nullptr);
    }
    response.mapping = std::move(mapped.mapping);
    response.map_error = mapped.error;
    response.map_message = std::move(mapped.message);
    // Tracked from the moment it is granted, so a reconnect from here on reclaims it.
    if (awaited && response.mapping) response.lease_handle = leases_.Add(*ok);
    return true;
  }
  if (std::holds_alternative<proto::ChannelAttachOk>(reply) ||
      std::holds_alternative<proto::ChannelPartOk>(reply)) {
    // A channel part: the channel maps it itself (channel.cpp). Taken here, in wire order.
    if ((header.flags & proto::kFlagFd) != 0) {
      Descriptor passed = socket_.TakeDescriptor();
      if (passed.status == Descriptor::Status::kOk) {
        response.fd = OwnedFd(passed.fd);
      } else {
        response.map_error = Errc::kMapFailed;
        response.map_message = passed.status == Descriptor::Status::kDropped
                                   ? FramedSocket::DroppedReason()
                                   : "the daemon announced a descriptor that did not arrive";
      }
    }
    return true;
  }
  if (auto* gone = std::get_if<proto::SegmentGone>(&reply)) {
    mappings_.Forget(gone->segment_id);
    return false;
  }
  return true;
}

bool Connection::CanReconnect() const {
  return established_ && mux_.reconnectable() && !closed_by_user_ && OwnedByThisProcess() &&
         reconnect_timeout_ms_.load() > 0;
}

void Connection::Reconnect(uint64_t attempts_seen) {
  std::lock_guard<std::mutex> reconnect_lock(reconnect_mu_);
  LeaseTable::Snapshot leases;
  std::vector<proto::ReclaimMapping> mappings;
  std::string why_lost;
  {
    std::unique_lock<std::mutex> lock = mux_.Lock();
    if (!mux_.dead()) return;  // another thread re-established it while this one waited
    if (reconnect_attempts_.load() != attempts_seen) {
      // Another thread tried while this one waited, and failed: report that, do not wait again.
      throw Error(last_reconnect_code_, last_reconnect_error_);
    }
    if (!CanReconnect()) throw mux_.DeadError();
    // Nobody may read the old socket any more: wake a reader still blocked on it.
    mux_.StopReading(lock);
    reconnecting_ = true;
    why_lost = mux_.dead_reason();
    leases = leases_.Take();
    mappings = mappings_.Snapshot();
  }
  reconnect_attempts_.fetch_add(1);

  Handshake greeting;
  try {
    greeting =
        ConnectAndReclaim(socket_path_, leases, mappings, reconnect_timeout(), closed_by_user_);
  } catch (const Error& e) {
    std::unique_lock<std::mutex> lock = mux_.Lock();
    reconnecting_ = false;
    // The daemon counts none of them now, and a later reconnect does not bring them back: a
    // lease is never reported held (Lease::held()) while nobody holds it for this process.
    leases_.LoseAll();
    // Still kConnectionLost (the contract of a lost connection), with the reason; a daemon that
    // answers but refuses (version, permission) gives that code.
    last_reconnect_code_ = e.errc() == Errc::kVersionMismatch || e.errc() == Errc::kPermissionDenied
                               ? e.errc()
                               : Errc::kConnectionLost;
    last_reconnect_error_ = why_lost + "; reconnecting failed within " +
                            std::to_string(reconnect_timeout().count()) + " ms: " + e.what();
    throw Error(last_reconnect_code_, last_reconnect_error_);
  }

  // Install the new socket. Releases of leases made while reconnecting go out on it now.
  std::unique_lock<std::mutex> send_lock = socket_.HoldSends();
  std::unique_lock<std::mutex> lock = mux_.Lock();
  reconnecting_ = false;
  if (closed_by_user_) {  // Close() while this thread was greeting: it wins
    ::close(greeting.fd);
    throw Error(Errc::kConnectionLost, "the client was closed");
  }
  socket_.Replace(greeting.fd, greeting.leftover);
  server_pid_ = greeting.server_pid;
  mappings_.Retain(greeting.mappings);
  std::vector<std::byte> releases;
  leases_.Apply(leases, greeting.leases, releases);
  if (!releases.empty()) socket_.SendHeld(releases);  // a failure shows on the next read
  reconnects_.fetch_add(1);
  mux_.Revive();
}

void Connection::ReleaseLease(uint64_t handle) noexcept {
  if (!OwnedByThisProcess()) return;
  std::optional<uint64_t> id;
  {
    std::unique_lock<std::mutex> lock = mux_.Lock();
    id = leases_.Remove(handle);
    // While reconnecting, the new socket releases it once it is reclaimed (see Reconnect).
    if (!id || reconnecting_ || mux_.dead()) return;
  }
  mux_.SendOneWay(proto::Release{*id});
}

uint64_t Connection::LeaseId(uint64_t handle) const noexcept {
  std::unique_lock<std::mutex> lock = mux_.Lock();
  return leases_.Id(handle);
}

bool Connection::LeaseLost(uint64_t handle) const noexcept {
  std::unique_lock<std::mutex> lock = mux_.Lock();
  if (leases_.Lost(handle)) return true;
  if (!leases_.Live(handle)) return false;  // released (or never granted): not lost
  // A broken connection loses the lease for good unless a call will reconnect and reclaim it.
  if (mux_.dead()) return !reconnecting_ && !CanReconnect();
  // Not noticed yet (no call since): a peer that hung up is seen without reading. With
  // reconnecting on, the next call reclaims the lease, so it still counts as held.
  if (reconnect_timeout_ms_.load() > 0 || !OwnedByThisProcess()) return false;
  return socket_.PeerHungUp();
}

bool Connection::LeaseHeld(uint64_t handle) const noexcept {
  {
    std::unique_lock<std::mutex> lock = mux_.Lock();
    if (!leases_.Live(handle)) return false;
  }
  return !LeaseLost(handle);
}

bool Connection::SendOneWay(const proto::Request& request) noexcept {
  if (!OwnedByThisProcess()) return false;
  return mux_.SendOneWay(request);
}

void Connection::Shutdown() noexcept {
  if (!OwnedByThisProcess()) return;
  closed_by_user_ = true;
  mux_.Kill("connection to shmleased at " + socket_path_ + " was closed by this client");
}

}  // namespace shmlease::detail
