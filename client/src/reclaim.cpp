#include "reclaim.hpp"

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include "daemon_socket.hpp"
#include "shmlease/codec.hpp"
#include "shmlease/fd_io.hpp"

namespace shmlease::detail {
namespace {

std::string SelfName() {
  std::ifstream comm("/proc/self/comm");
  std::string name;
  std::getline(comm, name);
  return name;
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

// Sends `request` on the blocking socket `fd` and reads its reply (an ErrorReply is thrown).
proto::Reply Exchange(int fd, const proto::Request& request, uint32_t id,
                      std::vector<std::byte>& buf, const std::string& socket_path,
                      const char* what) {
  std::vector<std::byte> frame;
  proto::EncodeRequest(request, id, 0, frame);
  if (!WriteAll(fd, frame.data(), frame.size())) {
    throw Error(Errc::kConnectionLost,
                std::string("cannot send ") + what + ": " + std::strerror(errno));
  }
  proto::Reply reply = ReadReplyTo(fd, id, buf, socket_path);
  if (auto* err = std::get_if<proto::ErrorReply>(&reply)) throw Error(err->code, err->message);
  return reply;
}

// Hello and Reclaim on the fresh socket `fd`, blocking. Throws Error.
void Greet(int fd, const std::string& socket_path, const LeaseTable::Snapshot& leases,
           const std::vector<proto::ReclaimMapping>& mappings, Handshake& out) {
  // A daemon that accepts but never answers must not hold the reconnect forever.
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::vector<std::byte> buf;
  uint32_t id = 1;
  proto::Reply reply = Exchange(fd, MakeHello(), id, buf, socket_path, "hello");
  auto* hello = std::get_if<proto::HelloOk>(&reply);
  if (hello == nullptr) {
    throw Error(Errc::kBadMessage, "shmleased answered hello with something else");
  }
  if (hello->version != proto::kVersion) {
    throw Error(Errc::kVersionMismatch,
                "shmleased now speaks protocol version " + std::to_string(hello->version));
  }
  out.server_pid = hello->server_pid;

  // Reclaim in messages that fit the daemon's limit on a request body.
  size_t budget = hello->max_message > 64 ? hello->max_message - 8 : 56;
  size_t lease_at = 0, mapping_at = 0;
  while (lease_at < leases.size() || mapping_at < mappings.size()) {
    proto::Reclaim reclaim;
    size_t used = 0;
    while (lease_at < leases.size() && used + proto::kReclaimLeaseBytes <= budget) {
      const LiveLease& lease = leases[lease_at++].second;
      reclaim.leases.push_back(proto::ReclaimLease{lease.id, lease.segment_id,
                                                   lease.created_unix_ns, lease.mode,
                                                   static_cast<uint8_t>(lease.exclusive)});
      used += proto::kReclaimLeaseBytes;
    }
    while (mapping_at < mappings.size() && used + proto::kReclaimMappingBytes <= budget) {
      reclaim.mappings.push_back(mappings[mapping_at++]);
      used += proto::kReclaimMappingBytes;
    }
    reply = Exchange(fd, reclaim, ++id, buf, socket_path, "reclaim");
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
}

}  // namespace

proto::Hello MakeHello() { return proto::Hello{proto::kVersion, SelfName()}; }

uint64_t LeaseTable::Add(const proto::AcquireOk& ok) {
  uint64_t handle = next_handle_++;
  leases_.emplace(handle, LiveLease{ok.lease_id, ok.info.id, ok.info.created_unix_ns, ok.mode,
                                    ok.exclusive != 0});
  return handle;
}

std::optional<uint64_t> LeaseTable::Remove(uint64_t handle) {
  lost_.erase(handle);
  auto it = leases_.find(handle);
  if (it == leases_.end()) return std::nullopt;
  uint64_t id = it->second.id;
  leases_.erase(it);
  return id;
}

uint64_t LeaseTable::Id(uint64_t handle) const {
  auto it = leases_.find(handle);
  return it == leases_.end() ? 0 : it->second.id;
}

void LeaseTable::LoseAll() {
  for (const auto& [handle, lease] : leases_) lost_.insert(handle);
  leases_.clear();
}

void LeaseTable::Apply(const Snapshot& taken, const std::vector<proto::ReclaimResult>& results,
                       std::vector<std::byte>& releases) {
  for (size_t i = 0; i < taken.size() && i < results.size(); ++i) {
    uint64_t handle = taken[i].first;
    const proto::ReclaimResult& result = results[i];
    auto it = leases_.find(handle);
    if (result.status == Errc::kOk) {
      if (it != leases_.end()) {
        it->second.id = result.new_lease_id;
      } else {
        proto::EncodeRequest(proto::Release{result.new_lease_id}, 0, proto::kFlagNoReply, releases);
      }
    } else if (it != leases_.end()) {
      leases_.erase(it);
      lost_.insert(handle);
    }
  }
}

Handshake ConnectAndReclaim(const std::string& socket_path, const LeaseTable::Snapshot& leases,
                            const std::vector<proto::ReclaimMapping>& mappings,
                            std::chrono::milliseconds timeout, const std::atomic<bool>& closed) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto backoff = std::chrono::milliseconds(10);
  Errc last_code = Errc::kDaemonUnavailable;
  std::string last_error;
  for (;;) {
    if (closed) {
      last_code = Errc::kConnectionLost;
      last_error = "the client was closed";
      break;
    }
    Handshake out;
    try {
      out.fd = ConnectSocket(socket_path);
      Greet(out.fd, socket_path, leases, mappings, out);
      return out;
    } catch (const Error& e) {
      if (out.fd >= 0) ::close(out.fd);
      last_code = e.errc();
      last_error = e.what();
      // A daemon that refuses us for good (another protocol version, permissions) stays so.
      if (last_code == Errc::kVersionMismatch || last_code == Errc::kPermissionDenied) break;
    }
    if (std::chrono::steady_clock::now() + backoff > deadline) break;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
  }
  throw Error(last_code, last_error);
}

}  // namespace shmlease::detail
