#include "session.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <thread>
#include <variant>

#include "errc_of.hpp"
#include "inprocess_daemon.hpp"
#include "raw_socket.hpp"
#include "shm_backend.hpp"
#include "shmlease/client.hpp"
#include "wait_for.hpp"

// Sessions (and the daemon loop around them) run in this process: each test starts the Daemon on
// a thread of its own and drives it with the real client library, in milliseconds.
namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::CodeOf;
using testing::RawSocket;
using testing::WaitFor;

using SessionTest = testing::InProcessDaemonTest;

TEST_F(SessionTest, LeasesAndReleases) {
  Client c = Connect();
  c.Ping();
  SegmentInfo info = c.Create("a", {.format = "I", .shape = {256}});
  EXPECT_EQ(info.size, 1024u);
  {
    Lease w = c.Acquire("a", Mode::kWrite);
    EXPECT_TRUE(w.held());
    w.as_writable<uint32_t>()[7] = 0xC0FFEE;
    EXPECT_EQ(c.Stat("a").writers, 1u);
  }
  EXPECT_EQ(c.Stat("a").writers, 0u) << "a release comes before every later request";
  Lease r1 = c.Acquire("a", Mode::kRead);
  Lease r2 = c.Acquire("a", Mode::kRead);
  EXPECT_EQ(r1.as<uint32_t>()[7], 0xC0FFEEu);
  EXPECT_EQ(c.Stat("a").readers, 2u);
  EXPECT_EQ(CodeOf([&] { c.Acquire("a", Mode::kWrite, {.exclusive = true, .timeout = 0ms}); }),
            Errc::kTimeout);
  r1.Release();
  r2.Release();
  EXPECT_EQ(c.Stat("a").readers, 0u);
  c.Remove("a");
  EXPECT_EQ(CodeOf([&] { c.Stat("a"); }), Errc::kNotFound);
}

TEST_F(SessionTest, ClosingAClientReclaimsItsLeases) {
  Client holder = Connect();
  Client other = Connect();
  holder.Create("a", 4096);
  Lease held = holder.Acquire("a", Mode::kWrite, {.exclusive = true});
  EXPECT_EQ(CodeOf([&] { other.Acquire("a", Mode::kRead, {.timeout = 0ms}); }), Errc::kTimeout);
  // `other` waits; closing the holder's session grants it.
  std::optional<Lease> granted;
  std::thread waiter([&] { granted = other.Acquire("a", Mode::kRead, {.timeout = 5s}); });
  ASSERT_TRUE(WaitFor([&] { return other.Stat("a").waiting == 1; }));
  EXPECT_EQ(other.Stats().connections, 2u);
  holder.Close();
  waiter.join();
  ASSERT_TRUE(granted && granted->held());
  EXPECT_TRUE(held.lost()) << "the closed client's lease is gone";
  SegmentInfo info = other.Stat("a");
  EXPECT_EQ(info.writers, 0u);
  EXPECT_EQ(info.exclusive, 0u);
  EXPECT_EQ(info.readers, 1u);
  EXPECT_TRUE(WaitFor([&] { return other.Stats().connections == 1; }));
  granted->Release();
  other.Remove("a");
}

TEST_F(SessionTest, ARemovedSegmentIsFreedAtItsLastRelease) {
  Client c = Connect();
  c.Create("a", 4096);
  Lease lease = c.Acquire("a", Mode::kWrite);
  c.Remove("a");
  EXPECT_EQ(CodeOf([&] { c.Stat("a"); }), Errc::kNotFound);
  c.Create("a", 8192);  // the name is free again at once
  EXPECT_EQ(daemon_.ShmObjects().size(), 2u) << "the leased one stays";
  lease.as_writable<uint8_t>()[0] = 1;  // and stays usable
  lease.Release();
  c.Ping();
  EXPECT_TRUE(WaitFor([&] { return daemon_.ShmObjects().size() == 1; }))
      << "freed with its last lease";
  c.Remove("a");
  EXPECT_TRUE(WaitFor([&] { return daemon_.ShmObjects().empty(); }));
}

TEST_F(SessionTest, ALeaseOfAClosedSessionOnARemovedSegmentFreesIt) {
  Client c = Connect();
  c.Create("a", 4096);
  Lease lease = c.Acquire("a", Mode::kRead);
  c.Remove("a");
  c.Close();  // the session ends holding the segment's last lease
  EXPECT_TRUE(WaitFor([&] { return daemon_.ShmObjects().empty(); }));
  EXPECT_EQ(lease.data().size(), 4096u) << "the mapping stays readable";
}

TEST_F(SessionTest, MalformedBytesCloseOnlyThatSession) {
  Client good = Connect();
  good.Create("good", {.format = "I", .shape = {16}});
  Lease lease = good.Acquire("good", Mode::kWrite);
  {
    RawSocket raw(daemon_.socket_path());
    ASSERT_TRUE(raw.Hello());
    raw.Send(testing::Bytes({'N', 'O', 'P', 'E', 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
    std::optional<proto::Reply> reply = raw.ReadReply();
    ASSERT_TRUE(reply && std::holds_alternative<proto::ErrorReply>(*reply));
    EXPECT_EQ(std::get<proto::ErrorReply>(*reply).code, Errc::kBadMessage);
    EXPECT_TRUE(raw.PeerClosed());
  }
  {
    RawSocket cut(daemon_.socket_path());  // half a header, then gone
    ASSERT_TRUE(cut.connected());
    cut.Send(testing::Bytes({'S', 'H', 'M', 'L', 0}));
  }
  good.Ping();
  EXPECT_TRUE(lease.held());
  EXPECT_EQ(good.Stat("good").writers, 1u) << "the well-behaved session keeps its lease";
  lease.as_writable<uint32_t>()[0] = 7;
  lease.Release();
  EXPECT_TRUE(WaitFor([&] { return good.Stats().connections == 1; }));
  good.Remove("good");
}

TEST_F(SessionTest, StoppingFromAnotherThreadEndsEverySession) {
  Client c = Connect();
  c.Create("a", 4096);
  Lease lease = c.Acquire("a", Mode::kWrite);
  EXPECT_EQ(daemon_.Stop(), 0);
  EXPECT_FALSE(daemon_.running());
  EXPECT_EQ(CodeOf([&] { c.Ping(); }), Errc::kConnectionLost);
  EXPECT_TRUE(daemon_.ShmObjects().empty()) << "without a state directory segments die with it";
  EXPECT_EQ(lease.data().size(), 4096u);
}

// A test process that dies by a signal runs no destructor: the next in-process daemon removes
// what it left in /dev/shm (found by the dead pid in the prefix), so nothing piles up. (Only named
// backings can be left: a memfd dies with the process.)
TEST(InProcessDaemon, RemovesWhatATestKilledBySignalLeftBehind) {
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(report[0]);
    testing::InProcessDaemon daemon(std::map<std::string, std::string>{{"backing", "named"}});
    Client c(daemon.socket_path());
    c.Create("left", 4096);
    const std::string& prefix = daemon.shm_prefix();
    (void)!::write(report[1], prefix.data(), prefix.size());
    ::close(report[1]);
    ::raise(SIGKILL);
  }
  ::close(report[1]);
  char buf[256];
  ssize_t n = ::read(report[0], buf, sizeof(buf));
  ::close(report[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  ASSERT_GT(n, 0);
  const std::string prefix(buf, static_cast<size_t>(n));
  ASSERT_EQ(server::ListShmObjects(prefix + ".").size(), 1u) << "the killed test left its segment";
  testing::InProcessDaemon next;
  EXPECT_TRUE(server::ListShmObjects(prefix + ".").empty());
}

}  // namespace
}  // namespace shmlease
