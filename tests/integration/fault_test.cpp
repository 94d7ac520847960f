// Faults with figures (docs/RELIABILITY.md, "Faults"): clients SIGKILLed at random moments while
// they lease, write, release and remove; a daemon and a client at their file-descriptor limit;
// 1000 connections at once. Each test prints its figures. The defaults are sized for CI; the
// environment scales them for by-hand runs:
//   SHMLEASE_FAULT_CLIENTS (1000)  clients killed      SHMLEASE_FAULT_SEED    the kill schedule
//   SHMLEASE_FAULT_WAVE (50)       clients at a time   SHMLEASE_FLOOD_CONNECTIONS (1000)
//   SHMLEASE_FAULT_BUDGET_S (75)   spawning stops then (after at least 200 clients)
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.hpp"
#include "env_or.hpp"
#include "wait_for.hpp"
#include "errc_of.hpp"
#include "shmlease/client.hpp"

#if defined(__SANITIZE_ADDRESS__)
// UBSan (built with ASan here) checks a polymorphic object's vtable through a pipe() it opens:
// at the exact descriptor limit that check fails and reports a false "invalid vptr".
constexpr bool kUbsanNeedsDescriptors = true;
#else
constexpr bool kUbsanNeedsDescriptors = false;
#endif

namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::CodeOf;
using testing::DaemonProcess;
using testing::EnvOr;
using testing::WaitFor;
using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Memory shared with forked children (MAP_SHARED | MAP_ANONYMOUS), unmapped on destruction.
template <typename T>
class SharedArray {
 public:
  explicit SharedArray(size_t count) : count_(count) {
    void* area =
        ::mmap(nullptr, Bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) throw std::runtime_error("mmap failed");
    items_ = static_cast<T*>(area);
    for (size_t i = 0; i < count; ++i) new (items_ + i) T();
  }
  ~SharedArray() { ::munmap(items_, Bytes()); }
  SharedArray(const SharedArray&) = delete;
  SharedArray& operator=(const SharedArray&) = delete;
  T& operator[](size_t i) { return items_[i]; }
  size_t size() const { return count_; }

 private:
  size_t Bytes() const { return std::max<size_t>(sizeof(T) * count_, 1); }
  size_t count_;
  T* items_;
};

// Raises this process's soft descriptor limit to its hard limit (children and a daemon started
// afterwards inherit it); returns the new soft limit.
uint64_t RaiseDescriptorLimit() {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  ::getrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur;
}

// --- 1000 clients killed at random moments ---------------------------------------------------

// Where a child was when it was killed: written by the child, read by the parent once it is dead.
enum Phase : int { kForked = 0, kConnected = 1, kHoldingLease = 2, kBetweenLeases = 3 };

struct ChildBoard {
  std::atomic<int> phase;
  std::atomic<uint32_t> steps;  // requests and writes done: the parent kills at a random step
  std::atomic<uint32_t> iterations;
  // Own segments "c<child>-<k>" for k below this were removed and the daemon confirmed it.
  std::atomic<uint32_t> removed_confirmed;
  std::atomic<int> failed;  // the child caught an error (it should only ever be killed)
  char error[160];
};

constexpr int kSharedSegments = 4;
constexpr size_t kSharedSize = 64 << 10;
constexpr size_t kOwnSize = 16 << 10;
constexpr uint32_t kStepsPerIteration = 13;

std::string SharedName(uint64_t k) { return "shared-" + std::to_string(k % kSharedSegments); }
std::string OwnName(size_t child, uint32_t k) {
  return "c" + std::to_string(child) + "-" + std::to_string(k);
}

// A child's life until it is killed: leases on the shared segments and on segments of its own,
// writes through them, releases in both orders, removes while leased and after, asks for stats.
[[noreturn]] void RunVictim(const std::string& socket, size_t index, ChildBoard& board) {
  auto step = [&] { board.steps.fetch_add(1, std::memory_order_relaxed); };
  try {
    Client c(socket);
    c.set_reconnect_timeout(0ms);  // the daemon never goes away here: any break is a failure
    board.phase = kConnected;
    step();
    c.Create("keep-" + std::to_string(index), 4096);  // created, never removed
    step();
    for (uint32_t k = 0;; ++k) {
      Lease r = c.Acquire(SharedName(k), Mode::kRead);
      board.phase = kHoldingLease;
      step();
      uint64_t sum = 0;
      for (size_t i = 0; i < r.size(); i += 4096) sum += static_cast<uint64_t>(r.data()[i]);
      step();
      {
        Lease w = c.Acquire(SharedName(k + 1), Mode::kWrite);
        step();
        std::memset(w.writable_data().data(), static_cast<int>((index + sum) & 0xFF), 4096);
      }
      step();
      std::string own = OwnName(index, k);
      c.Create(own, kOwnSize);
      step();
      Lease mine = c.Acquire(own, Mode::kWrite);
      step();
      std::memset(mine.writable_data().data(), 0x5A, kOwnSize);
      step();
      if (k % 2 == 0) {
        c.Remove(own);  // while leased: freed when the lease goes (or the process dies)
        board.removed_confirmed = k + 1;
        step();
        mine.Release();
      } else {
        mine.Release();
        step();
        c.Remove(own);
        board.removed_confirmed = k + 1;
      }
      step();
      r.Release();
      board.phase = kBetweenLeases;
      step();
      if (k % 8 == 0) c.Stats();
      step();
      board.iterations = k + 1;
    }
  } catch (const std::exception& e) {
    std::snprintf(board.error, sizeof(board.error), "%s", e.what());
    board.failed = 1;
  }
  ::_exit(3);
}

TEST(Faults, ThousandClientsKilledAtRandomMomentsLeaveNoLeaseAndNoSegment) {
  const size_t clients = EnvOr("SHMLEASE_FAULT_CLIENTS", 1000);
  const size_t wave = std::max<uint64_t>(1, EnvOr("SHMLEASE_FAULT_WAVE", 50));
  const uint64_t seed = EnvOr("SHMLEASE_FAULT_SEED", static_cast<uint64_t>(::time(nullptr)));
  std::printf(
      "fault: %zu clients, %zu at a time, seed %llu (SHMLEASE_FAULT_SEED=%llu repeats it)\n",
      clients, wave, static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  // Room for every "keep-" segment and the own ones a kill leaves unremoved.
  DaemonProcess daemon(
      {"--log-level", "info", "--max-segments", std::to_string(3 * clients + 4 * wave + 64)});
  Client checker(daemon.socket_path());
  for (int s = 0; s < kSharedSegments; ++s) checker.Create(SharedName(s), kSharedSize);

  SharedArray<ChildBoard> boards(clients);
  std::mt19937_64 rng(seed);
  // Kill points in the child's progress rather than in wall time, so that a loaded machine
  // (where a child may not run for a while) still spreads the kills over every phase: step 0 is
  // before it has connected; the parent sees the step and kills while the child runs on, so the
  // kill lands somewhere after it.
  std::uniform_int_distribution<uint32_t> kill_step(0, 6 * kStepsPerIteration);
  struct Running {
    pid_t pid;
    size_t index;
    uint32_t kill_step;
    Clock::time_point started;
  };
  std::vector<Running> running;
  std::vector<Running> dying;  // killed, not reaped yet: the parent does not wait for teardown
  std::map<int, size_t> killed_in_phase;
  size_t spawned = 0, exited_on_their_own = 0, stuck = 0;
  uint64_t iterations = 0;
  auto reap = [&](bool block) {
    for (auto it = dying.begin(); it != dying.end();) {
      int status = 0;
      if (::waitpid(it->pid, &status, block ? 0 : WNOHANG) != it->pid) {
        ++it;
        continue;
      }
      ChildBoard& board = boards[it->index];
      if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        ++exited_on_their_own;
        ADD_FAILURE() << "client " << it->index << " ended on its own (status " << status
                      << "): " << (board.failed ? board.error : "no error recorded");
      }
      ++killed_in_phase[board.phase.load()];
      iterations += board.iterations.load();
      it = dying.erase(it);
    }
  };
  auto t0 = Clock::now();
  // A saturated machine or a sanitizer build stops spawning once the budget is used up (after at
  // least 200 clients) and says so; the checks are the same.
  const auto budget = std::chrono::seconds(EnvOr("SHMLEASE_FAULT_BUDGET_S", 75));
  size_t planned = clients;
  while (spawned < planned || !running.empty()) {
    if (planned == clients && spawned >= 200 && Clock::now() - t0 > budget) {
      planned = spawned;
      std::printf("fault: time budget used up: %zu of %zu clients\n", planned, clients);
    }
    while (running.size() < wave && spawned < planned) {
      size_t index = spawned++;
      uint32_t at = kill_step(rng);
      pid_t pid = ::fork();
      ASSERT_GE(pid, 0) << "fork failed";
      if (pid == 0) RunVictim(daemon.socket_path(), index, boards[index]);
      running.push_back({pid, index, at, Clock::now()});
    }
    for (auto it = running.begin(); it != running.end();) {
      ChildBoard& board = boards[it->index];
      bool due =
          board.steps.load(std::memory_order_relaxed) >= it->kill_step || board.failed.load();
      // A child that makes no progress for a minute hangs (a client or daemon bug).
      if (!due && Clock::now() - it->started > 60s) {
        ++stuck;
        ADD_FAILURE() << "client " << it->index << " stuck at step " << board.steps.load();
        due = true;
      }
      if (!due) {
        ++it;
        continue;
      }
      ::kill(it->pid, SIGKILL);
      dying.push_back(*it);
      it = running.erase(it);
    }
    reap(false);
    std::this_thread::sleep_for(200us);
  }
  reap(true);
  const double kill_ms = MsSince(t0);

  // Every lease of the dead is gone, and the checker is the only client left.
  auto t_kill = Clock::now();
  DaemonStats stats;
  bool settled = WaitFor(
      [&] {
        stats = checker.Stats();
        return stats.leases == 0 && stats.connections == 1;
      },
      60s);
  const double settle_ms = MsSince(t_kill);
  ASSERT_TRUE(settled) << stats.leases << " leases and " << stats.connections
                       << " connections left\n"
                       << daemon.log().substr(0, 4000);
  ASSERT_EQ(stats.clients.size(), 1u);
  EXPECT_TRUE(stats.clients[0].leases.empty());

  // Every segment still listed is on /dev/shm and nothing else is; no own segment whose removal
  // the daemon confirmed is left; nothing is "removed but leased" any more. A create that a
  // killed client sent just before it died may still be completing on the daemon's worker thread
  // (counted, not yet listed): wait for the daemon to settle, bounded, then check.
  std::vector<SegmentInfo> listed;
  std::set<std::string> expected_objects;
  std::vector<std::string> objects;
  WaitFor(
      [&] {
        stats = checker.Stats();
        listed = checker.List();
        objects = daemon.ShmObjects();
        expected_objects.clear();
        for (const SegmentInfo& info : listed) {
          expected_objects.insert(daemon.shm_prefix() + "." + std::to_string(info.id));
        }
        return stats.segments == listed.size() &&
               std::set<std::string>(objects.begin(), objects.end()) == expected_objects;
      },
      10s);
  size_t kept = 0, own_left = 0;
  for (const SegmentInfo& info : listed) {
    EXPECT_EQ(info.readers + info.writers, 0u) << info.name;
    if (info.name.rfind("keep-", 0) == 0) ++kept;
    if (info.name[0] == 'c') {
      ++own_left;
      size_t dash = info.name.find('-');
      size_t child = std::stoul(info.name.substr(1, dash - 1));
      uint32_t k = static_cast<uint32_t>(std::stoul(info.name.substr(dash + 1)));
      EXPECT_GE(k, boards[child].removed_confirmed.load())
          << info.name << " is still listed after its removal was confirmed";
    }
  }
  EXPECT_EQ(stats.segments, listed.size()) << "removed-but-leased segments outlived their holders";
  EXPECT_EQ(std::set<std::string>(objects.begin(), objects.end()), expected_objects)
      << "/dev/shm and the daemon's segments differ";

  // The daemon still serves: a fresh segment, leased, written, read, removed.
  {
    checker.Create("after", 4096);
    Lease w = checker.Acquire("after", Mode::kWrite, {.exclusive = true, .timeout = 0ms});
    w.writable_data()[0] = std::byte{42};
    w.Release();
    Client other(daemon.socket_path());
    EXPECT_EQ(other.Acquire("after", Mode::kRead).data()[0], std::byte{42});
    checker.Remove("after");
    for (int s = 0; s < kSharedSegments; ++s) {
      checker.Acquire(SharedName(s), Mode::kWrite, {.exclusive = true, .timeout = 0ms});
    }
  }
  for (const SegmentInfo& info : listed) checker.Remove(info.name);
  EXPECT_TRUE(WaitFor([&] { return daemon.ShmObjects().empty(); }, 10s));
  EXPECT_EQ(::kill(daemon.pid(), 0), 0) << "daemon died";

  std::printf(
      "fault: %zu clients SIGKILLed in %.0f ms (%llu loop iterations done in all); phase at the "
      "kill: %zu before connecting, %zu connected, %zu holding a lease, %zu between leases\n",
      spawned, kill_ms, static_cast<unsigned long long>(iterations), killed_in_phase[kForked],
      killed_in_phase[kConnected], killed_in_phase[kHoldingLease], killed_in_phase[kBetweenLeases]);
  std::printf(
      "fault: zero leases and one client (the checker) %.1f ms after the last kill; "
      "%zu segments left (%zu keep-, %zu own created but not confirmed removed) == %zu "
      "objects in /dev/shm\n",
      settle_ms, listed.size(), kept, own_left, objects.size());
  EXPECT_EQ(exited_on_their_own, 0u);
  EXPECT_EQ(stuck, 0u);
  EXPECT_EQ(daemon.Stop(), 0) << daemon.log().substr(0, 4000);
}

// --- descriptor limits -----------------------------------------------------------------------

TEST(Faults, DaemonAtItsDescriptorLimitRefusesNewClientsClearlyAndKeepsServing) {
  DaemonProcess daemon({"--log-level", "info"});
  Client first(daemon.socket_path());
  first.Create("seg", 4096);
  first.Create("other", 4096);
  // Room for a few more descriptors than the daemon holds now (the spare one included).
  size_t base = daemon.OpenDescriptors();
  rlimit limit{base + 6, base + 6};
  ASSERT_EQ(::prlimit(daemon.pid(), RLIMIT_NOFILE, &limit, nullptr), 0) << std::strerror(errno);

  std::vector<std::unique_ptr<Client>> extra;
  std::string refusal;
  for (int i = 0; i < 32 && refusal.empty(); ++i) {
    try {
      extra.push_back(std::make_unique<Client>(daemon.socket_path()));
    } catch (const Error& e) {
      EXPECT_EQ(e.errc(), Errc::kLimitConnections) << e.what();
      refusal = e.what();
    }
  }
  ASSERT_FALSE(refusal.empty()) << "never refused at a limit of " << limit.rlim_cur;
  EXPECT_NE(refusal.find("out of file descriptors"), std::string::npos) << refusal;
  // More are refused the same way, each at once (none hangs in the listen backlog).
  auto t0 = Clock::now();
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(CodeOf([&] { Client more(daemon.socket_path()); }), Errc::kLimitConnections);
  }
  const double refuse_ms = MsSince(t0) / 20;

  // Connected clients keep being served; what needs a descriptor fails with a clear error and
  // leaves nothing behind (a lease whose descriptor cannot be passed is undone).
  first.Ping();
  EXPECT_EQ(first.Stat("seg").size, 4096u);
  try {
    first.Acquire("seg", Mode::kWrite);
    ADD_FAILURE() << "a lease was granted with no descriptor to pass";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot pass the segment's descriptor"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(first.Stats().leases, 0u) << "the lease of the failed grant is still counted\n"
                                      << daemon.log();
  if (!kUbsanNeedsDescriptors) {  // a create at the limit catches a Boost.Interprocess exception
    EXPECT_NE(CodeOf([&] { first.Create("new", 4096); }), Errc::kOk);
  }
  EXPECT_EQ(first.List().size(), 2u);

  // Once connections close, new ones are accepted and leases get their descriptors again.
  const size_t connected = extra.size() + 1;
  extra.resize(extra.size() / 2);
  Errc code = Errc::kLimitConnections;
  ASSERT_TRUE(WaitFor(
      [&] { return (code = CodeOf([&] { Client c(daemon.socket_path()); })) == Errc::kOk; }, 10s))
      << ErrcName(code);
  Lease w = first.Acquire("seg", Mode::kWrite);
  w.writable_data()[0] = std::byte{7};
  Lease r = Client(daemon.socket_path()).Acquire("seg", Mode::kRead);
  EXPECT_EQ(r.data()[0], std::byte{7});
  w.Release();
  extra.clear();
  EXPECT_TRUE(
      WaitFor([&] { return CodeOf([&] { first.Create("new", 4096); }) == Errc::kOk; }, 10s));

  std::string log = daemon.log();
  size_t episodes = 0;
  for (size_t at = log.find("out of file descriptors (limit"); at != std::string::npos;
       at = log.find("out of file descriptors (limit", at + 1)) {
    ++episodes;
  }
  EXPECT_EQ(episodes, 1u) << "logged once per episode, not once per refusal:\n" << log;
  EXPECT_NE(log.find("accepting connections again"), std::string::npos) << log;
  std::printf(
      "fault: daemon at RLIMIT_NOFILE %llu: %zu clients connected, the next refused "
      "with limit_connections in %.2f ms each; lease/create failed cleanly; accepting "
      "again after closes\n",
      static_cast<unsigned long long>(limit.rlim_cur), connected, refuse_ms);
  first.Remove("seg");
  first.Remove("other");
  first.Remove("new");
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_TRUE(daemon.ShmObjects().empty());
}

TEST(Faults, ClientAtItsDescriptorLimitGetsAClearErrorNotACrash) {
  DaemonProcess daemon;
  {
    Client c(daemon.socket_path());
    c.Create("a", 4096);
    c.Create("b", 4096);
  }
  int to_parent[2];
  ASSERT_EQ(::pipe(to_parent), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(to_parent[0]);
    std::string report;
    auto say = [&](const std::string& line) { report += line + "\n"; };
    try {
      Client c(daemon.socket_path());
      c.set_reconnect_timeout(0ms);
      // UBSan remembers each (type, vtable) pair it has checked: an Error thrown and looked at
      // before the limit spares the one thrown at the limit its pipe() (kUbsanNeedsDescriptors).
      try {
        c.Acquire("missing", Mode::kRead);
      } catch (const Error& e) {
        say("before the limit: " + std::string(ErrcName(e.errc())));
      }
      // Use up every descriptor this process may have.
      std::vector<int> filler;
      for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) filler.push_back(fd);
      // Nothing that inspects an exception runs at the limit (see kUbsanNeedsDescriptors): the
      // descriptors are given back before the error is looked at.
      std::optional<Error> at_limit;
      try {
        c.Acquire("a", Mode::kRead);
      } catch (const Error& e) {
        for (int fd : filler) ::close(fd);
        filler.clear();
        at_limit = e;
      }
      for (int fd : filler) ::close(fd);
      if (at_limit) {
        say("acquire at the limit: " + std::string(ErrcName(at_limit->errc())) + ": " +
            at_limit->what());
      } else {
        say("FAIL acquire at the limit succeeded");
      }
      c.Ping();  // the connection survives
      say("ping ok");
      Lease b = c.Acquire("b", Mode::kRead);  // a descriptor arrives again
      say(std::string("acquire after: ") + (b.valid() ? "ok" : "FAIL"));
      try {
        c.Acquire("a", Mode::kRead);
        say("again on the same connection: ok");
      } catch (const Error& e) {
        say(std::string("again on the same connection: ") + e.what());
      }
      Client fresh(daemon.socket_path());
      say(std::string("new connection: ") +
          (fresh.Acquire("a", Mode::kRead).valid() ? "ok" : "FAIL"));
    } catch (const std::exception& e) {
      say(std::string("FAIL ") + e.what());
    }
    [[maybe_unused]] ssize_t n = ::write(to_parent[1], report.data(), report.size());
    ::_exit(0);
  }
  ::close(to_parent[1]);
  std::string report;
  char buf[512];
  for (ssize_t n; (n = ::read(to_parent[0], buf, sizeof(buf))) > 0;)
    report.append(buf, static_cast<size_t>(n));
  ::close(to_parent[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::printf("%s", report.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the client crashed: " << status;
  EXPECT_EQ(report.find("FAIL"), std::string::npos) << report;
  EXPECT_NE(
      report.find("acquire at the limit: map_failed: cannot receive the descriptor of segment "
                  "'a': this process has reached its limit of open files"),
      std::string::npos)
      << report;
  EXPECT_NE(report.find("ping ok"), std::string::npos) << report;
  Client c(daemon.socket_path());
  EXPECT_TRUE(WaitFor([&] { return c.Stats().leases == 0; }, 5s));
  c.Remove("a");
  c.Remove("b");
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_TRUE(daemon.ShmObjects().empty());
}

// --- 1000 connections at once ----------------------------------------------------------------

TEST(Faults, ThousandConcurrentConnectionsAreAllServed) {
  size_t connections = EnvOr("SHMLEASE_FLOOD_CONNECTIONS", 1000);
  constexpr size_t kProcesses = 10;
  const uint64_t fd_limit = RaiseDescriptorLimit();  // the daemon inherits it
  if (fd_limit < connections + 128) {
    std::printf("fault: RLIMIT_NOFILE hard limit %llu: %zu connections instead of %zu\n",
                static_cast<unsigned long long>(fd_limit), static_cast<size_t>(fd_limit - 128),
                connections);
    connections = fd_limit - 128;
  }
  DaemonProcess daemon(
      {"--log-level", "info", "--max-connections", std::to_string(connections + 8)});
  Client checker(daemon.socket_path());
  checker.Create("flood", 4096);
  {
    Lease w = checker.Acquire("flood", Mode::kWrite);
    w.writable_data()[0] = std::byte{0x77};
  }
  struct Board {
    std::atomic<uint32_t> served;  // connections that pinged and got a lease
    std::atomic<int> go;           // set by the parent once every connection is counted
    std::atomic<uint32_t> failures;
    char error[160];
  };
  SharedArray<Board> board(1);
  auto t0 = Clock::now();
  std::vector<pid_t> pids;
  for (size_t p = 0; p < kProcesses; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::vector<std::pair<std::unique_ptr<Client>, Lease>> mine;
      size_t share = connections / kProcesses + (p < connections % kProcesses ? 1 : 0);
      try {
        for (size_t i = 0; i < share; ++i) {
          auto c = std::make_unique<Client>(daemon.socket_path());
          c->Ping();
          Lease lease = c->Acquire("flood", Mode::kRead);
          if (lease.data()[0] != std::byte{0x77}) board[0].failures++;
          mine.emplace_back(std::move(c), std::move(lease));
          board[0].served++;
        }
        while (!board[0].go.load()) std::this_thread::sleep_for(1ms);
      } catch (const std::exception& e) {
        if (board[0].failures++ == 0)
          std::snprintf(board[0].error, sizeof(board[0].error), "%s", e.what());
        ::_exit(3);
      }
      ::_exit(0);
    }
    pids.push_back(pid);
  }
  bool all = WaitFor(
      [&] { return board[0].served.load() == connections || board[0].failures.load() > 0; }, 120s);
  const double connect_ms = MsSince(t0);
  DaemonStats stats = checker.Stats();
  board[0].go = 1;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  ASSERT_TRUE(all) << board[0].served.load() << " of " << connections << " served";
  EXPECT_EQ(board[0].failures.load(), 0u) << board[0].error;
  EXPECT_EQ(stats.connections, connections + 1);
  EXPECT_EQ(stats.leases, connections);
  EXPECT_TRUE(WaitFor([&] { return checker.Stats().connections == 1; }, 30s));
  EXPECT_EQ(checker.Stats().leases, 0u);
  checker.Remove("flood");
  std::printf(
      "fault: %zu connections from %zu processes open at once, each pinged and leased "
      "(%.0f ms to connect them all); daemon served all; back to 1 connection after\n",
      connections, kProcesses, connect_ms);
  EXPECT_EQ(daemon.Stop(), 0);
}

}  // namespace
}  // namespace shmlease
