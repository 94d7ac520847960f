// Black-box fuzzing of a real shmleased over its socket. Eight attacker threads open connection
// after connection and send, for a bounded time, a mix of: random bytes; valid frames with
// mutated headers and bodies (bit flips, truncation, extension, swapped types, huge or zero
// lengths, unknown flags, bogus request ids); replies and SegmentGone sent as requests;
// valid-looking requests in their own name space, and releases of the lease ids the good client
// holds; descriptors passed with SCM_RIGHTS; byte-by-byte writes; half-closes; floods that never
// read; leases and queued waits abandoned by an abrupt close. Run as root, a forked child that
// dropped to uid 65534 also tries to remove, chmod, lease and stat the good client's segments.
// Meanwhile a well-behaved Client creates, leases, writes a known pattern, verifies and removes
// its own segments, checking every answer.
//
// What must hold: every byte the daemon sends is a well-formed reply (and, on connections that
// send only valid frames, answers a request that was sent, with its type or an Error); a release
// of another connection's lease is refused (kNotHeld); the good client never gets a wrong answer
// nor an unexpected error, nor is disconnected; afterwards the daemon is alive, answers, holds
// no lease and no connection of the attackers, no more descriptors than before, leaves nothing in
// /dev/shm, logged nothing critical, and stops cleanly.
//
// SHMLEASE_WIRE_FUZZ_SECONDS (default 20) bounds the run; SHMLEASE_WIRE_FUZZ_SEED (default
// 20261123) seeds it: each thread draws from its own generator, so a seed replays the same
// attacks (their interleaving is up to the scheduler).
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.hpp"
#include "shmlease/client.hpp"
#include "shmlease/codec.hpp"
#include "shmlease/format.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;
using Clock = std::chrono::steady_clock;
using Bytes = std::vector<std::byte>;
using proto::MsgType;

constexpr int kAttackers = 8;
constexpr uint32_t kMaxMessage = proto::kDefaultMaxMessage;  // the daemon's default
constexpr uint32_t kForeignUid = 65534;                      // nobody

int EnvInt(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::atoi(value) : fallback;
}
uint64_t EnvSeed() {
  const char* value = std::getenv("SHMLEASE_WIRE_FUZZ_SEED");
  return value != nullptr && *value != '\0' ? std::strtoull(value, nullptr, 0) : 20261123;
}

// What the attack broke: counted, and the first few described.
class Findings {
 public:
  void Add(const std::string& what) {
    std::lock_guard lock(mutex_);
    ++count_;
    if (first_.size() < 20) first_.push_back(what);
  }
  size_t count() const {
    std::lock_guard lock(mutex_);
    return count_;
  }
  std::string Describe() const {
    std::lock_guard lock(mutex_);
    std::string out;
    for (const auto& f : first_) out += "  " + f + "\n";
    return out;
  }

 private:
  mutable std::mutex mutex_;
  size_t count_ = 0;
  std::vector<std::string> first_;
};

// The kinds of attack, with what each sent.
enum Category {
  kRandomBytes,
  kMutatedFrames,
  kRepliesAsRequests,
  kValidRequests,
  kFdPassing,
  kSlowWrites,
  kHalfClose,
  kHoldAndDie,
  kNeverRead,
  kOddLengths,
  kCategoryCount
};
constexpr const char* kCategoryNames[kCategoryCount] = {
    "random bytes", "mutated frames", "replies as requests", "valid requests",     "fd passing",
    "slow writes",  "half-close",     "hold and die",        "never read (flood)", "odd lengths"};

struct Counters {
  std::array<std::atomic<uint64_t>, kCategoryCount> connections{};
  std::array<std::atomic<uint64_t>, kCategoryCount> messages{};
  std::array<std::atomic<uint64_t>, kCategoryCount> bytes{};
  std::atomic<uint64_t> replies{0};
  std::atomic<uint64_t> fds_passed{0};
  std::atomic<uint64_t> meddling_releases{0};
};

// Lease ids the good client holds right now, for attackers to try to release.
class GoodLeases {
 public:
  void Publish(uint64_t id) { ids_[next_++ % ids_.size()].store(id); }
  uint64_t Pick(std::mt19937_64& rng) const { return ids_[rng() % ids_.size()].load(); }

 private:
  std::array<std::atomic<uint64_t>, 8> ids_{};
  std::atomic<size_t> next_{0};
};

// --- Frames ----------------------------------------------------------------------------------

void PutU16(Bytes& b, size_t at, uint16_t v) {
  b[at] = std::byte(v & 0xFF);
  b[at + 1] = std::byte(v >> 8);
}
void PutU32(Bytes& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = std::byte((v >> (8 * i)) & 0xFF);
}
Bytes Encode(const proto::Request& r, uint32_t id, uint16_t flags = 0) {
  Bytes out;
  proto::EncodeRequest(r, id, flags, out);
  return out;
}
Bytes Encode(const proto::Reply& r, uint32_t id, uint16_t flags = 0) {
  Bytes out;
  proto::EncodeReply(r, id, flags, out);
  return out;
}
Bytes RandomBytes(std::mt19937_64& rng, size_t n) {
  Bytes out(n);
  for (auto& b : out) b = std::byte(rng());
  return out;
}

constexpr MsgType kAllTypes[] = {
    MsgType::kHello,   MsgType::kHelloOk,   MsgType::kPing,        MsgType::kPong,
    MsgType::kCreate,  MsgType::kCreateOk,  MsgType::kAcquire,     MsgType::kAcquireOk,
    MsgType::kRelease, MsgType::kReleaseOk, MsgType::kRemove,      MsgType::kRemoveOk,
    MsgType::kStat,    MsgType::kStatOk,    MsgType::kList,        MsgType::kListOk,
    MsgType::kChmod,   MsgType::kChmodOk,   MsgType::kStats,       MsgType::kStatsOk,
    MsgType::kReclaim, MsgType::kReclaimOk, MsgType::kSegmentGone, MsgType::kError};

// Everything an attacker thread needs to make requests.
struct Attacker {
  int index;
  std::mt19937_64 rng;
  const GoodLeases& good_leases;
  const std::vector<uint64_t>& good_segment_ids;
  std::vector<uint64_t> own_leases;     // granted on the current connection
  std::vector<uint64_t> seen_segments;  // ids from CreateOk/AcquireOk/StatOk
  uint32_t next_id = 2;

  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng() % n; }
  bool Chance(int percent) { return Below(100) < static_cast<uint64_t>(percent); }

  // A name of this attacker's own (16 per thread), or one nobody has yet (which a create may
  // take), or one the daemon must refuse. Every name it can create starts with "fz".
  std::string Name() {
    switch (Below(10)) {
      case 0:
        return "fz-nobody-" + std::to_string(Below(1000));
      case 1: {
        static const char* kBad[] = {"",       ".",   "..",          "-x",    "a/b",
                                     "../etc", "a b", "caf\xC3\xA9", "x\x01y"};
        return Chance(10) ? std::string(129, 'n') : std::string(kBad[Below(std::size(kBad))]);
      }
      default:
        return "fz" + std::to_string(index) + "-" + std::to_string(Below(16));
    }
  }
  uint64_t Size() {
    switch (Below(8)) {
      case 0:
        return 0;
      case 1:
        return 1;
      case 2:
        return 4096;
      case 3:
        return uint64_t{1} << (20 + Below(44));  // far beyond any limit
      case 4:
        return UINT64_MAX;
      default:
        return 1 + Below(256 * 1024);
    }
  }
  std::vector<uint64_t> Shape() {
    std::vector<uint64_t> shape(Below(10));
    for (auto& d : shape) d = Chance(80) ? 1 + Below(64) : rng();
    return shape;
  }
  int64_t Timeout() {
    switch (Below(8)) {
      case 0:
        return proto::kWaitForever;
      case 1:
        return -2 - static_cast<int64_t>(Below(1000));
      case 2:
        return INT64_MAX;
      case 3:
        return INT64_MAX / 1000 + static_cast<int64_t>(Below(1000));
      case 4:
        return static_cast<int64_t>(rng() >> 1);
      case 5:
        return 1 + static_cast<int64_t>(Below(200));
      default:
        return 0;
    }
  }
  uint64_t LeaseId() {
    if (!own_leases.empty() && Chance(50)) return own_leases[Below(own_leases.size())];
    if (Chance(30)) return good_leases.Pick(rng);
    return Chance(50) ? Below(10000) : rng();
  }
  uint64_t SegmentId() {
    if (!seen_segments.empty() && Chance(50)) return seen_segments[Below(seen_segments.size())];
    return Chance(50) ? Below(1000) : rng();
  }

  // A valid-looking request that can only ever take effect on this attacker's own segments (so
  // that the good client's expectations stay exact), except releases, which may name the good
  // client's leases and must be refused.
  proto::Request Request() {
    switch (Below(12)) {
      case 0:
        return proto::Hello{Chance(80) ? proto::kVersion : static_cast<uint32_t>(rng()),
                            std::string(Below(40), 'h')};
      case 1:
        return proto::Ping{};
      case 2: {
        proto::Create c;
        c.name = Name();
        c.size = Size();
        static const char* kFormats[] = {"", "f", "B", "d", "I", "x", "ff", "<f", "?", "q"};
        c.format = kFormats[Below(10)];
        c.shape = Chance(50) ? Shape() : std::vector<uint64_t>{};
        // No huge pages: they would take the host's pool from the huge-page tests.
        c.flags = static_cast<uint8_t>(rng()) &
                  static_cast<uint8_t>(~(proto::kCreateHuge | proto::kCreateHugeBestEffort));
        c.mode = Chance(80) ? static_cast<uint32_t>(Below(01000)) : static_cast<uint32_t>(rng());
        return c;
      }
      case 3:
      case 4: {
        proto::Acquire a;
        a.name = Name();
        a.mode = Chance(50) ? proto::LeaseMode::kRead : proto::LeaseMode::kWrite;
        a.exclusive = Chance(30) ? 1 : 0;
        a.timeout_ms = Timeout();
        return a;
      }
      case 5:
      case 6:
        return proto::Release{LeaseId()};
      case 7:
        return proto::Remove{Name()};
      case 8:
        return proto::Stat{Chance(30) ? "good-" + std::to_string(Below(4)) : Name()};
      case 9:
        return Chance(50) ? proto::Request{proto::List{}} : proto::Request{proto::Stats{}};
      case 10:
        return proto::Chmod{Name(), Chance(80) ? static_cast<uint32_t>(Below(01000))
                                               : static_cast<uint32_t>(rng())};
      default: {
        // Re-grants act like Acquire: never on the good client's segments.
        proto::Reclaim r;
        for (uint64_t i = Below(4); i > 0; --i) {
          uint64_t segment = SegmentId();
          if (std::count(good_segment_ids.begin(), good_segment_ids.end(), segment)) continue;
          r.leases.push_back({LeaseId(), segment, static_cast<int64_t>(rng()),
                              Chance(50) ? proto::LeaseMode::kRead : proto::LeaseMode::kWrite,
                              static_cast<uint8_t>(Below(2))});
        }
        for (uint64_t i = Below(4); i > 0; --i) {
          r.mappings.push_back(
              {SegmentId(), static_cast<int64_t>(rng()), static_cast<uint8_t>(Below(2))});
        }
        return r;
      }
    }
  }

  proto::Reply Reply() {
    proto::SegmentInfo info;
    info.id = SegmentId();
    info.name = Name();
    info.size = Size();
    info.shape = Shape();
    if (info.shape.size() > kMaxDims) info.shape.resize(kMaxDims);
    switch (Below(13)) {
      case 0:
        return proto::HelloOk{proto::kVersion, 1, kMaxMessage, "evil"};
      case 1:
        return proto::Pong{};
      case 2:
        return proto::CreateOk{info};
      case 3:
        return proto::AcquireOk{LeaseId(), proto::LeaseMode::kWrite, 1, info};
      case 4:
        return proto::ReleaseOk{};
      case 5:
        return proto::RemoveOk{};
      case 6:
        return proto::StatOk{info};
      case 7:
        return proto::ListOk{{info, info}};
      case 8:
        return proto::ChmodOk{info};
      case 9:
        return proto::StatsOk{1, 2, 3, 4, 5, 6, {}};
      case 10:
        return proto::SegmentGone{SegmentId()};
      case 11:
        return proto::ErrorReply{static_cast<Errc>(Below(40)), "from a client"};
      default:
        return proto::ReclaimOk{{{LeaseId(), LeaseId(), Errc::kOk}}, {}};
    }
  }

  // One frame, mutated in one or more ways.
  Bytes Mutate(Bytes frame) {
    for (uint64_t rounds = 1 + Below(3); rounds > 0; --rounds) {
      switch (Below(11)) {
        case 0:  // bit flips anywhere
          for (uint64_t i = 1 + Below(8); i > 0; --i) {
            frame[Below(frame.size())] ^= std::byte(1u << Below(8));
          }
          break;
        case 1:  // interesting byte values in the body
          if (frame.size() > proto::kHeaderSize) {
            static const uint8_t kValues[] = {0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE};
            frame[proto::kHeaderSize + Below(frame.size() - proto::kHeaderSize)] =
                std::byte(kValues[Below(6)]);
          }
          break;
        case 2:  // truncated (the length still claims the rest)
          frame.resize(Below(frame.size()));
          break;
        case 3: {  // extended, with the length fixed up or not
          Bytes more = RandomBytes(rng, 1 + Below(64));
          frame.insert(frame.end(), more.begin(), more.end());
          if (Chance(70) && frame.size() >= proto::kHeaderSize) {
            PutU32(frame, 4, static_cast<uint32_t>(frame.size() - proto::kHeaderSize));
          }
          break;
        }
        case 4:  // another type, including reply types, SegmentGone and Error
          if (frame.size() >= proto::kHeaderSize) {
            PutU16(frame, 8,
                   Chance(80) ? static_cast<uint16_t>(kAllTypes[Below(std::size(kAllTypes))])
                              : static_cast<uint16_t>(rng()));
          }
          break;
        case 5:  // a length that lies
          if (frame.size() >= proto::kHeaderSize) {
            static const uint32_t kLengths[] = {
                0, 1, kMaxMessage, kMaxMessage + 1, UINT32_MAX, 0x80000000u};
            uint32_t actual = static_cast<uint32_t>(frame.size() - proto::kHeaderSize);
            uint32_t length =
                Chance(50) ? kLengths[Below(6)] : actual + static_cast<uint32_t>(Below(5)) - 2;
            PutU32(frame, 4, length);
          }
          break;
        case 6:  // flags: known, unknown, all
          if (frame.size() >= proto::kHeaderSize) PutU16(frame, 10, static_cast<uint16_t>(rng()));
          break;
        case 7:  // bogus request ids
          if (frame.size() >= proto::kHeaderSize) {
            static const uint32_t kIds[] = {0, 1, UINT32_MAX, 0x80000000u};
            PutU32(frame, 12, Chance(50) ? kIds[Below(4)] : static_cast<uint32_t>(rng()));
          }
          break;
        case 8:  // a wrong magic byte
          if (frame.size() >= 4) frame[Below(4)] ^= std::byte(1 + Below(255));
          break;
        case 9: {  // a string length field (right after the header, for most requests) that lies
          if (frame.size() >= proto::kHeaderSize + 2) {
            PutU16(frame, proto::kHeaderSize, static_cast<uint16_t>(rng()));
          }
          break;
        }
        default: {  // the body replaced by random bytes of the same length
          for (size_t i = proto::kHeaderSize; i < frame.size(); ++i) frame[i] = std::byte(rng());
          break;
        }
      }
      if (frame.empty()) break;
    }
    return frame;
  }
};

// --- One attacker connection -----------------------------------------------------------------

// A raw connection that checks everything the daemon sends back: each frame must decode as a
// reply; with `track` set, each reply must answer a request sent on it, with its type or Error.
class AttackConn {
 public:
  AttackConn(const std::string& path, Findings& findings, Counters& counters, Category category)
      : findings_(findings), counters_(counters), category_(category) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{2, 0};  // a daemon that stopped reading must not hang an attacker
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    counters_.connections[category_]++;
  }
  ~AttackConn() { ::close(fd_); }
  AttackConn(const AttackConn&) = delete;
  AttackConn& operator=(const AttackConn&) = delete;

  bool usable() const { return connected_ && !peer_closed_ && !send_failed_; }
  bool peer_closed() const { return peer_closed_; }
  int fd() const { return fd_; }
  void set_track(bool track) { track_ = track; }
  // Lease ids granted on this connection (AcquireOk, ReclaimOk), as far as read.
  const std::vector<uint64_t>& granted() const { return granted_; }

  // Sends `bytes` (with `fds` as SCM_RIGHTS, if any); false once the daemon has gone away.
  bool Send(std::span<const std::byte> bytes, const std::vector<int>& fds = {}) {
    if (!usable()) return false;
    counters_.messages[category_]++;
    counters_.bytes[category_] += bytes.size();
    size_t sent = 0;
    bool first = true;
    while (sent < bytes.size()) {
      iovec iov{const_cast<std::byte*>(bytes.data() + sent), bytes.size() - sent};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      std::vector<char> control;
      if (first && !fds.empty()) {
        control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
        counters_.fds_passed += fds.size();
      }
      ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        send_failed_ = true;
        return false;
      }
      first = false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  // Sends a request the daemon must answer; with tracking on, the answer is checked against it.
  bool Request(const proto::Request& request, uint32_t id, uint16_t flags = 0,
               const std::vector<int>& fds = {}) {
    if (track_) {
      if ((flags & proto::kFlagNoReply) != 0) {
        optional_.insert(id);
      } else {
        outstanding_[id] = proto::TypeOf(request);
      }
    }
    return Send(Encode(request, id, flags), fds);
  }
  // Reads for up to `timeout_ms` (0: what has arrived), checking each frame; false once the
  // daemon has closed the connection.
  bool Pump(int timeout_ms) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!peer_closed_) {
      int wait = static_cast<int>(std::max<int64_t>(
          0,
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count()));
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, wait) <= 0) break;
      std::byte chunk[65536];
      iovec iov{chunk, sizeof(chunk)};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == EINTR) continue;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          ::close(fd);
        }
      }
      if (n <= 0) {
        peer_closed_ = true;
        break;
      }
      in_.insert(in_.end(), chunk, chunk + n);
      Decode();
      if (timeout_ms == 0) continue;  // drain what is there, without waiting
    }
    return !peer_closed_;
  }
  // Waits for the answer to request `id`.
  std::optional<proto::Reply> Await(uint32_t id, int timeout_ms) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (arrived_.count(id) == 0 && !peer_closed_ && Clock::now() < deadline) Pump(50);
    auto it = arrived_.find(id);
    if (it == arrived_.end()) return std::nullopt;
    proto::Reply reply = std::move(it->second);
    arrived_.erase(it);
    return reply;
  }
  void Await(uint32_t id) { awaited_.insert(id); }
  void Finding(const std::string& what) {
    findings_.Add(std::string(kCategoryNames[category_]) + ": " + what);
  }

 private:
  void Decode() {
    size_t at = 0;
    while (true) {
      auto input = std::span<const std::byte>(in_).subspan(at);
      proto::FrameResult frame = proto::DecodeFrame(input, proto::kClientMaxReply);
      if (frame.status == proto::DecodeStatus::kNeedMore) break;
      if (frame.status == proto::DecodeStatus::kBad) {
        Finding("the daemon sent bytes that are not a frame: " + frame.reason);
        in_.clear();
        return;
      }
      at += frame.consumed;
      counters_.replies++;
      proto::Reply reply;
      Errc error;
      std::string reason;
      if (!proto::DecodeReply(frame.header, frame.body, reply, error, reason)) {
        Finding("the daemon sent a frame that is not a reply: " + reason);
        continue;
      }
      const proto::Header& h = frame.header;
      if ((h.flags & proto::kFlagFd) != 0 && h.type != MsgType::kAcquireOk) {
        Finding(std::string("a descriptor flag on ") + proto::TypeName(h.type));
      }
      if ((h.flags & ~proto::kFlagFd) != 0) Finding("reply flags " + std::to_string(h.flags));
      if (h.type == MsgType::kSegmentGone) {
        if (h.request_id != 0) Finding("SegmentGone with a request id");
        continue;
      }
      if (auto* ok = std::get_if<proto::AcquireOk>(&reply)) granted_.push_back(ok->lease_id);
      if (auto* ok = std::get_if<proto::ReclaimOk>(&reply)) {
        for (const auto& l : ok->leases) {
          if (l.status == Errc::kOk) granted_.push_back(l.new_lease_id);
        }
      }
      if (track_) {
        Match(h, reply);
      } else if (awaited_.erase(h.request_id) != 0) {
        arrived_[h.request_id] = std::move(reply);
      }
    }
    in_.erase(in_.begin(), in_.begin() + static_cast<long>(at));
  }
  void Match(const proto::Header& h, proto::Reply& reply) {
    auto it = outstanding_.find(h.request_id);
    if (it == outstanding_.end()) {
      if (optional_.erase(h.request_id) != 0 && h.type == MsgType::kError) return;
      Finding(std::string("a ") + proto::TypeName(h.type) + " answers request id " +
              std::to_string(h.request_id) + ", which was never sent or already answered");
      return;
    }
    auto expected = static_cast<MsgType>(static_cast<uint16_t>(it->second) | proto::kReplyBit);
    if (h.type != expected && h.type != MsgType::kError) {
      Finding(std::string("a ") + proto::TypeName(h.type) + " answers a " +
              proto::TypeName(it->second));
    }
    outstanding_.erase(it);
    if (awaited_.erase(h.request_id) != 0) arrived_[h.request_id] = std::move(reply);
  }

  Findings& findings_;
  Counters& counters_;
  Category category_;
  int fd_ = -1;
  bool connected_ = false;
  bool peer_closed_ = false;
  bool send_failed_ = false;
  bool track_ = false;
  Bytes in_;
  std::map<uint32_t, MsgType> outstanding_;
  std::set<uint32_t> optional_;  // no-reply requests: answered only on failure
  std::set<uint32_t> awaited_;
  std::map<uint32_t, proto::Reply> arrived_;
  std::vector<uint64_t> granted_;
};

bool SayHello(AttackConn& c, Attacker& a) {
  uint32_t id = a.next_id++;
  c.Await(id);
  c.Request(proto::Hello{proto::kVersion, "wire-fuzz-" + std::to_string(a.index)}, id);
  auto reply = c.Await(id, 10000);
  return reply && std::holds_alternative<proto::HelloOk>(*reply);
}

// Sends a valid request and checks its answer where the answer is known; remembers own leases
// and segment ids. Releases of the good client's leases must be refused.
void ValidRequest(AttackConn& c, Attacker& a, Counters& counters) {
  uint32_t id = a.next_id++;
  proto::Request request = a.Request();
  uint16_t flags = 0;
  auto* release = std::get_if<proto::Release>(&request);
  bool meddling = false;
  if (release != nullptr) {
    if (a.Chance(40)) release->lease_id = a.good_leases.Pick(a.rng);
    meddling =
        std::find(c.granted().begin(), c.granted().end(), release->lease_id) == c.granted().end();
    if (!meddling && a.Chance(30)) flags = proto::kFlagNoReply;
  }
  // Hellos with another version close the connection; keep those rare.
  if (auto* hello = std::get_if<proto::Hello>(&request);
      hello && hello->version != proto::kVersion && a.Chance(80)) {
    hello->version = proto::kVersion;
  }
  bool wait = meddling || a.Chance(60);
  if (auto* acquire = std::get_if<proto::Acquire>(&request); acquire && acquire->timeout_ms != 0) {
    wait = false;  // may be queued: its answer comes when it comes
  }
  if (wait && flags == 0) c.Await(id);
  if (!c.Request(request, id, flags) || !wait || flags != 0) return;
  auto reply = c.Await(id, 10000);
  if (!reply) {
    if (c.usable())
      c.Finding(std::string("no answer to ") + proto::TypeName(proto::TypeOf(request)));
    return;
  }
  if (meddling) {
    counters.meddling_releases++;
    auto* error = std::get_if<proto::ErrorReply>(&*reply);
    // A random id may be a lease granted here meanwhile: its grant was read before this answer.
    bool ours =
        std::find(c.granted().begin(), c.granted().end(), release->lease_id) != c.granted().end();
    if (!ours && (error == nullptr || error->code != Errc::kNotHeld)) {
      c.Finding("release of lease " + std::to_string(release->lease_id) +
                ", held by another connection, was not refused with not_held");
    }
    return;
  }
  if (auto* ok = std::get_if<proto::AcquireOk>(&*reply)) {
    a.seen_segments.push_back(ok->info.id);
    auto* acquire = std::get_if<proto::Acquire>(&request);
    if (acquire && (ok->info.name != acquire->name || ok->mode != acquire->mode)) {
      c.Finding("acquire of '" + acquire->name + "' granted '" + ok->info.name + "'");
    }
  } else if (auto* created = std::get_if<proto::CreateOk>(&*reply)) {
    a.seen_segments.push_back(created->info.id);
    auto* create = std::get_if<proto::Create>(&request);
    if (create && created->info.name != create->name) {
      c.Finding("create of '" + create->name + "' answered for '" + created->info.name + "'");
    }
  }
}

// A few descriptors of different kinds to pass to the daemon, which must not keep them.
std::vector<int> SomeFds(Attacker& a, int own_socket) {
  std::vector<int> fds;
  for (uint64_t n = 1 + a.Below(4); n > 0; --n) {
    switch (a.Below(5)) {
      case 0:
        fds.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        break;
      case 1: {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) == 0) {
          fds.push_back(p[0]);
          ::close(p[1]);
        }
        break;
      }
      case 2: {
        int fd = ::memfd_create("wire-fuzz", MFD_CLOEXEC);
        if (fd >= 0 && ::ftruncate(fd, 4096) == 0) fds.push_back(fd);
        break;
      }
      case 3:
        fds.push_back(::eventfd(0, EFD_CLOEXEC));
        break;
      default:
        fds.push_back(::dup(own_socket));
        break;
    }
  }
  std::erase_if(fds, [](int fd) { return fd < 0; });
  return fds;
}

void RunOneConnection(const std::string& socket, Attacker& a, Findings& findings,
                      Counters& counters) {
  auto category = static_cast<Category>(a.Below(kCategoryCount));
  AttackConn c(socket, findings, counters, category);
  if (!c.usable()) return;
  a.own_leases.clear();
  switch (category) {
    case kRandomBytes:
      for (uint64_t bursts = 1 + a.Below(4); bursts > 0 && c.usable(); --bursts) {
        Bytes junk = RandomBytes(a.rng, 1 + a.Below(2048));
        if (a.Chance(40) && junk.size() >= 4) std::memcpy(junk.data(), "SHML", 4);
        c.Send(junk);
        c.Pump(0);
      }
      break;
    case kMutatedFrames:
      if (a.Chance(90) && !SayHello(c, a)) break;
      for (uint64_t n = 1 + a.Below(50); n > 0 && c.usable(); --n) {
        Bytes frame = Encode(a.Request(), a.next_id++);
        c.Send(a.Chance(70) ? a.Mutate(std::move(frame)) : frame);
        c.Pump(0);
      }
      break;
    case kRepliesAsRequests: {
      c.set_track(false);
      if (!SayHello(c, a)) break;
      // Every reply type is an unknown request type: answered with kUnknownType, same id.
      for (uint64_t n = 1 + a.Below(20); n > 0 && c.usable(); --n) {
        uint32_t id = a.next_id++;
        c.Await(id);
        c.Send(Encode(a.Reply(), id));
        auto reply = c.Await(id, 10000);
        auto* error = reply ? std::get_if<proto::ErrorReply>(&*reply) : nullptr;
        if (c.usable() && (error == nullptr || error->code != Errc::kUnknownType)) {
          c.Finding("a reply sent as a request was not answered with unknown_type");
        }
      }
      break;
    }
    case kValidRequests:
      c.set_track(true);
      if (!SayHello(c, a)) break;
      for (uint64_t n = 10 + a.Below(190); n > 0 && c.usable(); --n) {
        a.own_leases = c.granted();
        ValidRequest(c, a, counters);
        c.Pump(0);
      }
      // Give back some of what was taken; the rest goes with the close.
      for (uint64_t lease : c.granted()) {
        if (a.Chance(50)) c.Request(proto::Release{lease}, a.next_id++, proto::kFlagNoReply);
      }
      c.Pump(a.Chance(50) ? 100 : 0);
      break;
    case kFdPassing: {
      // Clean: valid pings carrying descriptors, each answered with a pong. Otherwise: any
      // frame, mutated or not, carrying them.
      bool clean = a.Chance(60);
      c.set_track(clean);
      bool helloed = (clean || a.Chance(80)) && SayHello(c, a);
      if (clean && !helloed) break;
      for (uint64_t n = 1 + a.Below(10); n > 0 && c.usable(); --n) {
        std::vector<int> fds = SomeFds(a, c.fd());
        uint32_t id = a.next_id++;
        if (clean) {
          c.Await(id);
          c.Request(proto::Ping{}, id, 0, fds);
          auto pong = c.Await(id, 10000);
          if (c.usable() && !(pong && std::holds_alternative<proto::Pong>(*pong))) {
            c.Finding("a ping carrying descriptors was not answered with pong");
          }
        } else {
          Bytes frame = Encode(a.Request(), id);
          c.Send(a.Chance(50) ? a.Mutate(std::move(frame)) : frame, fds);
        }
        for (int fd : fds) ::close(fd);
        c.Pump(0);
      }
      break;
    }
    case kSlowWrites: {
      Bytes stream = Encode(proto::Hello{proto::kVersion, "slow"}, a.next_id++);
      for (uint64_t n = 1 + a.Below(5); n > 0; --n) {
        Bytes frame = Encode(a.Request(), a.next_id++);
        stream.insert(stream.end(), frame.begin(), frame.end());
      }
      // Stop anywhere, also in the middle of a frame.
      size_t end = a.Chance(50) ? stream.size() : a.Below(stream.size());
      for (size_t at = 0; at < end && c.usable();) {
        size_t n = std::min<size_t>(end - at, 1 + a.Below(3));
        c.Send(std::span<const std::byte>(stream).subspan(at, n));
        at += n;
        std::this_thread::sleep_for(std::chrono::microseconds(a.Below(2000)));
      }
      c.Pump(a.Chance(50) ? 50 : 0);
      break;
    }
    case kHalfClose: {
      bool helloed = SayHello(c, a);
      for (uint64_t n = a.Below(5); n > 0 && c.usable(); --n) {
        c.Send(Encode(helloed ? a.Request() : proto::Request{proto::Ping{}}, a.next_id++));
      }
      ::shutdown(c.fd(), SHUT_WR);
      // The daemon answers what it read, sees the end and closes.
      auto deadline = Clock::now() + 10s;
      while (c.Pump(100) && Clock::now() < deadline) {
      }
      if (!c.peer_closed()) c.Finding("the daemon kept a half-closed connection open for 10 s");
      break;
    }
    case kHoldAndDie: {
      // A lease held exclusively by one connection, waits on it queued by two more, then every
      // one of them vanishes, in some order.
      c.set_track(false);
      if (!SayHello(c, a)) break;
      std::string name = "fz" + std::to_string(a.index) + "-hold";
      uint32_t id = a.next_id++;
      c.Await(id);
      c.Request(proto::Create{name, 4096, "", {}, proto::kCreateExistOk, 0600}, id);
      c.Await(id, 10000);
      id = a.next_id++;
      c.Await(id);
      c.Request(proto::Acquire{name, proto::LeaseMode::kWrite, 1, 0}, id);
      c.Await(id, 10000);
      std::vector<std::unique_ptr<AttackConn>> waiters;
      for (int i = 0; i < 2; ++i) {
        auto w = std::make_unique<AttackConn>(socket, findings, counters, kHoldAndDie);
        if (!SayHello(*w, a)) continue;
        // The first waits without limit; the second with any timeout, huge ones included.
        w->Request(
            proto::Acquire{name, a.Chance(50) ? proto::LeaseMode::kRead : proto::LeaseMode::kWrite,
                           0, i == 0 ? proto::kWaitForever : a.Timeout()},
            a.next_id++);
        waiters.push_back(std::move(w));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(a.Below(50)));
      if (a.Chance(50)) {
        waiters.clear();  // the waiters go first
      } else if (a.Chance(50)) {
        std::reverse(waiters.begin(), waiters.end());
      }
      break;  // the holder goes with `c`, the rest after it
    }
    case kNeverRead:
      if (!SayHello(c, a)) break;
      for (uint64_t n = 100 + a.Below(3000); n > 0 && c.usable(); --n) {
        c.Send(Encode(a.Chance(50) ? proto::Request{proto::List{}} : proto::Request{proto::Stats{}},
                      a.next_id++));
      }
      break;
    case kOddLengths: {
      if (a.Chance(80) && !SayHello(c, a)) break;
      // A body exactly at the limit (bad contents, framing intact: answered, connection kept),
      // one byte above (too large: answered and closed), or a length the body never reaches.
      Bytes frame = Encode(proto::Stat{"x"}, a.next_id++);
      uint32_t length = a.Chance(40)   ? kMaxMessage
                        : a.Chance(50) ? kMaxMessage + 1
                                       : 1 + a.Below(kMaxMessage);
      PutU32(frame, 4, length);
      Bytes body = RandomBytes(a.rng, a.Chance(70) ? length : a.Below(length));
      frame.resize(proto::kHeaderSize);
      frame.insert(frame.end(), body.begin(), body.end());
      c.Send(frame);
      c.Pump(a.Chance(50) ? 100 : 0);
      break;
    }
    case kCategoryCount:
      break;
  }
}

void AttackerLoop(int index, uint64_t seed, const std::string& socket, Clock::time_point deadline,
                  const GoodLeases& good_leases, const std::vector<uint64_t>& good_segments,
                  Findings& findings, Counters& counters) {
  Attacker a{index,
             std::mt19937_64(seed + 1 + static_cast<uint64_t>(index)),
             good_leases,
             good_segments,
             {},
             {},
             2};
  while (Clock::now() < deadline) RunOneConnection(socket, a, findings, counters);
}

// --- The well-behaved client -----------------------------------------------------------------

struct GoodResult {
  uint64_t rounds = 0;
  uint64_t calls = 0;
};

uint32_t Pattern(uint64_t round, size_t i) {
  return static_cast<uint32_t>((round * 0x9E3779B97F4A7C15ull) ^ (i * 2654435761u));
}

// Creates, leases, writes, verifies and removes its own segments, checking every answer.
GoodResult GoodClientLoop(Client& client, uint64_t seed, Clock::time_point deadline,
                          GoodLeases& leases, Findings& findings) {
  std::mt19937_64 rng(seed);
  GoodResult result;
  auto check = [&](bool ok, const std::string& what) {
    ++result.calls;
    if (!ok) findings.Add("good client: " + what);
  };
  for (uint64_t round = 0; Clock::now() < deadline; ++round) {
    std::string name = "good-" + std::to_string(round % 4);
    uint64_t n = 1 + rng() % 16384;
    try {
      SegmentInfo info = client.Create(name, {.format = "I", .shape = {n}});
      check(info.name == name && info.size == 4 * n && info.format == "I" &&
                info.shape == std::vector<uint64_t>{n} && info.readers == 0 && info.writers == 0 &&
                info.removed == 0,
            "create " + name + " answered wrongly");
      {
        Lease w = client.Acquire(name, Mode::kWrite, {.timeout = 10s});
        leases.Publish(w.id());
        check(w.size() == 4 * n && w.writable() && w.info().id == info.id,
              "write lease of " + name);
        auto words = w.as_writable<uint32_t>();
        for (size_t i = 0; i < words.size(); ++i) words[i] = Pattern(round, i);
        SegmentInfo held = client.Stat(name);
        check(held.writers == 1 && held.readers == 0, "stat under a write lease of " + name);
      }
      {
        Lease r1 = client.Acquire(name, Mode::kRead, {.timeout = 10s});
        Lease r2 = client.Acquire(name, Mode::kRead, {.timeout = 10s});
        leases.Publish(r1.id());
        leases.Publish(r2.id());
        check(r1.id() != r2.id(), "two read leases with one id");
        auto a = r1.as<uint32_t>();
        auto b = r2.as<uint32_t>();
        bool same = a.size() == n && b.size() == n;
        for (size_t i = 0; same && i < n; ++i) same = a[i] == Pattern(round, i) && b[i] == a[i];
        check(same, "contents of " + name + " differ from what was written");
        SegmentInfo held = client.Stat(name);
        check(held.readers == 2 && held.writers == 0, "stat under two read leases of " + name);
      }
      {
        Lease x = client.Acquire(name, Mode::kWrite, {.exclusive = true, .timeout = 0ms});
        leases.Publish(x.id());
        check(x.as<uint32_t>()[n - 1] == Pattern(round, n - 1),
              "contents under an exclusive lease");
      }
      SegmentInfo after = client.Stat(name);
      check(after.readers == 0 && after.writers == 0 && after.exclusive == 0,
            "stat after every lease was released");
      client.Remove(name);
      std::error_code ec;
      client.Stat(name, ec);
      check(ec == Errc::kNotFound, "stat of removed " + name + ": " + ec.message());
      client.Acquire(name, Mode::kRead, {.timeout = 0ms}, ec);
      check(ec == Errc::kNotFound, "acquire of removed " + name + ": " + ec.message());
      if (round % 8 == 0) {
        client.Ping();
        DaemonStats stats = client.Stats();
        check(stats.leases < 100000, "stats");
      }
    } catch (const Error& e) {
      check(false, "round " + std::to_string(round) + " on " + name + " failed: " + e.what());
      std::error_code ec;
      client.Remove(name, ec);
    }
    ++result.rounds;
  }
  return result;
}

// --- A foreign uid ---------------------------------------------------------------------------

// In a child that became uid 65534: every attempt on the root-owned segment `name` (mode 0600)
// must be refused. Exits with the number of attempts that were not.
[[noreturn]] void ForeignUidChild(const std::string& socket, const std::string& name,
                                  uint64_t good_lease, int seconds) {
  if (::setgroups(0, nullptr) != 0 || ::setresgid(kForeignUid, kForeignUid, kForeignUid) != 0 ||
      ::setresuid(kForeignUid, kForeignUid, kForeignUid) != 0) {
    ::_exit(100);
  }
  Findings findings;
  Counters counters;
  auto deadline = Clock::now() + std::chrono::seconds(seconds);
  int breaches = 0;
  uint32_t id = 2;
  auto expect = [&](AttackConn& c, const proto::Request& request, Errc want) {
    uint32_t rid = id++;
    c.Await(rid);
    c.Request(request, rid);
    auto reply = c.Await(rid, 10000);
    auto* error = reply ? std::get_if<proto::ErrorReply>(&*reply) : nullptr;
    if (error == nullptr || error->code != want) {
      ++breaches;
      std::fprintf(stderr, "foreign uid: %s of '%s' was not refused with %s\n",
                   proto::TypeName(proto::TypeOf(request)), name.c_str(),
                   std::string(ErrcName(want)).c_str());
    }
  };
  while (Clock::now() < deadline && breaches < 20) {
    AttackConn c(socket, findings, counters, kValidRequests);
    c.set_track(true);
    uint32_t hello = id++;
    c.Await(hello);
    c.Request(proto::Hello{proto::kVersion, "foreign"}, hello);
    if (!c.Await(hello, 10000)) ::_exit(101);
    expect(c, proto::Remove{name}, Errc::kPermissionDenied);
    expect(c, proto::Chmod{name, 0666}, Errc::kPermissionDenied);
    expect(c, proto::Acquire{name, proto::LeaseMode::kWrite, 0, 0}, Errc::kPermissionDenied);
    expect(c, proto::Acquire{name, proto::LeaseMode::kRead, 1, 0}, Errc::kPermissionDenied);
    expect(c, proto::Stat{name}, Errc::kPermissionDenied);
    expect(c, proto::Create{name, 0, "I", {16}, proto::kCreateExistOk, 0666},
           Errc::kPermissionDenied);
    expect(c, proto::Release{good_lease}, Errc::kNotHeld);
    uint32_t list = id++;
    c.Await(list);
    c.Request(proto::List{}, list);
    if (auto reply = c.Await(list, 10000);
        auto* ok = reply ? std::get_if<proto::ListOk>(&*reply) : nullptr) {
      for (const auto& s : ok->segments) {
        if (s.name.rfind("good", 0) == 0) {
          ++breaches;
          std::fprintf(stderr, "foreign uid: List shows '%s'\n", s.name.c_str());
        }
      }
    }
    uint32_t stats = id++;
    c.Await(stats);
    c.Request(proto::Stats{}, stats);
    if (auto reply = c.Await(stats, 10000);
        auto* ok = reply ? std::get_if<proto::StatsOk>(&*reply) : nullptr) {
      for (const auto& client : ok->clients) {
        if (client.uid != kForeignUid) {
          ++breaches;
          std::fprintf(stderr, "foreign uid: Stats shows a client of uid %u\n", client.uid);
        }
      }
    }
  }
  if (findings.count() != 0) std::fprintf(stderr, "%s", findings.Describe().c_str());
  std::printf(
      "wire fuzz: uid %u sent %u requests at '%s' and the good client's lease: %d not "
      "refused\n",
      kForeignUid, id - 2, name.c_str(), breaches);
  std::fflush(stdout);
  ::_exit(std::min<int>(99, breaches + static_cast<int>(findings.count())));
}

// --- The test --------------------------------------------------------------------------------

size_t OpenFds(pid_t pid) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    ++n;
  }
  return n;
}

// True while `pid` runs (a child that died stays a zombie until reaped: kill(pid, 0) succeeds).
bool Running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_field, comm, state;
  stat >> pid_field >> comm >> state;
  return stat && state != "Z" && state != "X";
}

// What explains a dead or failing daemon: sanitizer reports and the last lines of its log.
std::string LogTail(const std::string& log) {
  std::string reports, tail;
  std::istringstream lines(log);
  std::vector<std::string> last;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("runtime error") != std::string::npos ||
        line.find("Sanitizer") != std::string::npos) {
      reports += line + "\n";
    }
    last.push_back(line);
    if (last.size() > 30) last.erase(last.begin());
  }
  for (const auto& line : last) tail += line + "\n";
  return "sanitizer reports:\n" + reports + "last lines of the daemon's log:\n" + tail;
}

TEST(WireFuzz, DaemonSurvivesAndTheGoodClientIsServedRight) {
  const int seconds = EnvInt("SHMLEASE_WIRE_FUZZ_SECONDS", 20);
  const uint64_t seed = EnvSeed();
  std::printf("wire fuzz: %d s, seed %llu (SHMLEASE_WIRE_FUZZ_SEED=%llu replays it)\n", seconds,
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  DaemonProcess daemon({"--log-level", "info", "--socket-mode", "0666"});
  Client good(daemon.socket_path());
  good.set_reconnect_timeout(0ms);  // a dropped connection must show, not be papered over
  const size_t fds_before = OpenFds(daemon.pid());

  // A segment held for the whole run with a known pattern: nobody may take or change it.
  good.Create("good-fixed", {.format = "I", .shape = {1024}});
  Lease fixed = good.Acquire("good-fixed", Mode::kWrite);
  for (size_t i = 0; i < 1024; ++i) fixed.as_writable<uint32_t>()[i] = Pattern(seed, i);
  std::vector<uint64_t> good_segments = {fixed.info().id};
  GoodLeases good_leases;
  good_leases.Publish(fixed.id());

  // Before any thread starts: a child of another uid (root only, which may switch).
  pid_t foreign = -1;
  if (::geteuid() == 0) {
    ::chmod(daemon.dir().c_str(), 0711);
    std::fflush(stdout);  // or the child flushes the parent's buffered lines again
    foreign = ::fork();
    if (foreign == 0) ForeignUidChild(daemon.socket_path(), "good-fixed", fixed.id(), seconds);
  } else {
    std::printf("wire fuzz: not root, so no foreign-uid attacker\n");
  }

  Findings findings;
  Counters counters;
  auto deadline = Clock::now() + std::chrono::seconds(seconds);
  std::vector<std::thread> attackers;
  for (int i = 0; i < kAttackers; ++i) {
    attackers.emplace_back(AttackerLoop, i, seed, daemon.socket_path(), deadline,
                           std::cref(good_leases), std::cref(good_segments), std::ref(findings),
                           std::ref(counters));
  }
  GoodResult result = GoodClientLoop(good, seed ^ 0x600D, deadline, good_leases, findings);
  for (auto& t : attackers) t.join();

  std::printf("wire fuzz: the good client ran %llu rounds, %llu checked answers\n",
              static_cast<unsigned long long>(result.rounds),
              static_cast<unsigned long long>(result.calls));
  uint64_t total_messages = 0;
  for (int c = 0; c < kCategoryCount; ++c) {
    std::printf("wire fuzz: %-20s %7llu connections %9llu messages %11llu bytes\n",
                kCategoryNames[c], static_cast<unsigned long long>(counters.connections[c].load()),
                static_cast<unsigned long long>(counters.messages[c].load()),
                static_cast<unsigned long long>(counters.bytes[c].load()));
    total_messages += counters.messages[c].load();
  }
  std::printf(
      "wire fuzz: %llu messages sent, %llu replies checked, %llu descriptors passed, "
      "%llu releases of others' leases refused\n",
      static_cast<unsigned long long>(total_messages),
      static_cast<unsigned long long>(counters.replies.load()),
      static_cast<unsigned long long>(counters.fds_passed.load()),
      static_cast<unsigned long long>(counters.meddling_releases.load()));

  if (foreign > 0) {
    int status = 0;
    ::waitpid(foreign, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "foreign-uid attacker: exit status " << status
        << " (breaches, or 100+ for a setup failure)";
  }

  EXPECT_EQ(findings.count(), 0u) << findings.Describe();
  EXPECT_GT(result.rounds, 0u);
  EXPECT_TRUE(Running(daemon.pid())) << "the daemon died\n" << LogTail(daemon.log());
  ASSERT_NO_THROW(good.Ping()) << LogTail(daemon.log());
  EXPECT_EQ(good.reconnects(), 0u) << "the good client lost its connection";
  for (size_t i = 0; i < 1024; ++i) {
    ASSERT_EQ(fixed.as<uint32_t>()[i], Pattern(seed, i)) << "good-fixed changed at " << i;
  }
  SegmentInfo fixed_info = good.Stat("good-fixed");
  EXPECT_EQ(fixed_info.writers, 1u);
  EXPECT_EQ(fixed_info.readers, 0u);
  fixed.Release();
  good.Remove("good-fixed");

  // The attackers are gone: their connections and leases with them. Their named segments stay
  // (a name outlives its creator's connection) until removed here.
  DaemonStats stats;
  for (auto until = Clock::now() + 10s; Clock::now() < until;) {
    stats = good.Stats();
    if (stats.connections == 1 && stats.leases == 0) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(stats.connections, 1u) << "attacker connections still open";
  EXPECT_EQ(stats.leases, 0u) << "leases still held after every attacker left";
  size_t leftovers = 0;
  for (const SegmentInfo& s : good.List()) {
    EXPECT_EQ(s.name.rfind("fz", 0), 0u) << "unexpected segment " << s.name;
    EXPECT_EQ(s.readers + s.writers, 0u) << s.name;
    good.Remove(s.name);
    ++leftovers;
  }
  std::printf("wire fuzz: removed %zu segments the attackers created and left\n", leftovers);
  EXPECT_EQ(good.Stats().segments, 0u);
  for (auto until = Clock::now() + 5s; Clock::now() < until && !daemon.ShmObjects().empty();) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(daemon.ShmObjects().empty()) << "objects left in /dev/shm";
  // Passed descriptors are dropped by the kernel (the daemon reads without a control buffer).
  size_t fds_after = OpenFds(daemon.pid());
  std::printf("wire fuzz: daemon descriptors %zu before, %zu after\n", fds_before, fds_after);
  EXPECT_LE(fds_after, fds_before) << "the daemon holds more descriptors than before";

  std::string log = daemon.log();
  size_t critical = 0;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    // "DATE TIME LEVEL message": the daemon logs at error only when something of its own broke.
    std::istringstream words(line);
    std::string date, time, level;
    words >> date >> time >> level;
    if (level == "critical" || level == "error") {
      if (++critical <= 5) ADD_FAILURE() << "daemon logged: " << line;
    }
  }
  std::printf("wire fuzz: daemon log %zu bytes\n", log.size());
  good.Close();
  int status = daemon.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "daemon exit status " << status;
}

}  // namespace
}  // namespace shmlease
