#include "connection.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>

#include "shmlease/codec.hpp"
#include "wire_types.hpp"

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

// The name of group `gid` (getgrgid_r), or its number when it has none.
std::string GroupName(gid_t gid) {
  std::vector<char> buf(16384);
  group entry{};
  group* found = nullptr;
  if (::getgrgid_r(gid, &entry, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->gr_name;
  }
  return std::to_string(gid);
}

std::string UserName(uid_t uid) {
  std::vector<char> buf(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &entry, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return std::to_string(uid);
}

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

namespace {

// "srw-rw---- (0660), owner root, group shmlease": who may connect to a socket, for messages.
std::string DescribeAccess(const struct stat& st) {
  char bits[11] = "----------";
  bits[0] = S_ISSOCK(st.st_mode) ? 's' : S_ISDIR(st.st_mode) ? 'd' : '-';
  const char kRwx[] = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) {
    if ((st.st_mode & (0400 >> i)) != 0) bits[i + 1] = kRwx[i];
  }
  char octal[8];
  std::snprintf(octal, sizeof(octal), "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return std::string(bits) + " (" + octal + "), owner " + UserName(st.st_uid) + ", group " +
         GroupName(st.st_gid);
}

// Why connect(2) to `socket_path` failed with `err`, in words a user can act on. Looks at what is
// at the path: nothing, something that is not a socket, or a socket nobody listens on.
Error ConnectError(const std::string& socket_path, int err) {
  struct stat st {};
  bool found = ::stat(socket_path.c_str(), &st) == 0;
  int stat_err = found ? 0 : errno;
  if (err == EACCES || err == EPERM) {
    if (!found) {
      return Error(Errc::kPermissionDenied,
                   "cannot connect to shmleased at " + socket_path +
                       ": a directory on the way to it refuses access (" + std::strerror(stat_err) +
                       ")");
    }
    std::string group = GroupName(st.st_gid);
    std::string text = "cannot connect to shmleased at " + socket_path + ": permission denied " +
                       "(the socket is " + DescribeAccess(st) + "; uid " +
                       std::to_string(::geteuid()) + " may not write to it)";
    if ((st.st_mode & 0020) != 0) {
      text += ". Members of group '" + group + "' may connect: join it with `sudo usermod -aG " +
              group + " $USER`, then log in again";
    } else {
      text += ". Its group '" + group + "' may not write to it either: ask its administrator";
    }
    return Error(Errc::kPermissionDenied, text);
  }
  if (!found && (stat_err == ENOENT || stat_err == ENOTDIR)) {
    return Error(Errc::kDaemonUnavailable,
                 "no socket at " + socket_path +
                     " (shmleased is not running): start shmleased (./scripts/dev run, or "
                     "systemctl start shmleased.socket) or set SHMLEASE_SOCKET");
  }
  if (found && S_ISDIR(st.st_mode)) {
    return Error(Errc::kDaemonUnavailable, socket_path + " is a directory, not a socket");
  }
  if (found && !S_ISSOCK(st.st_mode)) {
    return Error(Errc::kDaemonUnavailable, socket_path + " is a regular file, not a socket");
  }
  if (found && err == ECONNREFUSED) {
    return Error(Errc::kDaemonUnavailable,
                 "nothing listens on the socket " + socket_path +
                     ": shmleased is not running (a stale socket of a daemon that died?)");
  }
  return Error(Errc::kDaemonUnavailable, "cannot connect to shmleased at " + socket_path + ": " +
                                             std::strerror(err));
}

// Connects a new socket to the daemon. Throws Error (kDaemonUnavailable when nobody answers).
int ConnectSocket(const std::string& socket_path) {
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
    throw ConnectError(socket_path, err);
  }
  return fd;
}

bool WriteAll(int fd, const std::vector<std::byte>& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    sent += static_cast<size_t>(n);
  }
  return true;
}

// Reads from a blocking socket until the reply to `request_id` arrives; keeps what follows it in
// `buf`. Throws Error. Used only while greeting a new socket, before anything else reads it.
proto::Reply ReadReplyTo(int fd, uint32_t request_id, std::vector<std::byte>& buf,
                         const std::string& socket_path) {
  for (;;) {
    proto::FrameResult frame = proto::DecodeFrame(buf, proto::kClientMaxReply);
    if (frame.status == proto::DecodeStatus::kBad) {
      throw Error(Errc::kBadMessage, "shmleased sent a malformed reply: " + frame.reason);
    }
    if (frame.status == proto::DecodeStatus::kOk) {
      proto::Reply reply;
      Errc error;
      std::string reason;
      if (!proto::DecodeReply(frame.header, frame.body, reply, error, reason)) {
        throw Error(error, "shmleased sent a reply this client cannot read: " + reason);
      }
      buf.erase(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(frame.consumed));
      if (frame.header.request_id == request_id) return reply;
      if (auto* err = std::get_if<proto::ErrorReply>(&reply); err && frame.header.request_id == 0) {
        throw Error(err->code, err->message);  // the daemon refused the connection
      }
      continue;  // nothing else is expected before our replies; skip it
    }
    std::byte chunk[4096];
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw Error(Errc::kConnectionLost,
                  "shmleased at " + socket_path + " closed the connection during the greeting" +
                      (n < 0 ? std::string(" (") + std::strerror(errno) + ")" : ""));
    }
    buf.insert(buf.end(), chunk, chunk + n);
  }
}

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
  std::lock_guard<std::mutex> lock(conn->mu_);
  conn->established_ = true;
  return conn;
}

Connection::Connection(int fd, std::string socket_path)
    : fd_(fd),
      socket_path_(std::move(socket_path)),
      fork_generation_(g_fork_generation.load(std::memory_order_relaxed)) {
  (void)kForkHandlerInstalled;
  reconnect_timeout_ms_.store(ReconnectTimeoutFromEnv().count());
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
  return WriteAll(fd_, frame);
}

Response Connection::Call(const proto::Request& request, CallControl* control) {
  if (!OwnedByThisProcess()) {
    throw Error(Errc::kConnectionLost,
                "this connection was made by the parent process before fork(); connect again");
  }
  for (int attempt = 0;; ++attempt) {
    uint64_t attempts_seen = reconnect_attempts_.load();
    bool tried = false;
    if (!dead_) {
      if (std::optional<Response> response = CallOnce(request, control)) {
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
      std::lock_guard<std::mutex> lock(mu_);
      if (dead_ && !CanReconnect()) throw Error(dead_code_, dead_reason_);
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

std::optional<Response> Connection::CallOnce(const proto::Request& request,
                                             CallControl* control) {
  uint32_t id = next_request_.fetch_add(1);
  if (id == 0) id = next_request_.fetch_add(1);  // 0 is for unsolicited messages
  std::vector<std::byte> frame;
  proto::EncodeRequest(request, id, 0, frame);

  std::unique_lock<std::mutex> lock(mu_);
  if (dead_) return std::nullopt;
  uint64_t generation = generation_;
  waiting_[id] = true;
  lock.unlock();
  if (!SendFrame(frame)) {
    lock.lock();
    waiting_.erase(id);
    if (generation_ != generation) return std::nullopt;  // sent on a socket replaced meanwhile
    // The daemon may have said why before it closed (e.g. its connection limit): read that.
    if (!reading_ && !dead_) {
      reading_ = true;
      ReadAndDispatch(lock);
      reading_ = false;
      cv_.notify_all();
    }
    MarkDead("connection to shmleased at " + socket_path_ + " lost while sending",
             Errc::kConnectionLost, /*reconnectable=*/true);
    return std::nullopt;
  }
  // Without an interrupted() callback (the fast path) the wait blocks in recvmsg or on cv_ with
  // no timeout and no extra syscall; with one, it wakes every kInterruptPoll to poll it.
  const bool interruptible = control != nullptr && control->interrupted != nullptr &&
                             *control->interrupted;
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
        uint32_t cancel_id = next_request_.fetch_add(1);
        if (cancel_id == 0) cancel_id = next_request_.fetch_add(1);
        proto::EncodeRequest(proto::Cancel{id}, cancel_id, proto::kFlagNoReply, cancel);
        SendFrame(cancel);  // if it fails, the broken connection ends the wait below
      }
      lock.lock();
      // The reply may have come meanwhile; after a Cancel the wait goes on without polling.
      if (stop) continue;
      it = replies_.find(id);
      if (it != replies_.end() || dead_ || generation_ != generation) continue;
    }
    if (!reading_) {
      reading_ = true;
      bool ok = ReadAndDispatch(lock, interruptible && !control->cancelled
                                          ? static_cast<int>(kInterruptPoll.count())
                                          : -1);
      reading_ = false;
      if (!ok && !dead_) {
        MarkDead("shmleased at " + socket_path_ + " closed the connection",
                 Errc::kConnectionLost, /*reconnectable=*/true);
      }
      cv_.notify_all();
    } else if (interruptible && !control->cancelled) {
      cv_.wait_for(lock, kInterruptPoll);
    } else {
      cv_.wait(lock);
    }
  }
}

bool Connection::CanReconnect() const {
  return established_ && reconnectable_ && !closed_by_user_ && OwnedByThisProcess() &&
         reconnect_timeout_ms_.load() > 0;
}

void Connection::Reconnect(uint64_t attempts_seen) {
  std::unique_lock<std::mutex> reconnect_lock(reconnect_mu_);
  Snapshot snapshot;
  uint64_t generation;
  std::string why_lost;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!dead_) return;  // another thread re-established it while this one waited
    if (reconnect_attempts_.load() != attempts_seen) {
      // Another thread tried while this one waited, and failed: report that, do not wait again.
      throw Error(last_reconnect_code_, last_reconnect_error_);
    }
    if (!CanReconnect()) throw Error(dead_code_, dead_reason_);
    // Nobody may read the old socket any more: wake a reader still blocked on it.
    ::shutdown(fd_, SHUT_RDWR);
    cv_.wait(lock, [&] { return !reading_; });
    reconnecting_ = true;
    generation = generation_;
    why_lost = dead_reason_;
    for (const auto& [handle, lease] : leases_) snapshot.leases.emplace_back(handle, lease);
    for (const auto& [key, mapping] : mappings_) {
      snapshot.mappings.push_back(proto::ReclaimMapping{mapping->segment_id,
                                                        mapping->created_unix_ns,
                                                        static_cast<uint8_t>(key.second ? 1 : 0)});
    }
  }
  reconnect_attempts_.fetch_add(1);

  auto deadline = std::chrono::steady_clock::now() + reconnect_timeout();
  auto backoff = std::chrono::milliseconds(10);
  int fd = -1;
  Handshake greeting;
  Errc last_code = Errc::kDaemonUnavailable;
  std::string last_error;
  for (;;) {
    if (closed_by_user_) {
      last_code = Errc::kConnectionLost;
      last_error = "the client was closed";
      break;
    }
    try {
      fd = ConnectSocket(socket_path_);
      greeting = Greet(fd, snapshot);
      break;
    } catch (const Error& e) {
      if (fd >= 0) ::close(fd);
      fd = -1;
      last_code = e.errc();
      last_error = e.what();
      // A daemon that refuses us for good (another protocol version, permissions) stays so.
      if (last_code == Errc::kVersionMismatch || last_code == Errc::kPermissionDenied) break;
    }
    if (std::chrono::steady_clock::now() + backoff > deadline) break;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
  }

  if (fd < 0) {
    std::lock_guard<std::mutex> lock(mu_);
    reconnecting_ = false;
    // The daemon counts none of them now, and a later reconnect does not bring them back: a
    // lease is never reported held (Lease::held()) while nobody holds it for this process.
    for (const auto& [handle, lease] : leases_) lost_.insert(handle);
    leases_.clear();
    // Still kConnectionLost (the contract of a lost connection), with the reason; a daemon that
    // answers but refuses (version, permission) gives that code.
    last_reconnect_code_ = last_code == Errc::kVersionMismatch || last_code == Errc::kPermissionDenied
                               ? last_code
                               : Errc::kConnectionLost;
    last_reconnect_error_ = why_lost + "; reconnecting failed within " +
                            std::to_string(reconnect_timeout().count()) + " ms: " + last_error;
    throw Error(last_reconnect_code_, last_reconnect_error_);
  }

  // Install the new socket. Releases of leases made while reconnecting go out on it now.
  std::vector<std::byte> releases;
  {
    std::lock_guard<std::mutex> send_lock(send_mu_);
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_by_user_) {  // Close() while this thread was greeting: it wins
      ::close(fd);
      reconnecting_ = false;
      throw Error(Errc::kConnectionLost, "the client was closed");
    }
    ::close(fd_);
    fd_ = fd;
    for (int passed : fds_) ::close(passed);
    fds_.clear();
    fds_dropped_ = 0;
    dropped_keys_.clear();
    filled_ = 0;
    in_.assign(greeting.leftover.begin(), greeting.leftover.end());
    filled_ = in_.size();
    server_pid_ = greeting.server_pid;

    std::set<std::pair<uint64_t, bool>> accepted;
    for (const auto& m : greeting.mappings) accepted.insert({m.segment_id, m.writable != 0});
    for (auto it = mappings_.begin(); it != mappings_.end();) {
      it = accepted.count(it->first) ? std::next(it) : mappings_.erase(it);
    }
    for (size_t i = 0; i < snapshot.leases.size() && i < greeting.leases.size(); ++i) {
      uint64_t handle = snapshot.leases[i].first;
      const proto::ReclaimResult& result = greeting.leases[i];
      auto it = leases_.find(handle);
      if (result.status == Errc::kOk) {
        if (it != leases_.end()) {
          it->second.id = result.new_lease_id;
        } else {
          proto::EncodeRequest(proto::Release{result.new_lease_id}, 0, proto::kFlagNoReply,
                               releases);
        }
      } else if (it != leases_.end()) {
        leases_.erase(it);
        lost_.insert(handle);
      }
    }
    if (!releases.empty()) WriteAll(fd_, releases);  // a failure shows on the next read

    dead_ = false;
    reconnectable_ = false;
    dead_reason_.clear();
    dead_code_ = Errc::kConnectionLost;
    reconnecting_ = false;
    generation_ = generation + 1;
    reconnects_.fetch_add(1);
    DispatchBuffered();
    cv_.notify_all();
  }
}

Connection::Handshake Connection::Greet(int fd, const Snapshot& snapshot) {
  // A daemon that accepts but never answers must not hold the reconnect forever.
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  Handshake out;
  std::vector<std::byte> buf;
  uint32_t id = 1;
  std::vector<std::byte> frame;
  proto::EncodeRequest(proto::Hello{proto::kVersion, SelfName()}, id, 0, frame);
  if (!WriteAll(fd, frame)) {
    throw Error(Errc::kConnectionLost, std::string("cannot send hello: ") + std::strerror(errno));
  }
  proto::Reply reply = ReadReplyTo(fd, id, buf, socket_path_);
  if (auto* err = std::get_if<proto::ErrorReply>(&reply)) throw Error(err->code, err->message);
  auto* hello = std::get_if<proto::HelloOk>(&reply);
  if (hello == nullptr) throw Error(Errc::kBadMessage, "shmleased answered hello with something else");
  if (hello->version != proto::kVersion) {
    throw Error(Errc::kVersionMismatch, "shmleased now speaks protocol version " +
                                            std::to_string(hello->version));
  }
  out.server_pid = hello->server_pid;

  // Reclaim in messages that fit the daemon's limit on a request body.
  size_t budget = hello->max_message > 64 ? hello->max_message - 8 : 56;
  size_t lease_at = 0, mapping_at = 0;
  while (lease_at < snapshot.leases.size() || mapping_at < snapshot.mappings.size()) {
    proto::Reclaim reclaim;
    size_t used = 0;
    while (lease_at < snapshot.leases.size() && used + proto::kReclaimLeaseBytes <= budget) {
      const LiveLease& lease = snapshot.leases[lease_at++].second;
      reclaim.leases.push_back(proto::ReclaimLease{lease.id, lease.segment_id,
                                                   lease.created_unix_ns, lease.mode,
                                                   static_cast<uint8_t>(lease.exclusive)});
      used += proto::kReclaimLeaseBytes;
    }
    while (mapping_at < snapshot.mappings.size() && used + proto::kReclaimMappingBytes <= budget) {
      reclaim.mappings.push_back(snapshot.mappings[mapping_at++]);
      used += proto::kReclaimMappingBytes;
    }
    frame.clear();
    proto::EncodeRequest(reclaim, ++id, 0, frame);
    if (!WriteAll(fd, frame)) {
      throw Error(Errc::kConnectionLost, std::string("cannot send reclaim: ") + std::strerror(errno));
    }
    reply = ReadReplyTo(fd, id, buf, socket_path_);
    if (auto* err = std::get_if<proto::ErrorReply>(&reply)) throw Error(err->code, err->message);
    auto* ok = std::get_if<proto::ReclaimOk>(&reply);
    if (ok == nullptr || ok->leases.size() != reclaim.leases.size()) {
      throw Error(Errc::kBadMessage, "shmleased answered reclaim with something else");
    }
    out.leases.insert(out.leases.end(), ok->leases.begin(), ok->leases.end());
    out.mappings.insert(out.mappings.end(), ok->mappings.begin(), ok->mappings.end());
  }
  timeval none{0, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
  out.leftover = std::move(buf);
  return out;
}

void Connection::ReleaseLease(uint64_t handle) noexcept {
  if (!OwnedByThisProcess()) return;
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    lost_.erase(handle);
    auto it = leases_.find(handle);
    if (it == leases_.end()) return;
    id = it->second.id;
    leases_.erase(it);
    // While reconnecting, the new socket releases it once it is reclaimed (see Reconnect).
    if (reconnecting_ || dead_) return;
  }
  SendOneWay(proto::Release{id});
}

uint64_t Connection::LeaseId(uint64_t handle) const noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(handle);
  return it == leases_.end() ? 0 : it->second.id;
}

bool Connection::LeaseLost(uint64_t handle) const noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  if (lost_.count(handle) != 0) return true;
  if (leases_.count(handle) == 0) return false;  // released (or never granted): not lost
  // A broken connection loses the lease for good unless a call will reconnect and reclaim it.
  if (dead_) return !reconnecting_ && !CanReconnect();
  // Not noticed yet (no call since): a peer that hung up is seen without reading. With
  // reconnecting on, the next call reclaims the lease, so it still counts as held.
  if (reconnect_timeout_ms_.load() > 0 || !OwnedByThisProcess()) return false;
  pollfd p{fd_, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

bool Connection::LeaseHeld(uint64_t handle) const noexcept {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (leases_.count(handle) == 0) return false;
  }
  return !LeaseLost(handle);
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
  closed_by_user_ = true;
  std::lock_guard<std::mutex> lock(mu_);
  ::shutdown(fd_, SHUT_RDWR);
  MarkDead("connection to shmleased at " + socket_path_ + " was closed by this client");
  cv_.notify_all();
}

void Connection::MarkDead(const std::string& why, Errc code, bool reconnectable) {
  if (dead_) return;
  dead_reason_ = why;
  dead_code_ = code;
  reconnectable_ = reconnectable;
  dead_ = true;
}

bool Connection::ReadAndDispatch(std::unique_lock<std::mutex>& lock, int poll_ms) {
  if (in_.size() - filled_ < 4096) in_.resize(std::max<size_t>(in_.size() * 2, 64 * 1024));
  lock.unlock();
  if (poll_ms >= 0) {
    pollfd p{fd_, POLLIN, 0};
    int ready = ::poll(&p, 1, poll_ms);
    if (ready == 0 || (ready < 0 && errno == EINTR)) {
      lock.lock();
      return true;  // nothing yet: the caller polls its callback and comes back
    }
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
  lock.lock();
  if (n > 0) {
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
  }
  if (n <= 0) return false;
  filled_ += static_cast<size_t>(n);
  return DispatchBuffered();
}

bool Connection::DispatchBuffered() {
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
      if (fds_.empty() && fds_dropped_ > 0) {
        --fds_dropped_;
        dropped_keys_.insert(key);
        rlimit limit{};
        ::getrlimit(RLIMIT_NOFILE, &limit);
        response->map_error = Errc::kMapFailed;
        response->map_message = "cannot receive the descriptor of segment '" + ok->info.name +
                                "': this process has reached its limit of open files "
                                "(RLIMIT_NOFILE " + std::to_string(limit.rlim_cur) +
                                "); close some or raise the limit (ulimit -n)";
      } else if (fds_.empty()) {
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
          auto mapping = std::make_shared<Mapping>(address, length, writable, ok->info.id,
                                                   ok->info.created_unix_ns);
          mappings_[key] = mapping;
          response->mapping = std::move(mapping);
        }
      }
    } else {
      auto it = mappings_.find(key);
      if (it != mappings_.end()) {
        response->mapping = it->second;
      } else if (dropped_keys_.count(key) != 0) {
        response->map_error = Errc::kMapFailed;
        response->map_message = "the descriptor of segment '" + ok->info.name +
                                "' was dropped earlier on this connection (open-file limit) and "
                                "shmleased passes it only once per connection: connect anew";
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
  if (auto* ok = std::get_if<proto::AcquireOk>(&reply); ok && response->mapping) {
    // Tracked from the moment it is granted, so a reconnect from here on reclaims it.
    response->lease_handle = next_handle_++;
    leases_.emplace(response->lease_handle,
                    LiveLease{ok->lease_id, ok->info.id, ok->info.created_unix_ns, ok->mode,
                              ok->exclusive != 0});
  }
  response->reply = std::move(reply);
  replies_[header.request_id] = std::move(response);
}

}  // namespace shmlease::detail
