#include "connection.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon_socket.hpp"
#include "shmlease/codec.hpp"
#include "shmlease/fd_io.hpp"

// The client connection's rooms on their own, over a socketpair with a fake daemon on the other
// end: the framed socket, the request multiplexer, the mapping cache. No daemon runs.

namespace shmlease::detail {
namespace {

using proto::DecodeStatus;

// A connected pair: the client's end (owned by a FramedSocket) and the fake daemon's.
struct Pair {
  Pair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    client = fds[0];
    peer = fds[1];
  }
  ~Pair() {
    if (peer >= 0) ::close(peer);
  }
  void ClosePeer() {
    ::close(peer);
    peer = -1;
  }
  int client = -1;  // owned by the FramedSocket made from it
  int peer = -1;
};

std::vector<std::byte> ReplyFrame(const proto::Reply& reply, uint32_t id, uint16_t flags = 0) {
  std::vector<std::byte> frame;
  proto::EncodeReply(reply, id, flags, frame);
  return frame;
}

void Write(int fd, std::span<const std::byte> bytes) {
  ASSERT_TRUE(WriteAll(fd, bytes.data(), bytes.size())) << std::strerror(errno);
}

// Sends `bytes` with `fds` as SCM_RIGHTS in one sendmsg.
void SendWithFds(int fd, std::span<const std::byte> bytes, const std::vector<int>& fds) {
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  ASSERT_EQ(::sendmsg(fd, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()))
      << std::strerror(errno);
}

// --- FramedSocket ---

TEST(FramedSocketTest, AFrameSplitAcrossReadsComesWhole) {
  Pair pair;
  FramedSocket socket(pair.client);
  std::vector<std::byte> frame = ReplyFrame(proto::ErrorReply{Errc::kNotFound, "no such"}, 7);
  Write(pair.peer, std::span(frame).first(5));
  ASSERT_EQ(socket.Read(), FramedSocket::ReadStatus::kRead);
  EXPECT_EQ(socket.NextFrame().status, DecodeStatus::kNeedMore);
  Write(pair.peer, std::span(frame).subspan(5, 20));
  ASSERT_EQ(socket.Read(), FramedSocket::ReadStatus::kRead);
  EXPECT_EQ(socket.NextFrame().status, DecodeStatus::kNeedMore);
  Write(pair.peer, std::span(frame).subspan(25));
  ASSERT_EQ(socket.Read(), FramedSocket::ReadStatus::kRead);
  proto::FrameResult got = socket.NextFrame();
  ASSERT_EQ(got.status, DecodeStatus::kOk);
  EXPECT_EQ(got.header.request_id, 7u);
  proto::Reply reply;
  Errc error;
  std::string reason;
  ASSERT_TRUE(proto::DecodeReply(got.header, got.body, reply, error, reason)) << reason;
  EXPECT_EQ(std::get<proto::ErrorReply>(reply).message, "no such");
  EXPECT_EQ(socket.NextFrame().status, DecodeStatus::kNeedMore);
}

TEST(FramedSocketTest, SeveralFramesInOneReadComeInOrder) {
  Pair pair;
  FramedSocket socket(pair.client);
  std::vector<std::byte> bytes;
  for (uint32_t id = 1; id <= 3; ++id) proto::EncodeReply(proto::Pong{}, id, 0, bytes);
  proto::EncodeReply(proto::Pong{}, 4, 0, bytes);
  bytes.resize(bytes.size() - 3);  // the fourth is cut short
  Write(pair.peer, bytes);
  ASSERT_EQ(socket.Read(), FramedSocket::ReadStatus::kRead);
  for (uint32_t id = 1; id <= 3; ++id) {
    proto::FrameResult got = socket.NextFrame();
    ASSERT_EQ(got.status, DecodeStatus::kOk);
    EXPECT_EQ(got.header.request_id, id);
  }
  EXPECT_EQ(socket.NextFrame().status, DecodeStatus::kNeedMore);
}

TEST(FramedSocketTest, MalformedBytesAreBad) {
  Pair pair;
  FramedSocket socket(pair.client);
  std::vector<std::byte> garbage(proto::kHeaderSize, std::byte{0x5A});
  Write(pair.peer, garbage);
  ASSERT_EQ(socket.Read(), FramedSocket::ReadStatus::kRead);
  EXPECT_EQ(socket.NextFrame().status, DecodeStatus::kBad);
}

TEST(FramedSocketTest, APeerThatClosesMidFrameEndsTheStream) {
  Pair pair;
  FramedSocket socket(pair.client);
  std::vector<std::byte> frame = ReplyFrame(proto::Pong{}, 1);
  Write(pair.peer, std::span(frame).first(frame.size() - 1));
  pair.ClosePeer();
  ASSERT_EQ(socket.Read(), FramedSocket::ReadStatus::kRead);
  EXPECT_EQ(socket.NextFrame().status, DecodeStatus::kNeedMore);
  EXPECT_EQ(socket.Read(), FramedSocket::ReadStatus::kClosed);
  EXPECT_TRUE(socket.PeerHungUp());
}

TEST(FramedSocketTest, APollThatTimesOutReadsNothing) {
  Pair pair;
  FramedSocket socket(pair.client);
  EXPECT_EQ(socket.Read(/*poll_ms=*/5), FramedSocket::ReadStatus::kNothing);
  EXPECT_FALSE(socket.PeerHungUp());
}

TEST(FramedSocketTest, DescriptorsArriveWithTheirFrame) {
  Pair pair;
  FramedSocket socket(pair.client);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  std::vector<std::byte> frame = ReplyFrame(proto::Pong{}, 3, proto::kFlagFd);
  SendWithFds(pair.peer, frame, {pipe_fds[1]});
  ::close(pipe_fds[1]);
  ASSERT_EQ(socket.Read(), FramedSocket::ReadStatus::kRead);
  proto::FrameResult got = socket.NextFrame();
  ASSERT_EQ(got.status, DecodeStatus::kOk);
  EXPECT_NE(got.header.flags & proto::kFlagFd, 0);
  Descriptor passed = socket.TakeDescriptor();
  ASSERT_EQ(passed.status, Descriptor::Status::kOk);
  // It is the pipe's write end, close-on-exec.
  EXPECT_NE(::fcntl(passed.fd, F_GETFD) & FD_CLOEXEC, 0);
  ASSERT_EQ(::write(passed.fd, "x", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(pipe_fds[0], &c, 1), 1);
  EXPECT_EQ(c, 'x');
  ::close(passed.fd);
  ::close(pipe_fds[0]);
  EXPECT_EQ(socket.TakeDescriptor().status, Descriptor::Status::kMissing);
}

TEST(FramedSocketTest, DescriptorsBeyondWhatOneReadTakesAreReportedDropped) {
  Pair pair;
  FramedSocket socket(pair.client);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(devnull, 0);
  std::vector<int> fds(kMaxFdsPerRead + 4, devnull);
  SendWithFds(pair.peer, ReplyFrame(proto::Pong{}, 1, proto::kFlagFd), fds);
  ::close(devnull);
  ASSERT_EQ(socket.Read(), FramedSocket::ReadStatus::kRead);
  for (size_t i = 0; i < kMaxFdsPerRead; ++i) {
    Descriptor passed = socket.TakeDescriptor();
    ASSERT_EQ(passed.status, Descriptor::Status::kOk) << i;
    ::close(passed.fd);
  }
  // The kernel says only that some were cut (MSG_CTRUNC): one counts as dropped per read.
  EXPECT_EQ(socket.TakeDescriptor().status, Descriptor::Status::kDropped);
  EXPECT_EQ(socket.TakeDescriptor().status, Descriptor::Status::kMissing);
  EXPECT_NE(FramedSocket::DroppedReason().find("RLIMIT_NOFILE"), std::string::npos);
}

TEST(FramedSocketTest, ReplaceStartsFromTheLeftoverAndForgetsTheOldSocket) {
  Pair old_pair, new_pair;
  FramedSocket socket(old_pair.client);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  SendWithFds(old_pair.peer, ReplyFrame(proto::Pong{}, 1, proto::kFlagFd), {devnull});
  ::close(devnull);
  ASSERT_EQ(socket.Read(), FramedSocket::ReadStatus::kRead);
  {
    auto hold = socket.HoldSends();
    socket.Replace(new_pair.client, ReplyFrame(proto::Pong{}, 9));
  }
  proto::FrameResult got = socket.NextFrame();  // from the leftover, without a read
  ASSERT_EQ(got.status, DecodeStatus::kOk);
  EXPECT_EQ(got.header.request_id, 9u);
  EXPECT_EQ(socket.TakeDescriptor().status, Descriptor::Status::kMissing);
  // The old socket is closed: its peer sees end of file.
  char c;
  EXPECT_EQ(::read(old_pair.peer, &c, 1), 0);
  // Sends go to the new one.
  std::vector<std::byte> frame;
  proto::EncodeRequest(proto::Ping{}, 5, 0, frame);
  ASSERT_TRUE(socket.Send(frame));
  std::vector<std::byte> in(frame.size());
  ASSERT_TRUE(ReadAll(new_pair.peer, in.data(), in.size()));
  EXPECT_EQ(in, frame);
}

// --- RequestMux ---

// A fake daemon's end: reads whole requests, answers as the test says.
class FakeDaemon {
 public:
  explicit FakeDaemon(int fd) : fd_(fd) {}

  struct Received {
    proto::Header header;
    proto::Request request;
  };
  Received Next() {
    for (;;) {
      proto::FrameResult frame = proto::DecodeFrame(buf_, 1 << 20);
      if (frame.status == DecodeStatus::kOk) {
        Received got{frame.header, {}};
        Errc error;
        std::string reason;
        EXPECT_TRUE(proto::DecodeRequest(frame.header, frame.body, got.request, error, reason))
            << reason;
        buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(frame.consumed));
        return got;
      }
      EXPECT_EQ(frame.status, DecodeStatus::kNeedMore);
      std::byte chunk[4096];
      ssize_t n = ::read(fd_, chunk, sizeof(chunk));
      if (n <= 0) {
        ADD_FAILURE() << "the client closed the socket";
        return {};
      }
      buf_.insert(buf_.end(), chunk, chunk + n);
    }
  }
  void Answer(const proto::Reply& reply, uint32_t id) { Write(fd_, ReplyFrame(reply, id)); }

 private:
  int fd_;
  std::vector<std::byte> buf_;
};

// Records what the multiplexer shows its owner.
class RecordingHook : public ReplyHook {
 public:
  bool OnReply(const proto::Header& header, const proto::Reply& reply, Response& response,
               bool awaited) override {
    seen.push_back({header.request_id, awaited});
    response.lease_handle = header.request_id + 1000;  // the hook's extras reach the caller
    return !std::holds_alternative<proto::SegmentGone>(reply);
  }
  std::vector<std::pair<uint32_t, bool>> seen;  // under the multiplexer's lock
};

struct MuxFixture : ::testing::Test {
  Pair pair;
  FramedSocket socket{pair.client};
  RecordingHook hook;
  RequestMux mux{socket, hook, "/test/socket"};
  FakeDaemon daemon{pair.peer};
};

std::string NameOf(const proto::Request& request) { return std::get<proto::Stat>(request).name; }

TEST_F(MuxFixture, RepliesReachTheirCallersWhateverTheOrder) {
  constexpr int kCallers = 4;
  std::vector<std::optional<Response>> got(kCallers);
  std::vector<std::thread> callers;
  for (int i = 0; i < kCallers; ++i) {
    callers.emplace_back(
        [&, i] { got[i] = mux.Call(proto::Stat{"s" + std::to_string(i)}, nullptr); });
  }
  // Every request is in before any answer, and the answers go out last first.
  std::vector<FakeDaemon::Received> requests;
  for (int i = 0; i < kCallers; ++i) requests.push_back(daemon.Next());
  for (auto it = requests.rbegin(); it != requests.rend(); ++it) {
    daemon.Answer(proto::ErrorReply{Errc::kNotFound, NameOf(it->request)}, it->header.request_id);
  }
  for (auto& t : callers) t.join();
  for (int i = 0; i < kCallers; ++i) {
    ASSERT_TRUE(got[i].has_value()) << i;
    auto* err = std::get_if<proto::ErrorReply>(&got[i]->reply);
    ASSERT_NE(err, nullptr);
    EXPECT_EQ(err->message, "s" + std::to_string(i));
    EXPECT_GT(got[i]->lease_handle, 1000u);
  }
  EXPECT_FALSE(mux.dead());
}

TEST_F(MuxFixture, AnswersToOneWayRequestsAndConsumedMessagesReachNobody) {
  ASSERT_TRUE(mux.SendOneWay(proto::Release{42}));
  FakeDaemon::Received release = daemon.Next();
  EXPECT_NE(release.header.flags & proto::kFlagNoReply, 0);
  EXPECT_EQ(std::get<proto::Release>(release.request).lease_id, 42u);
  std::thread caller([&] {
    std::optional<Response> response = mux.Call(proto::Ping{}, nullptr);
    ASSERT_TRUE(response.has_value());
    EXPECT_TRUE(std::holds_alternative<proto::Pong>(response->reply));
  });
  FakeDaemon::Received ping = daemon.Next();
  daemon.Answer(proto::ErrorReply{Errc::kNotFound, "no lease 42"}, release.header.request_id);
  daemon.Answer(proto::SegmentGone{5}, 0);
  daemon.Answer(proto::Pong{}, ping.header.request_id);
  caller.join();
  auto lock = mux.Lock();
  ASSERT_EQ(hook.seen.size(), 3u);
  EXPECT_EQ(hook.seen[0], std::make_pair(release.header.request_id, false));
  EXPECT_EQ(hook.seen[1], std::make_pair(0u, false));
  EXPECT_EQ(hook.seen[2], std::make_pair(ping.header.request_id, true));
}

TEST_F(MuxFixture, AnInterruptedWaitSendsACancelAndStillTakesTheAnswer) {
  std::atomic<int> polls{0};
  std::function<bool()> interrupted = [&] { return ++polls >= 2; };
  CallControl control;
  control.interrupted = &interrupted;
  std::optional<Response> response;
  std::thread caller([&] { response = mux.Call(proto::Stat{"slow"}, &control); });
  FakeDaemon::Received acquire = daemon.Next();
  FakeDaemon::Received cancel = daemon.Next();  // comes after a poll or two
  EXPECT_NE(cancel.header.flags & proto::kFlagNoReply, 0);
  EXPECT_EQ(std::get<proto::Cancel>(cancel.request).request_id, acquire.header.request_id);
  daemon.Answer(proto::ErrorReply{Errc::kCancelled, "cancelled"}, acquire.header.request_id);
  caller.join();
  EXPECT_TRUE(control.cancelled);
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(std::get<proto::ErrorReply>(response->reply).code, Errc::kCancelled);
  EXPECT_EQ(polls.load(), 2);
}

TEST_F(MuxFixture, APeerThatHangsUpWakesEveryWaiter) {
  std::vector<std::thread> callers;
  std::atomic<int> lost{0};
  for (int i = 0; i < 3; ++i) {
    callers.emplace_back([&] {
      if (!mux.Call(proto::Ping{}, nullptr)) ++lost;
    });
  }
  for (int i = 0; i < 3; ++i) daemon.Next();
  pair.ClosePeer();
  for (auto& t : callers) t.join();
  EXPECT_EQ(lost.load(), 3);
  EXPECT_TRUE(mux.dead());
  auto lock = mux.Lock();
  EXPECT_TRUE(mux.reconnectable());
  EXPECT_EQ(mux.DeadError().errc(), Errc::kConnectionLost);
  EXPECT_NE(mux.dead_reason().find("/test/socket"), std::string::npos);
}

TEST_F(MuxFixture, AnErrorToNoRequestIsTheDaemonRefusingTheConnection) {
  std::optional<Response> response;
  std::thread caller([&] { response = mux.Call(proto::Ping{}, nullptr); });
  daemon.Next();
  daemon.Answer(proto::ErrorReply{Errc::kLimitConnections, "too many connections"}, 0);
  caller.join();
  EXPECT_FALSE(response.has_value());
  auto lock = mux.Lock();
  EXPECT_FALSE(mux.reconnectable());
  EXPECT_EQ(mux.DeadError().errc(), Errc::kLimitConnections);
  EXPECT_STREQ(mux.DeadError().what(), "too many connections");
}

TEST_F(MuxFixture, AMalformedReplyKillsTheConnection) {
  std::optional<Response> response;
  std::thread caller([&] { response = mux.Call(proto::Ping{}, nullptr); });
  daemon.Next();
  Write(pair.peer, std::vector<std::byte>(proto::kHeaderSize, std::byte{0x5A}));
  caller.join();
  EXPECT_FALSE(response.has_value());
  EXPECT_TRUE(mux.dead());
  EXPECT_FALSE(mux.SendOneWay(proto::Ping{}));
  auto lock = mux.Lock();
  EXPECT_EQ(mux.dead_reason().rfind("shmleased sent a malformed reply", 0), 0u);
}

// --- MappingCache ---

proto::AcquireOk Grant(uint64_t segment, proto::LeaseMode mode) {
  proto::AcquireOk ok;
  ok.lease_id = 1;
  ok.mode = mode;
  ok.info.id = segment;
  ok.info.name = "seg" + std::to_string(segment);
  ok.info.size = 4096;
  ok.info.page_size = 4096;
  return ok;
}

TEST(MappingCacheTest, APassedDescriptorIsMappedOnceAndReused) {
  int fd = ::memfd_create("connection_test", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  MappingCache cache;
  Descriptor passed{Descriptor::Status::kOk, fd};
  MapOutcome first = cache.Map(Grant(1, proto::LeaseMode::kWrite), &passed);
  ASSERT_TRUE(first.mapping) << first.message;
  EXPECT_TRUE(first.mapping->writable);
  static_cast<char*>(first.mapping->address)[0] = 'w';
  MapOutcome again = cache.Map(Grant(1, proto::LeaseMode::kWrite), nullptr);
  EXPECT_EQ(again.mapping, first.mapping);
  // Another mode is another mapping, which the daemon must pass.
  MapOutcome read = cache.Map(Grant(1, proto::LeaseMode::kRead), nullptr);
  EXPECT_FALSE(read.mapping);
  EXPECT_EQ(read.error, Errc::kMapFailed);
  EXPECT_EQ(read.message, "no mapping of segment 'seg1' in this process");
  ASSERT_EQ(cache.Snapshot().size(), 1u);
  std::string why;
  EXPECT_TRUE(Populate(*first.mapping, 4096, why)) << why;
  EXPECT_EQ(static_cast<char*>(first.mapping->address)[0], 'w');
  cache.Forget(1);
  EXPECT_TRUE(cache.Snapshot().empty());
  EXPECT_FALSE(cache.Map(Grant(1, proto::LeaseMode::kWrite), nullptr).mapping);
}

TEST(MappingCacheTest, ADroppedDescriptorSaysSoUntilTheNextConnection) {
  MappingCache cache;
  Descriptor dropped{Descriptor::Status::kDropped, -1};
  MapOutcome first = cache.Map(Grant(2, proto::LeaseMode::kRead), &dropped);
  EXPECT_FALSE(first.mapping);
  EXPECT_EQ(first.message.rfind("cannot receive the descriptor of segment 'seg2': this process "
                                "has reached its limit of open files (RLIMIT_NOFILE ",
                                0),
            0u);
  MapOutcome later = cache.Map(Grant(2, proto::LeaseMode::kRead), nullptr);
  EXPECT_NE(later.message.find("was dropped earlier on this connection"), std::string::npos);
  cache.Retain({});
  EXPECT_EQ(cache.Map(Grant(2, proto::LeaseMode::kRead), nullptr).message,
            "no mapping of segment 'seg2' in this process");
  Descriptor missing{Descriptor::Status::kMissing, -1};
  EXPECT_EQ(cache.Map(Grant(2, proto::LeaseMode::kRead), &missing).message,
            "shmleased announced a descriptor that did not arrive");
}

// --- LeaseTable ---

TEST(LeaseTableTest, AReclaimRenumbersRestoredLeasesAndLosesRefusedOnes) {
  LeaseTable table;
  proto::AcquireOk a = Grant(1, proto::LeaseMode::kRead);
  a.lease_id = 10;
  proto::AcquireOk b = Grant(2, proto::LeaseMode::kWrite);
  b.lease_id = 20;
  b.exclusive = 1;
  proto::AcquireOk c = Grant(3, proto::LeaseMode::kRead);
  c.lease_id = 30;
  uint64_t ha = table.Add(a), hb = table.Add(b), hc = table.Add(c);
  EXPECT_EQ(table.Id(hb), 20u);
  LeaseTable::Snapshot taken = table.Take();
  ASSERT_EQ(taken.size(), 3u);
  EXPECT_EQ(table.Remove(hc), std::optional<uint64_t>(30));  // let go while reconnecting
  std::vector<proto::ReclaimResult> results;
  for (const auto& [handle, lease] : taken) {
    if (handle == hb) {
      EXPECT_TRUE(lease.exclusive);
      EXPECT_EQ(lease.mode, proto::LeaseMode::kWrite);
      results.push_back({lease.id, 0, Errc::kNotFound});
    } else {
      results.push_back({lease.id, lease.id + 100, Errc::kOk});
    }
  }
  std::vector<std::byte> releases;
  table.Apply(taken, results, releases);
  EXPECT_EQ(table.Id(ha), 110u);
  EXPECT_FALSE(table.Live(hb));
  EXPECT_TRUE(table.Lost(hb));
  // The one restored but let go meanwhile is released (one-way) under its new id.
  proto::FrameResult frame = proto::DecodeFrame(releases, 1 << 20);
  ASSERT_EQ(frame.status, DecodeStatus::kOk);
  EXPECT_EQ(frame.consumed, releases.size());
  EXPECT_NE(frame.header.flags & proto::kFlagNoReply, 0);
  proto::Request request;
  Errc error;
  std::string reason;
  ASSERT_TRUE(proto::DecodeRequest(frame.header, frame.body, request, error, reason)) << reason;
  EXPECT_EQ(std::get<proto::Release>(request).lease_id, 130u);

  table.LoseAll();  // a reconnect that failed
  EXPECT_TRUE(table.Lost(ha));
  EXPECT_EQ(table.Id(ha), 0u);
  EXPECT_EQ(table.Remove(ha), std::nullopt);
  EXPECT_FALSE(table.Lost(ha));  // forgotten once its Lease lets go
}

// --- Connecting and reclaiming ---

// A Unix socket in a fresh directory, removed at the end.
struct SocketDir {
  SocketDir() {
    char templ[] = "/tmp/connection-test-XXXXXX";
    dir = ::mkdtemp(templ);
    path = dir + "/d.sock";
  }
  ~SocketDir() {
    ::unlink(path.c_str());
    ::rmdir(dir.c_str());
  }
  // A socket bound to `path`, listening when `listen` is true.
  int Bind(bool listen) const {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    if (listen) {
      EXPECT_EQ(::listen(fd, 4), 0);
    }
    return fd;
  }
  std::string dir, path;
};

Errc ErrcOf(const std::function<void()>& f, std::string* what = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (what != nullptr) *what = e.what();
    return e.errc();
  }
  return Errc::kOk;
}

TEST(ConnectSocketTest, SaysWhatIsAtThePathWhenNobodyAnswers) {
  SocketDir dir;
  std::string what;
  EXPECT_EQ(ErrcOf([&] { ConnectSocket(dir.path); }, &what), Errc::kDaemonUnavailable);
  EXPECT_EQ(what.rfind("no socket at " + dir.path + " (shmleased is not running)", 0), 0u);
  int bound = dir.Bind(/*listen=*/false);
  EXPECT_EQ(ErrcOf([&] { ConnectSocket(dir.path); }, &what), Errc::kDaemonUnavailable);
  EXPECT_EQ(what.rfind("nothing listens on the socket " + dir.path, 0), 0u);
  ::close(bound);
  ::unlink(dir.path.c_str());
  ::close(::open(dir.path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  EXPECT_EQ(ErrcOf([&] { ConnectSocket(dir.path); }, &what), Errc::kDaemonUnavailable);
  EXPECT_EQ(what, dir.path + " is a regular file, not a socket");
  EXPECT_EQ(ErrcOf([&] { ConnectSocket(dir.dir); }, &what), Errc::kDaemonUnavailable);
  EXPECT_EQ(what, dir.dir + " is a directory, not a socket");
}

TEST(ConnectAndReclaimTest, GreetsAndReclaimsInMessagesThatFitTheDaemonsLimit) {
  SocketDir dir;
  int listener = dir.Bind(/*listen=*/true);
  LeaseTable::Snapshot leases = {{1, LiveLease{10, 1, 100, proto::LeaseMode::kRead, false}},
                                 {2, LiveLease{20, 2, 200, proto::LeaseMode::kWrite, true}}};
  std::vector<proto::ReclaimMapping> mappings = {{1, 100, 0}};
  std::vector<proto::Reclaim> reclaims;
  std::thread daemon_thread([&] {
    int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    FakeDaemon daemon(fd);
    FakeDaemon::Received hello = daemon.Next();
    EXPECT_EQ(std::get<proto::Hello>(hello.request).version, proto::kVersion);
    // 0: the smallest limit, room for two leases (52 bytes) but not a mapping as well.
    daemon.Answer(proto::HelloOk{proto::kVersion, 4321, 0, "test"}, hello.header.request_id);
    FakeDaemon::Received first = daemon.Next();
    reclaims.push_back(std::get<proto::Reclaim>(first.request));
    daemon.Answer(proto::ReclaimOk{{{10, 11, Errc::kOk}, {20, 0, Errc::kNotFound}}, {}},
                  first.header.request_id);
    FakeDaemon::Received second = daemon.Next();
    reclaims.push_back(std::get<proto::Reclaim>(second.request));
    // The last answer and what follows it in one write: the rest is the caller's.
    std::vector<std::byte> bytes =
        ReplyFrame(proto::ReclaimOk{{}, mappings}, second.header.request_id);
    proto::EncodeReply(proto::SegmentGone{7}, 0, 0, bytes);
    Write(fd, bytes);
    ::close(fd);
  });
  std::atomic<bool> closed{false};
  Handshake greeting =
      ConnectAndReclaim(dir.path, leases, mappings, std::chrono::milliseconds(1000), closed);
  daemon_thread.join();
  ::close(listener);
  ASSERT_GE(greeting.fd, 0);
  ::close(greeting.fd);
  EXPECT_EQ(greeting.server_pid, 4321u);
  ASSERT_EQ(reclaims.size(), 2u);
  EXPECT_EQ(reclaims[0].leases.size(), 2u);
  EXPECT_TRUE(reclaims[0].mappings.empty());
  EXPECT_TRUE(reclaims[1].leases.empty());
  EXPECT_EQ(reclaims[1].mappings, mappings);
  ASSERT_EQ(greeting.leases.size(), 2u);
  EXPECT_EQ(greeting.leases[0].new_lease_id, 11u);
  EXPECT_EQ(greeting.leases[1].status, Errc::kNotFound);
  EXPECT_EQ(greeting.mappings, mappings);
  proto::FrameResult rest = proto::DecodeFrame(greeting.leftover, 1 << 20);
  ASSERT_EQ(rest.status, DecodeStatus::kOk);
  EXPECT_EQ(rest.header.type, proto::MsgType::kSegmentGone);
}

TEST(ConnectAndReclaimTest, GivesUpWithTheLastReason) {
  SocketDir dir;
  std::atomic<bool> closed{false};
  std::string what;
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(
      ErrcOf([&] { ConnectAndReclaim(dir.path, {}, {}, std::chrono::milliseconds(30), closed); },
             &what),
      Errc::kDaemonUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  EXPECT_EQ(what.rfind("no socket at ", 0), 0u);
  closed = true;
  EXPECT_EQ(
      ErrcOf([&] { ConnectAndReclaim(dir.path, {}, {}, std::chrono::milliseconds(30), closed); },
             &what),
      Errc::kConnectionLost);
  EXPECT_EQ(what, "the client was closed");
}

}  // namespace
}  // namespace shmlease::detail
