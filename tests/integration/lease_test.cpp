// Leases against the real daemon: sharing between processes, kernel-enforced read leases,
// exclusive waits, deferred free on remove, and cleanup after a client is killed.
#include "shmlease/client.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "daemon_process.hpp"
#include "daemon_test.hpp"
#include "errc_of.hpp"

namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::CodeOf;
using testing::DaemonProcess;

using LeaseTest = testing::DaemonTest;

// The inode of the file mapped at `address` in this process (from /proc/self/maps).
uint64_t MappedInode(const void* address) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  auto target = reinterpret_cast<uintptr_t>(address);
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    std::string range, perms, offset, dev;
    uint64_t inode = 0;
    in >> range >> perms >> offset >> dev >> inode;
    uintptr_t lo = std::stoull(range.substr(0, range.find('-')), nullptr, 16);
    uintptr_t hi = std::stoull(range.substr(range.find('-') + 1), nullptr, 16);
    if (target >= lo && target < hi) return inode;
  }
  return 0;
}

// Runs `body` in a forked child (which makes its own connection) and returns its wait status.
template <typename F>
int RunChild(F&& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int code = 1;
    try {
      code = body();
    } catch (...) {
      code = 99;
    }
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

TEST_F(LeaseTest, CreateStatListRemove) {
  Client c = Connect();
  SegmentInfo info = c.Create("frames", {.size = 64 << 20});
  EXPECT_EQ(info.name, "frames");
  EXPECT_EQ(info.size, 64u << 20);
  EXPECT_EQ(info.creator_pid, static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(info.creator_uid, ::getuid());
  EXPECT_GT(info.created_unix_ns, 0);

  SegmentInfo typed = c.Create("weights", {.format = "f", .shape = {4, 8}});
  EXPECT_EQ(typed.size, 4u * 8 * 4);
  EXPECT_EQ(typed.format, "f");
  EXPECT_EQ(typed.shape, (std::vector<uint64_t>{4, 8}));

  auto list = c.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "frames");
  EXPECT_EQ(list[1].name, "weights");
  EXPECT_EQ(c.Stat("weights"), typed);
  EXPECT_EQ(daemon_.ShmObjects().size(), 2u);

  c.Remove("frames");
  c.Remove("weights");
  EXPECT_TRUE(c.List().empty());
  EXPECT_TRUE(daemon_.ShmObjects().empty());
}

TEST_F(LeaseTest, CreateErrorsCarryTheirCodes) {
  Client c = Connect();
  c.Create("a", 4096);
  EXPECT_EQ(CodeOf([&] { c.Create("a", 4096); }), Errc::kAlreadyExists);
  EXPECT_EQ(c.Create("a", {.size = 4096, .exist_ok = true}).name, "a");
  EXPECT_EQ(CodeOf([&] { c.Create("", 1); }), Errc::kInvalidName);
  EXPECT_EQ(CodeOf([&] { c.Create("../etc", 1); }), Errc::kInvalidName);
  EXPECT_EQ(CodeOf([&] { c.Create(std::string(129, 'x'), 1); }), Errc::kInvalidName);
  EXPECT_EQ(CodeOf([&] { c.Create("zero", 0); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { c.Create("fmt", {.size = 8, .format = "<f"}); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { c.Create("odd", {.size = 6, .format = "f"}); }), Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { c.Create("shape", {.size = 10, .format = "f", .shape = {2, 2}}); }),
            Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { c.Create("dims", {.format = "B", .shape = {1, 1, 1, 1, 1, 1, 1, 1, 1}}); }),
            Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { c.Create("zerodim", {.format = "B", .shape = {4, 0}}); }),
            Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { c.Create("overflow", {.format = "d", .shape = {1ull << 62, 4}}); }),
            Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { c.Stat("missing"); }), Errc::kNotFound);
  EXPECT_EQ(CodeOf([&] { c.Remove("missing"); }), Errc::kNotFound);
  EXPECT_EQ(CodeOf([&] { c.Acquire("missing", Mode::kRead); }), Errc::kNotFound);
  // A size far beyond what /dev/shm can hold is refused by the reservation, not a later SIGBUS.
  c.Remove("a");
}

TEST_F(LeaseTest, BigCreateDoesNotStallOtherClients) {
  Client creator = Connect();
  Client other = Connect();
  other.Create("small", 4096);
  // Reserving 4 GiB takes a few hundred ms; the daemon does it off its event loop.
  auto create = std::async(std::launch::async, [&] { return creator.Create("big", 4ull << 30); });
  bool seen_creating = false;
  for (int i = 0; i < 2000 && !seen_creating; ++i) {
    try {
      other.Stat("big");
      break;  // already done: the machine was faster than expected
    } catch (const Error& e) {
      seen_creating = std::string(e.what()).find("being created") != std::string::npos;
    }
  }
  if (seen_creating) {
    // Answered while the big one is still being reserved.
    other.Ping();
    Lease lease = other.Acquire("small", Mode::kWrite, {.timeout = 0ms});
    lease.Release();
    EXPECT_EQ(create.wait_for(0s), std::future_status::timeout);
  }
  other.Remove("small");
  EXPECT_TRUE(seen_creating) << "the create finished before anyone could look";
  EXPECT_EQ(create.get().size, 4ull << 30);
  EXPECT_EQ(other.Stat("big").size, 4ull << 30);
  other.Remove("big");
}

TEST_F(LeaseTest, ConcurrentExistOkCreatesAgree) {
  Client a = Connect();
  Client b = Connect();
  auto first = std::async(std::launch::async, [&] {
    return a.Create("race", {.size = 1ull << 30, .exist_ok = true});
  });
  auto second = std::async(std::launch::async, [&] {
    return b.Create("race", {.size = 1ull << 30, .exist_ok = true});
  });
  SegmentInfo x = first.get();
  SegmentInfo y = second.get();
  EXPECT_EQ(x.id, y.id);
  EXPECT_EQ(daemon_.ShmObjects().size(), 1u);
  a.Remove("race");
}

TEST_F(LeaseTest, TwoProcessesShareTheSamePages) {
  Client c = Connect();
  c.Create("shared", 1 << 20);
  Lease w = c.Acquire("shared", Mode::kWrite);
  auto bytes = w.writable_data();
  std::memset(bytes.data(), 0, bytes.size());
  uint64_t parent_inode = MappedInode(bytes.data());
  ASSERT_NE(parent_inode, 0u);

  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  std::string socket = daemon_.socket_path();
  int status = RunChild([&] {
    Client child(socket);
    Lease lease = child.Acquire("shared", Mode::kWrite);
    auto data = lease.as_writable<uint8_t>();
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
    uint64_t inode = MappedInode(data.data());
    return ::write(pipefd[1], &inode, sizeof(inode)) == sizeof(inode) ? 0 : 2;
  });
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  uint64_t child_inode = 0;
  ASSERT_EQ(::read(pipefd[0], &child_inode, sizeof(child_inode)), (ssize_t)sizeof(child_inode));
  ::close(pipefd[0]);
  ::close(pipefd[1]);
  // Same shm object, and the child's writes are visible through the parent's mapping: no copy.
  EXPECT_EQ(child_inode, parent_inode);
  auto view = w.as<uint8_t>();
  for (size_t i = 0; i < view.size(); i += 4093) ASSERT_EQ(view[i], static_cast<uint8_t>(i * 7));
  w.Release();
  c.Remove("shared");
}

TEST_F(LeaseTest, ReadLeaseCannotWrite) {
  Client c = Connect();
  c.Create("ro", 4096);
  std::string socket = daemon_.socket_path();
  int status = RunChild([&] {
    Client child(socket);
    Lease lease = child.Acquire("ro", Mode::kRead);
    try {
      (void)lease.writable_data();
      return 3;  // the library must refuse
    } catch (const Error& e) {
      if (e.errc() != Errc::kPermissionDenied) return 4;
    }
    // Bypass the library: the kernel must refuse the store. (Default action, in case a
    // sanitizer runtime installed its own SIGSEGV handler.)
    ::signal(SIGSEGV, SIG_DFL);
    auto* p = const_cast<std::byte*>(lease.data().data());
    *reinterpret_cast<volatile std::byte*>(p) = std::byte{1};
    return 5;
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGSEGV);
  Lease check = c.Acquire("ro", Mode::kRead);
  EXPECT_EQ(check.data()[0], std::byte{0});
  check.Release();
  c.Remove("ro");
}

TEST_F(LeaseTest, MappingIsReusedAcrossLeases) {
  Client c = Connect();
  c.Create("seg", 8192);
  Lease a = c.Acquire("seg", Mode::kRead);
  Lease b = c.Acquire("seg", Mode::kRead);
  EXPECT_EQ(a.data().data(), b.data().data());  // one mapping per connection and mode
  EXPECT_NE(a.id(), b.id());
  EXPECT_EQ(c.Stat("seg").readers, 2u);
  a.Release();
  b.Release();
  Lease again = c.Acquire("seg", Mode::kRead);
  EXPECT_EQ(again.data().size(), 8192u);
  Lease w = c.Acquire("seg", Mode::kWrite);
  EXPECT_NE(static_cast<const void*>(w.writable_data().data()), again.data().data());
  w.writable_data()[5] = std::byte{42};
  EXPECT_EQ(again.data()[5], std::byte{42});
  again.Release();
  w.Release();
  c.Remove("seg");
}

TEST_F(LeaseTest, ExclusiveWaitsInOrderAndTimesOut) {
  Client holder = Connect();
  Client other = Connect();
  holder.Create("x", 4096);
  Lease shared = holder.Acquire("x", Mode::kRead);

  // Timeout 0: fails at once.
  auto t0 = std::chrono::steady_clock::now();
  try {
    other.Acquire("x", Mode::kWrite, {.exclusive = true, .timeout = 0ms});
    FAIL() << "exclusive lease granted while another lease exists";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kTimeout);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);

  // A bounded wait times out after about its timeout.
  t0 = std::chrono::steady_clock::now();
  try {
    other.Acquire("x", Mode::kWrite, {.exclusive = true, .timeout = 200ms});
    FAIL() << "exclusive lease granted while another lease exists";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kTimeout);
  }
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 190ms);
  EXPECT_LT(waited, 5s);
  EXPECT_EQ(holder.Stat("x").waiting, 0u);

  // A waiting exclusive request is granted when the last lease goes.
  auto pending = std::async(std::launch::async, [&] {
    return other.Acquire("x", Mode::kWrite, {.exclusive = true, .timeout = 10s});
  });
  for (int i = 0; i < 200 && holder.Stat("x").waiting == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(holder.Stat("x").waiting, 1u);
  // Arrival order: a shared request behind the waiting exclusive one waits too.
  try {
    holder.Acquire("x", Mode::kRead, {.timeout = 0ms});
    FAIL() << "shared lease jumped the queue ahead of a waiting exclusive request";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kTimeout);
  }
  shared.Release();
  Lease excl = pending.get();
  EXPECT_TRUE(excl.exclusive());
  SegmentInfo info = holder.Stat("x");
  EXPECT_EQ(info.exclusive, 1u);
  EXPECT_EQ(info.writers, 1u);
  try {
    holder.Acquire("x", Mode::kRead, {.timeout = 0ms});
    FAIL() << "shared lease granted during an exclusive one";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kTimeout);
  }
  excl.Release();
  // The release travels on the other connection: wait for it rather than race it.
  Lease after = holder.Acquire("x", Mode::kRead, {.timeout = 5s});
  EXPECT_TRUE(after.valid());
  after.Release();
  holder.Remove("x");
}

TEST_F(LeaseTest, WaitingClientDoesNotBlockOtherThreadsOfTheSameClient) {
  Client c = Connect();
  Client holder = Connect();
  c.Create("busy", 4096);
  Lease held = holder.Acquire("busy", Mode::kRead);
  auto waiting = std::async(std::launch::async, [&] {
    return c.Acquire("busy", Mode::kWrite, {.exclusive = true, .timeout = 5s});
  });
  std::this_thread::sleep_for(50ms);
  // Same Client, another thread: answered while the first thread waits.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(c.Stat("busy").waiting, 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  held.Release();
  EXPECT_TRUE(waiting.get().valid());
  c.Remove("busy");
}

TEST_F(LeaseTest, RemoveWhileLeasedDefersTheFree) {
  Client c = Connect();
  c.Create("doomed", 1 << 16);
  Lease w = c.Acquire("doomed", Mode::kWrite);
  w.writable_data()[0] = std::byte{7};
  c.Remove("doomed");
  // The name is gone at once and may be reused...
  EXPECT_THROW(c.Stat("doomed"), Error);
  c.Create("doomed", 4096);
  EXPECT_EQ(c.Stat("doomed").size, 4096u);
  // ...while the old memory lives on for the lease holder.
  EXPECT_EQ(daemon_.ShmObjects().size(), 2u);
  EXPECT_EQ(w.data()[0], std::byte{7});
  w.Release();
  for (int i = 0; i < 200 && daemon_.ShmObjects().size() != 1; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(daemon_.ShmObjects().size(), 1u);
  c.Remove("doomed");
  EXPECT_TRUE(daemon_.ShmObjects().empty());
}

// Lines of /proc/self/maps that map one of this daemon's segments: a sealed memfd
// ("/memfd:<prefix>.<id> (deleted)") or, with --backing named, a shm object in /dev/shm.
size_t MappingsOf(const std::string& prefix) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  size_t count = 0;
  while (std::getline(maps, line)) {
    if (line.find("/dev/shm/" + prefix) != std::string::npos ||
        line.find("/memfd:" + prefix + ".") != std::string::npos) {
      ++count;
    }
  }
  return count;
}

TEST_F(LeaseTest, FreedSegmentIsUnmappedByTheClientToo) {
  Client c = Connect();
  c.Create("cached", 1 << 20);
  Lease lease = c.Acquire("cached", Mode::kWrite);
  lease.Release();
  // Not removed: the mapping stays cached for the next lease.
  EXPECT_EQ(MappingsOf(daemon_.shm_prefix()), 1u);
  lease = c.Acquire("cached", Mode::kWrite);
  c.Remove("cached");
  lease.Release();
  // The daemon frees it and says so; the client drops its mapping on its next read.
  c.Ping();
  EXPECT_EQ(MappingsOf(daemon_.shm_prefix()), 0u);
  EXPECT_TRUE(daemon_.ShmObjects().empty());
}

TEST_F(LeaseTest, RemoveFailsWaitersWithNotFound) {
  Client c = Connect();
  Client holder = Connect();
  c.Create("r", 4096);
  Lease held = holder.Acquire("r", Mode::kRead);
  auto waiting = std::async(std::launch::async, [&] {
    return c.Acquire("r", Mode::kWrite, {.exclusive = true, .timeout = 10s});
  });
  for (int i = 0; i < 200 && holder.Stat("r").waiting == 0; ++i) std::this_thread::sleep_for(5ms);
  holder.Remove("r");
  try {
    waiting.get();
    FAIL() << "waiter granted a lease on a removed segment";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kNotFound);
  }
  held.Release();
}

TEST_F(LeaseTest, KilledClientsLeasesAreGoneWithinOneSecond) {
  Client c = Connect();
  c.Create("victim", 4096);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  std::string socket = daemon_.socket_path();
  pid_t pid = ::fork();
  if (pid == 0) {
    Client child(socket);
    Lease a = child.Acquire("victim", Mode::kRead);
    Lease b = child.Acquire("victim", Mode::kWrite);
    Lease e = child.Acquire("victim", Mode::kRead);
    char byte = 1;
    (void)!::write(ready[1], &byte, 1);
    for (;;) ::pause();
  }
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  SegmentInfo held = c.Stat("victim");
  EXPECT_EQ(held.readers, 2u);
  EXPECT_EQ(held.writers, 1u);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  auto t0 = std::chrono::steady_clock::now();
  SegmentInfo info;
  do {
    info = c.Stat("victim");
  } while (info.readers + info.writers != 0 && std::chrono::steady_clock::now() - t0 < 1s);
  EXPECT_EQ(info.readers + info.writers, 0u);
  ::close(ready[0]);
  ::close(ready[1]);
  // And an exclusive lease is now grantable at once.
  Lease excl = c.Acquire("victim", Mode::kWrite, {.exclusive = true, .timeout = 0ms});
  EXPECT_TRUE(excl.valid());
  excl.Release();
  c.Remove("victim");
}

TEST_F(LeaseTest, ManyThreadsShareOneClient) {
  Client c = Connect();
  c.Create("hot", {.format = "q", .shape = {1024}});
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        try {
          Lease lease = c.Acquire("hot", t % 2 ? Mode::kWrite : Mode::kRead);
          if (lease.size() != 8192) failures++;
          if (i % 50 == 0) c.Stat("hot");
        } catch (...) {
          failures++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  SegmentInfo info = c.Stat("hot");
  EXPECT_EQ(info.readers + info.writers, 0u);
  c.Remove("hot");
}

TEST_F(LeaseTest, TypedAccessChecksTheFormat) {
  Client c = Connect();
  c.Create("floats", {.format = "f", .shape = {16}});
  Lease lease = c.Acquire("floats", Mode::kWrite);
  auto floats = lease.as_writable<float>();
  EXPECT_EQ(floats.size(), 16u);
  floats[3] = 1.5f;
  EXPECT_EQ(lease.as<float>()[3], 1.5f);
  EXPECT_THROW(lease.as<double>(), Error);
  EXPECT_THROW(lease.as<int32_t>(), Error);  // same size, other kind
  lease.Release();
  EXPECT_FALSE(lease.valid());
  EXPECT_TRUE(lease.data().empty());
  c.Remove("floats");
}

TEST_F(LeaseTest, LeaseOutlivesItsClient) {
  Lease lease;
  {
    Client c = Connect();
    c.Create("orphan", 4096);
    lease = c.Acquire("orphan", Mode::kWrite);
  }
  // The client is gone but the connection is shared by the lease: still held and readable.
  lease.writable_data()[1] = std::byte{9};
  Client c = Connect();
  EXPECT_EQ(c.Stat("orphan").writers, 1u);
  lease.Release();
  // One-way release on the lease's connection: another connection sees it shortly after.
  SegmentInfo info = c.Stat("orphan");
  for (int i = 0; i < 200 && info.writers != 0; ++i) {
    std::this_thread::sleep_for(5ms);
    info = c.Stat("orphan");
  }
  EXPECT_EQ(info.writers, 0u);
  c.Remove("orphan");
}

TEST_F(LeaseTest, CloseReleasesEverythingAndLeasesStayReadable) {
  Client c = Connect();
  Client watcher = Connect();
  c.Create("closing", 4096);
  Lease lease = c.Acquire("closing", Mode::kWrite);
  lease.writable_data()[0] = std::byte{3};
  c.Close();
  EXPECT_EQ(lease.data()[0], std::byte{3});  // the mapping survives the connection
  SegmentInfo info;
  for (int i = 0; i < 200; ++i) {
    info = watcher.Stat("closing");
    if (info.writers == 0) break;
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(info.writers, 0u);
  EXPECT_THROW(c.Stat("closing"), Error);
  lease.Release();  // a no-op now
  watcher.Remove("closing");
}

TEST_F(LeaseTest, CloseFromAnotherThreadWakesAWaiter) {
  Client c = Connect();
  Client holder = Connect();
  c.Create("blocked", 4096);
  Lease held = holder.Acquire("blocked", Mode::kRead);
  auto waiter = std::async(std::launch::async, [&] {
    try {
      c.Acquire("blocked", Mode::kWrite, {.exclusive = true});  // no timeout
      return Errc::kOk;
    } catch (const Error& e) {
      return e.errc();
    }
  });
  for (int i = 0; i < 200 && holder.Stat("blocked").waiting == 0; ++i) std::this_thread::sleep_for(5ms);
  c.Close();
  ASSERT_EQ(waiter.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(waiter.get(), Errc::kConnectionLost);
  EXPECT_THROW(c.Ping(), Error);
  held.Release();
  holder.Remove("blocked");
}

TEST_F(LeaseTest, ForkedChildCannotDisturbTheParentsConnection) {
  Client c = Connect();
  c.Create("forked", 4096);
  Lease lease = c.Acquire("forked", Mode::kWrite);
  pid_t pid = ::fork();
  if (pid == 0) {
    int code = 0;
    try {
      c.Ping();
      code = 2;  // must not talk on the parent's socket
    } catch (const Error& e) {
      if (e.errc() != Errc::kConnectionLost) code = 3;
    }
    lease.Release();  // no-op in the child
    c.Close();        // no-op in the child
    std::exit(code);  // runs destructors: still nothing may reach the parent's connection
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  c.Ping();
  EXPECT_EQ(c.Stat("forked").writers, 1u);  // the parent's lease is intact
  lease.Release();
  c.Remove("forked");
}

TEST(DaemonStartup, RefusesASecondDaemonAndReplacesAStaleSocket) {
  DaemonProcess first;
  // Same socket, live daemon: the second one refuses and exits non-zero.
  std::string cmd = DaemonProcess::DaemonBinary() + " --socket " + first.socket_path() +
                    " --shm-prefix shmlease-test-second 2>/dev/null";
  int status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  Client c(first.socket_path());
  c.Ping();
  EXPECT_EQ(c.server_pid(), static_cast<uint32_t>(first.pid()));
  // A SIGKILLed daemon leaves its socket file: a new daemon takes it over after checking.
  ::kill(first.pid(), SIGKILL);
  first.Stop();
  ASSERT_TRUE(std::filesystem::exists(first.socket_path()));
  DaemonProcess again({"--socket", first.socket_path()});
  Client c2(first.socket_path());
  EXPECT_EQ(c2.server_pid(), static_cast<uint32_t>(again.pid()));
  EXPECT_NE(again.log().find("stale socket"), std::string::npos) << again.log();
}

TEST(DaemonStartup, NobodyListeningIsAClearError) {
  try {
    Client c("/nonexistent-dir/shmlease.sock");
    FAIL() << "connected to nothing";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kDaemonUnavailable);
    EXPECT_NE(std::string(e.what()).find("not running"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/shmlease.sock"), std::string::npos);
  }
  std::error_code ec;
  auto client = Client::Connect("/nonexistent-dir/shmlease.sock", ec);
  EXPECT_FALSE(client.has_value());
  EXPECT_EQ(ec, Errc::kDaemonUnavailable);
}

}  // namespace
}  // namespace shmlease
