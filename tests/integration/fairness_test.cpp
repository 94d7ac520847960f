// Fair under abuse (issue 14, points 6, 7 and 9), each attack as a test that shows it failing:
// another uid queueing 200,000 waits slows nobody and stalls nobody when it leaves; waits are
// bounded per connection and per uid; an exclusive lease takes write permission; a caller who may
// not read a segment learns nothing about it; a removed segment's quota is paid by whoever keeps
// it alive. As root the attacker is uid 65534 (else this same user, and the access checks that
// need a second uid say so).
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <tuple>
#include <memory>
#include <string>
#include <vector>

#include "daemon_test.hpp"
#include "errc_of.hpp"
#include "raw_socket.hpp"
#include "wait_for.hpp"
#include "shmlease/client.hpp"

namespace shmlease {
namespace {

using testing::CodeOf;
using testing::DaemonProcess;
using testing::RawSocket;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

bool Root() { return ::geteuid() == 0; }

// Lets a process of another uid reach the socket.
void OpenSocketToOthers(const DaemonProcess& daemon) {
  ASSERT_EQ(::chmod(daemon.dir().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(daemon.socket_path().c_str(), 0666), 0);
}

// Forks a child that becomes uid/gid 65534 (as root; else stays this user) and runs `body`,
// whose return value is its exit status (99 when it throws).
template <typename F>
pid_t AsAnotherUser(F&& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (Root() && (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
      ::_exit(90);
    }
    // Nothing may escape into gtest, which would go on to run the other tests in this child.
    int status = 99;
    try {
      status = body();
    } catch (const std::exception& e) {
      std::cerr << "as another user: " << e.what() << "\n";
    } catch (...) {
    }
    ::_exit(status);
  }
  return pid;
}

int ExitStatus(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs `body` as another user and returns its exit status (0: every check in it held).
template <typename F>
int RunAsOther(F&& body) {
  return ExitStatus(AsAnotherUser(std::forward<F>(body)));
}

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// The victim's acquire+release round trips, in microseconds.
std::vector<double> VictimRounds(Client& victim, int rounds) {
  std::vector<double> us;
  us.reserve(rounds);
  for (int i = 0; i < rounds; ++i) {
    auto start = Clock::now();
    { Lease lease = victim.Acquire("victim", Mode::kWrite, {.exclusive = true}); }
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  return us;
}

constexpr int kAttackConnections = 10;
// 200,000 in all, the number, in the plain build. Under ASan and TSan (the daemon is
// built with them too, and runs each request 5-20x slower) a tenth: those stages look for memory
// errors and races on the same paths; the plain stage holds the figures.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kWaitsPerConnection = 2000;
#else
constexpr int kWaitsPerConnection = 20000;
#endif

// The attack of issue 14, on the daemon's default limits (which allow it: with queues that cost
// only their own work it is harmless). Ten connections of another uid each take an exclusive lease
// on a segment of their own and queue 20,000 more exclusive acquires behind it, pipelined on the
// raw protocol (no reply until granted), so that queueing all of them takes seconds.
TEST(Fairness, AnotherUidsTwoHundredThousandWaitersSlowNobodyAndStallNobodyWhenTheyLeave) {
  DaemonProcess daemon;
  ASSERT_NO_FATAL_FAILURE(OpenSocketToOthers(daemon));
  Client victim(daemon.socket_path());
  victim.Create("victim", 4096);
  VictimRounds(victim, 200);  // warm up
  std::vector<double> unloaded = VictimRounds(victim, 2000);

  int ready[2], go[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(go), 0);
  const std::string socket = daemon.socket_path();
  pid_t attacker = AsAnotherUser([&]() -> int {
    ::close(ready[0]);
    ::close(go[1]);
    std::vector<std::unique_ptr<RawSocket>> conns;
    for (int c = 0; c < kAttackConnections; ++c) {
      auto conn = std::make_unique<RawSocket>(socket);
      if (!conn->connected() || !conn->Hello()) return 10;
      const std::string name = "attack-" + std::to_string(c);
      if (!conn->SendRequest(proto::Create{.name = name, .size = 4096}, 2)) return 11;
      auto created = conn->ReadReply();
      if (!created || !std::holds_alternative<proto::CreateOk>(*created)) return 12;
      proto::Acquire first{name, proto::LeaseMode::kWrite, 1, 0};
      if (!conn->SendRequest(first, 3)) return 13;
      auto held = conn->ReadReply();
      if (!held || !std::holds_alternative<proto::AcquireOk>(*held)) return 14;
      std::vector<std::byte> burst;
      for (int i = 0; i < kWaitsPerConnection; ++i) {
        proto::EncodeRequest(proto::Acquire{name, proto::LeaseMode::kWrite, 1, proto::kWaitForever},
                             static_cast<uint32_t>(100 + i), 0, burst);
      }
      if (!conn->Send(burst)) return 15;
      conns.push_back(std::move(conn));
    }
    // A connection's requests are handled in order: its Pong says all its acquires are queued.
    for (auto& conn : conns) {
      if (!conn->SendRequest(proto::Ping{}, 99)) return 16;
      auto pong = conn->ReadReply(60000);
      if (!pong || !std::holds_alternative<proto::Pong>(*pong)) return 17;
    }
    char byte = 1;
    if (::write(ready[1], &byte, 1) != 1) return 18;
    (void)::read(go[0], &byte, 1);  // then every connection closes at once, with the process
    return 0;
  });
  ::close(ready[1]);
  ::close(go[0]);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1) << "the attacker did not queue its waits; exit status "
                                            << ExitStatus(attacker) << "\n" << daemon.log();
  ::close(ready[0]);

  uint32_t waiting = 0;
  for (const ClientInfo& client : victim.Stats().clients) waiting += client.waiting;
  if (Root()) {  // an administrator sees everyone's waits; a plain user its own uid's, the same
    EXPECT_EQ(waiting, static_cast<uint32_t>(kAttackConnections * kWaitsPerConnection));
  }
  EXPECT_EQ(victim.Stat("attack-3").waiting, static_cast<uint32_t>(kWaitsPerConnection));

  // Within 2x the unloaded median. Medians of 2,000 rounds; a busy machine can still slow one
  // measurement, so it is taken up to three times (the walk of every queue the issue found made
  // each round ~1 s, which no retry hides).
  const double quiet = Median(unloaded);
  double loaded = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    loaded = Median(VictimRounds(victim, 2000));
    if (loaded < 2 * quiet) break;
  }
  EXPECT_LT(loaded, 2 * quiet) << "victim's acquire+release median: " << quiet
                               << " us unloaded, " << loaded << " us with 200,000 others waiting";

  // The attacker leaves, all ten connections at once: the victim keeps being served.
  ASSERT_EQ(::write(go[1], &byte, 1), 1);
  ::close(go[1]);
  std::vector<double> teardown;
  const auto until = Clock::now() + 1500ms;
  while (Clock::now() < until) {
    std::vector<double> round = VictimRounds(victim, 1);
    teardown.push_back(round[0]);
  }
  EXPECT_EQ(ExitStatus(attacker), 0);
  const double worst = *std::max_element(teardown.begin(), teardown.end());
  EXPECT_LT(worst, 200e3) << "the victim stalled " << worst / 1e3
                          << " ms while the attacker's connections closed";
  for (const ClientInfo& client : victim.Stats().clients) {
    EXPECT_EQ(client.waiting, 0u) << "connection " << client.conn_id << " still waits";
  }
  EXPECT_EQ(victim.Stat("victim").waiting, 0u);
  std::cout << "victim acquire+release: " << quiet << " us unloaded, " << loaded
            << " us loaded (median), " << worst / 1e3 << " ms worst while "
            << kAttackConnections * kWaitsPerConnection << " waits left\n";
  testing::RemoveAllSegments(daemon);
  testing::ExpectCleanStop(daemon);
}

// An error reply to `request`, read from `conn`: its code and text (kOk when it succeeded).
std::pair<Errc, std::string> Ask(RawSocket& conn, const proto::Request& request, uint32_t id) {
  if (!conn.SendRequest(request, id)) return {Errc::kConnectionLost, "send failed"};
  auto reply = conn.ReadReply();
  if (!reply) return {Errc::kConnectionLost, "no reply"};
  if (auto* e = std::get_if<proto::ErrorReply>(&*reply)) return {e->code, e->message};
  return {Errc::kOk, ""};
}

// No reply within a moment: the request waits.
bool Waits(RawSocket& conn) { return !conn.ReadReply(100).has_value(); }

class WaiterLimits : public testing::DaemonTest {
 protected:
  WaiterLimits()
      : DaemonTest({"--max-waiters-per-connection", "3", "--max-waiters-per-uid", "5"}) {}
};

TEST_F(WaiterLimits, PerConnectionAndPerUidAreRefusedNamingTheLimit) {
  Client holder = Connect();
  holder.Create("busy", 4096);
  holder.Create("free", 4096);
  Lease held = holder.Acquire("busy", Mode::kWrite, {.exclusive = true});
  const proto::Acquire wait{"busy", proto::LeaseMode::kRead, 0, proto::kWaitForever};

  auto a = std::make_unique<RawSocket>(daemon_.socket_path());
  ASSERT_TRUE(a->Hello());
  for (uint32_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(a->SendRequest(wait, 10 + i));
    EXPECT_TRUE(Waits(*a));
  }
  auto [code, text] = Ask(*a, wait, 20);
  EXPECT_EQ(code, Errc::kLimitLeases);
  EXPECT_NE(text.find("max-waiters-per-connection"), std::string::npos) << text;
  EXPECT_NE(text.find("3 lease requests waiting"), std::string::npos) << text;
  // At the limit a request that needs no wait is granted, and one that may not wait says so.
  EXPECT_EQ(Ask(*a, proto::Acquire{"free", proto::LeaseMode::kRead, 0, proto::kWaitForever}, 21)
                .first,
            Errc::kOk);
  EXPECT_EQ(Ask(*a, proto::Acquire{"busy", proto::LeaseMode::kRead, 0, 0}, 22).first,
            Errc::kTimeout);

  RawSocket b(daemon_.socket_path());  // the same uid: two more, then its uid is at 5
  ASSERT_TRUE(b.Hello());
  for (uint32_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(b.SendRequest(wait, 10 + i));
    EXPECT_TRUE(Waits(b));
  }
  std::tie(code, text) = Ask(b, wait, 30);
  EXPECT_EQ(code, Errc::kLimitLeases);
  EXPECT_NE(text.find("max-waiters-per-uid"), std::string::npos) << text;
  EXPECT_NE(text.find("5 lease requests waiting on all its connections"), std::string::npos)
      << text;
  EXPECT_EQ(holder.Stat("busy").waiting, 5u);

  // A closed connection gives its waits back to its uid.
  a.reset();
  EXPECT_TRUE(testing::WaitFor([&] { return holder.Stat("busy").waiting == 2; }));
  ASSERT_TRUE(b.SendRequest(wait, 31));
  EXPECT_TRUE(Waits(b));
  EXPECT_EQ(holder.Stat("busy").waiting, 3u);
  // And so does a grant: every wait of b is granted once the holder lets go.
  held.Release();
  for (int i = 0; i < 3; ++i) {
    auto reply = b.ReadReply();
    ASSERT_TRUE(reply.has_value());
    EXPECT_TRUE(std::holds_alternative<proto::AcquireOk>(*reply));
  }
  EXPECT_EQ(holder.Stat("busy").waiting, 0u);
  holder.Remove("busy");
  holder.Remove("free");
}

// A closed connection's waits are withdrawn a slice at a time: when the segment is released
// before all of them are, those that reach the head are skipped, and the live waiter behind them
// is granted (nothing is granted to the closed connection, nothing stalls).
class ClosedWaits : public testing::DaemonTest {};

TEST_F(ClosedWaits, NeverHoldUpThoseBehindThem) {
  Client holder = Connect();
  holder.Create("q", 4096);
  Lease held = holder.Acquire("q", Mode::kWrite, {.exclusive = true});
  auto many = std::make_unique<RawSocket>(daemon_.socket_path());
  ASSERT_TRUE(many->Hello());
  std::vector<std::byte> burst;
  for (uint32_t i = 0; i < 10000; ++i) {  // several slices of the withdrawal
    proto::EncodeRequest(proto::Acquire{"q", proto::LeaseMode::kWrite, 1, proto::kWaitForever},
                         10 + i, 0, burst);
  }
  ASSERT_TRUE(many->Send(burst));
  ASSERT_TRUE(many->SendRequest(proto::Ping{}, 2));
  ASSERT_TRUE(many->ReadReply(60000).has_value());
  RawSocket behind(daemon_.socket_path());
  ASSERT_TRUE(behind.Hello());
  ASSERT_TRUE(behind.SendRequest(proto::Acquire{"q", proto::LeaseMode::kRead, 0, 5000}, 7));
  EXPECT_TRUE(Waits(behind));
  many.reset();
  held.Release();
  proto::Header header;
  auto reply = behind.ReadReply(3000, &header);
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(std::holds_alternative<proto::AcquireOk>(*reply));
  EXPECT_EQ(header.request_id, 7u);
  EXPECT_TRUE(testing::WaitFor([&] { return holder.Stat("q").waiting == 0; }));
  holder.Remove("q");
}

// A segment another user may read but not write: a shared read lease is fine, an exclusive one
// (which would lock the owner out) is refused; with write permission, or as owner, it is granted.
TEST(ExclusiveLeases, NeedWritePermissionOrOwnership) {
  if (!Root()) GTEST_SKIP() << "needs a second uid (run as root)";
  DaemonProcess daemon;
  ASSERT_NO_FATAL_FAILURE(OpenSocketToOthers(daemon));
  Client owner(daemon.socket_path());
  CreateOptions readable{.size = 4096};
  readable.mode = 0644;
  owner.Create("readable", readable);
  CreateOptions writable{.size = 4096};
  writable.mode = 0666;
  owner.Create("writable", writable);
  const std::string socket = daemon.socket_path();
  int status = RunAsOther([&]() -> int {
    Client c(socket);
    try {
      Lease lease = c.Acquire("readable", Mode::kRead, {.exclusive = true, .timeout = 0ms});
      return 1;
    } catch (const Error& e) {
      std::string text = e.what();
      if (e.errc() != Errc::kPermissionDenied) return 2;
      if (text.find("exclusive") == std::string::npos) return 3;
      if (text.find("needs write permission") == std::string::npos) return 4;
    }
    { Lease shared = c.Acquire("readable", Mode::kRead, {.timeout = 0ms}); }
    { Lease excl = c.Acquire("writable", Mode::kRead, {.exclusive = true, .timeout = 0ms}); }
    CreateOptions own{.size = 4096};
    own.mode = 0444;  // its owner may not write it, but owns it
    c.Create("own", own);
    { Lease excl = c.Acquire("own", Mode::kRead, {.exclusive = true, .timeout = 0ms}); }
    c.Chmod("own", 0600);  // to remove it
    c.Remove("own");
    return 0;
  });
  EXPECT_EQ(status, 0) << daemon.log();
  // The owner was never locked out.
  { Lease lease = owner.Acquire("readable", Mode::kWrite, {.timeout = 0ms}); }
  testing::RemoveAllSegments(daemon);
  testing::ExpectCleanStop(daemon);
}

// What a caller who may not read a segment learns: that the name is taken (create says so to
// anyone), nothing else: not its owner, group, mode, size or leases, in no reply and no listing.
TEST(Visibility, ACallerWhoMayNotReadASegmentLearnsNothingAboutIt) {
  if (!Root()) GTEST_SKIP() << "needs a second uid (run as root)";
  DaemonProcess daemon;
  ASSERT_NO_FATAL_FAILURE(OpenSocketToOthers(daemon));
  Client owner(daemon.socket_path());
  owner.Create("secret", 12345);  // mode 0600
  CreateOptions shared{.size = 4096};
  shared.mode = 0644;
  owner.Create("public", shared);
  Lease held = owner.Acquire("secret", Mode::kWrite);
  const std::string socket = daemon.socket_path();
  int status = RunAsOther([&]() -> int {
    RawSocket raw(socket);
    if (!raw.Hello()) return 1;
    // Every answer about "secret": permission denied, naming no owner or mode.
    std::vector<proto::Request> asks = {
        proto::Acquire{"secret", proto::LeaseMode::kRead, 0, 0},
        proto::Acquire{"secret", proto::LeaseMode::kWrite, 1, 0},
        proto::Stat{"secret"},
        proto::Remove{"secret"},
        proto::Chmod{"secret", 0666},
        proto::Create{.name = "secret", .size = 12345, .flags = proto::kCreateExistOk},
    };
    uint32_t id = 10;
    for (const proto::Request& ask : asks) {
      auto [code, text] = Ask(raw, ask, id++);
      if (code != Errc::kPermissionDenied) return 10 + static_cast<int>(id);
      for (const char* leak : {"owner 0", "uid 0", ":0", "0600", "mode", "12345", "12 KiB",
                               "held by", "pid"}) {
        if (text.find(leak) != std::string::npos) return 40 + static_cast<int>(id);
      }
    }
    // A plain create of the taken name says it exists: names are one namespace, not a secret.
    if (Ask(raw, proto::Create{.name = "secret", .size = 4096}, 30).first != Errc::kAlreadyExists) {
      return 60;
    }
    // Not listed; the readable one is, and its denials may name owner and mode.
    Client c(socket);
    std::vector<SegmentInfo> list = c.List();
    if (list.size() != 1 || list[0].name != "public") return 70;
    auto [code, text] = Ask(raw, proto::Acquire{"public", proto::LeaseMode::kWrite, 0, 0}, 31);
    if (code != Errc::kPermissionDenied || text.find("mode 0644") == std::string::npos) return 71;
    return 0;
  });
  EXPECT_EQ(status, 0) << daemon.log();
  held.Release();
  testing::RemoveAllSegments(daemon);
  testing::ExpectCleanStop(daemon);
}

// Point 9: who pays quota for a removed segment that is still leased. Whoever keeps it alive:
// the uids holding leases on it. Its owner, once it has let go, may create again; a holder who
// keeps another user's removed segment alive pays for it out of its own quota.
TEST(Quota, ARemovedSegmentIsPaidForByTheUidsThatStillLeaseIt) {
  if (!Root()) GTEST_SKIP() << "needs a second uid (run as root)";
  DaemonProcess daemon({"--quota-bytes", "64KiB"});
  ASSERT_NO_FATAL_FAILURE(OpenSocketToOthers(daemon));
  Client root(daemon.socket_path());
  const std::string socket = daemon.socket_path();
  int ready[2], go[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(go), 0);
  pid_t other = AsAnotherUser([&]() -> int {
    ::close(ready[0]);
    ::close(go[1]);
    try {
      Client c(socket);
      CreateOptions whole{.size = 64 << 10};  // its whole quota
      whole.mode = 0644;
      c.Create("given", whole);
      if (CodeOf([&] { c.Create("more", 4096); }) != Errc::kQuotaBytes) return 1;
      char byte = 1;
      if (::write(ready[1], &byte, 1) != 1) return 2;  // root leases "given" now
      if (::read(go[0], &byte, 1) != 1) return 3;
      c.Remove("given");
      // Root's lease keeps it alive, and root pays: the owner's quota is free again.
      if (CodeOf([&] { c.Create("again", whole); }) != Errc::kOk) return 4;
      // A removed segment its owner still leases is the owner's to pay.
      Lease own = c.Acquire("again", Mode::kRead);
      c.Remove("again");
      if (CodeOf([&] { c.Create("third", 4096); }) != Errc::kQuotaBytes) return 5;
      own.Release();  // the last lease: "again" is freed
      if (CodeOf([&] { c.Create("third", 4096); }) != Errc::kOk) return 6;
      c.Remove("third");
      return 0;
    } catch (const std::exception& e) {
      return 7;
    }
  });
  ::close(ready[1]);
  ::close(go[0]);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1) << daemon.log();
  Lease kept = root.Acquire("given", Mode::kRead);
  ASSERT_EQ(::write(go[1], &byte, 1), 1);
  EXPECT_EQ(ExitStatus(other), 0) << daemon.log();
  ::close(ready[0]);
  ::close(go[1]);
  // Root keeps uid 65534's removed 64 KiB alive: it is root's to pay now.
  try {
    root.Create("mine", 4096);
    ADD_FAILURE() << "root's create passed its quota";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kQuotaBytes);
    EXPECT_NE(std::string(e.what()).find("removed segments it still holds leases on"),
              std::string::npos)
        << e.what();
  }
  kept.Release();
  EXPECT_EQ(CodeOf([&] { root.Create("mine", 4096); }), Errc::kOk);
  testing::RemoveAllSegments(daemon);
  testing::ExpectCleanStop(daemon);
}

}  // namespace
}  // namespace shmlease
