// A lease is held exactly as long as the program thinks (issue 11): interruptible waits that
// leave nothing queued in the daemon, exist_ok that never returns a segment of another shape,
// Lease::held() / Frame::held() after the connection is gone, and messages a user can act on.
#include "shmlease/client.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <string>
#include <thread>

#include "daemon_process.hpp"
#include "daemon_test.hpp"
#include "errc_of.hpp"
#include "raw_socket.hpp"
#include "shmlease/channel.hpp"

namespace shmlease {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::CodeOf;
using testing::DaemonProcess;
using testing::RawSocket;

class LeaseLifetimeTest : public testing::DaemonTest {
 protected:
  // Waits until `name` has `n` queued requests (the daemon's count).
  void WaitForWaiting(Client& c, const std::string& name, uint32_t n) {
    auto until = Clock::now() + 5s;
    while (c.Stat(name).waiting != n && Clock::now() < until) std::this_thread::sleep_for(2ms);
    ASSERT_EQ(c.Stat(name).waiting, n);
  }
};

std::string ErrorText(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

size_t Count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// --- 1. Interruptible lease waits ----------------------------------------------------------------

TEST_F(LeaseLifetimeTest, InterruptedWaitIsCancelledAndLeavesNothingQueued) {
  Client holder = Connect();
  Client waiter = Connect();
  Client third = Connect();
  holder.Create("x", 4096);
  Lease held = holder.Acquire("x", Mode::kWrite, {.exclusive = true});

  std::atomic<int> polls{0};
  Clock::time_point start = Clock::now();
  Clock::time_point interrupted_at{};
  auto pending = std::async(std::launch::async, [&] {
    LeaseOptions options{.exclusive = true, .timeout = kWaitForever};
    options.interrupted = [&] {
      ++polls;
      if (Clock::now() - start < 200ms) return false;
      if (interrupted_at == Clock::time_point{}) interrupted_at = Clock::now();
      return true;
    };
    return CodeOf([&] { waiter.Acquire("x", Mode::kWrite, options); });
  });
  ASSERT_EQ(pending.wait_for(5s), std::future_status::ready) << "the wait was not interrupted";
  Clock::time_point returned = Clock::now();
  EXPECT_EQ(pending.get(), Errc::kCancelled);
  ASSERT_NE(interrupted_at, Clock::time_point{});
  EXPECT_LT(returned - interrupted_at, 100ms);
  // Polled at least every 50 ms while it waited: 5 times in 200 ms (at 0, 50, ... 200 ms); one
  // late wake-up is allowed for a loaded (sanitizer) machine.
  EXPECT_GE(polls.load(), 4);
  EXPECT_LE(polls.load(), 12);  // and not in a busy loop
  // Polled no more after it returned true.
  int polls_then = polls.load();
  std::this_thread::sleep_for(120ms);
  EXPECT_EQ(polls.load(), polls_then);

  // Nothing is left in the daemon's queue: the holder's release lets a third client in at once.
  EXPECT_EQ(holder.Stat("x").waiting, 0u);
  held.Release();
  auto t0 = Clock::now();
  Lease next = third.Acquire("x", Mode::kWrite, {.exclusive = true, .timeout = 5s});
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_TRUE(next.held());
  // The waiting client's connection is still good and holds nothing.
  EXPECT_EQ(waiter.Stat("x").writers, 1u);
  next.Release();
  holder.Remove("x");
}

TEST_F(LeaseLifetimeTest, InterruptOneOfTwoWaitingThreadsOfOneClient) {
  // One thread blocks reading the socket without a callback; the other waits as a follower and
  // must still poll its own callback and be cancelled alone.
  Client holder = Connect();
  Client c = Connect();
  holder.Create("y", 4096);
  Lease held = holder.Acquire("y", Mode::kWrite, {.exclusive = true});
  auto blocking = std::async(std::launch::async, [&] {
    return c.Acquire("y", Mode::kRead, {.timeout = kWaitForever});
  });
  WaitForWaiting(holder, "y", 1);
  std::atomic<bool> stop{false};
  auto interruptible = std::async(std::launch::async, [&] {
    LeaseOptions options{.timeout = kWaitForever};
    options.interrupted = [&] { return stop.load(); };
    return CodeOf([&] { c.Acquire("y", Mode::kRead, options); });
  });
  WaitForWaiting(holder, "y", 2);
  stop = true;
  ASSERT_EQ(interruptible.wait_for(2s), std::future_status::ready);
  EXPECT_EQ(interruptible.get(), Errc::kCancelled);
  EXPECT_EQ(holder.Stat("y").waiting, 1u);  // the other thread's request still waits
  held.Release();
  ASSERT_EQ(blocking.wait_for(5s), std::future_status::ready);
  Lease granted = blocking.get();
  EXPECT_TRUE(granted.held());
  EXPECT_EQ(c.Stat("y").readers, 1u);
  granted.Release();
  holder.Remove("y");
}

TEST_F(LeaseLifetimeTest, CancelRacingTheGrantNeverLeavesALease) {
  Client holder = Connect();
  Client waiter = Connect();
  holder.Create("r", 4096);
  std::mt19937 random(11);
  int granted = 0, cancelled = 0;
  for (int i = 0; i < 60; ++i) {
    Lease held = holder.Acquire("r", Mode::kWrite, {.exclusive = true});
    const bool release_inside = i % 2 == 0;
    std::atomic<bool> armed{false};
    // Either the callback itself gives the holder's lease back and cancels in the same breath
    // (the grant and the Cancel cross), or the main thread releases a moment after arming it.
    LeaseOptions options{.exclusive = true, .timeout = kWaitForever};
    options.interrupted = [&] {
      if (!armed.load()) return false;
      if (release_inside && held) held.Release();
      return true;
    };
    auto pending = std::async(std::launch::async, [&] {
      try {
        Lease lease = waiter.Acquire("r", Mode::kWrite, options);
        return true;  // granted before the callback asked to stop: released here at once
      } catch (const Error& e) {
        EXPECT_EQ(e.errc(), Errc::kCancelled) << e.what();
        return false;
      }
    });
    WaitForWaiting(holder, "r", 1);
    armed = true;
    if (!release_inside) {
      std::this_thread::sleep_for(std::chrono::microseconds(random() % 60000));
      held.Release();
    }
    ASSERT_EQ(pending.wait_for(5s), std::future_status::ready);
    (pending.get() ? granted : cancelled)++;
    if (held) held.Release();
  }
  // The daemon counts no lease and no wait of the waiting client (Stat on its own connection is
  // answered after every release it sent).
  holder.Ping();
  SegmentInfo info = waiter.Stat("r");
  EXPECT_EQ(info.writers, 0u);
  EXPECT_EQ(info.readers, 0u);
  EXPECT_EQ(info.waiting, 0u);
  EXPECT_EQ(waiter.Stats().leases, 0u);
  EXPECT_GT(cancelled, 0);
  // And the segment is free for anyone at once.
  Lease after = holder.Acquire("r", Mode::kWrite, {.exclusive = true, .timeout = 0ms});
  EXPECT_TRUE(after.held());
  after.Release();
  holder.Remove("r");
  RecordProperty("granted", granted);
  RecordProperty("cancelled", cancelled);
}

TEST_F(LeaseLifetimeTest, DaemonAnswersCancelWithCancelledAndIgnoresUnknownIds) {
  Client holder = Connect();
  holder.Create("q", 4096);
  Lease held = holder.Acquire("q", Mode::kWrite, {.exclusive = true});
  RawSocket raw(daemon_.socket_path());
  ASSERT_TRUE(raw.connected() && raw.Hello());
  ASSERT_TRUE(raw.SendRequest(proto::Acquire{"q", proto::LeaseMode::kRead, 0, proto::kWaitForever}, 5));
  WaitForWaiting(holder, "q", 1);
  // An unknown id and an id of another kind of request: ignored, no answer, queue unchanged.
  ASSERT_TRUE(raw.SendRequest(proto::Cancel{99}, 6, proto::kFlagNoReply));
  ASSERT_TRUE(raw.SendRequest(proto::Cancel{1}, 7, proto::kFlagNoReply));
  EXPECT_FALSE(raw.ReadReply(200).has_value());
  EXPECT_EQ(holder.Stat("q").waiting, 1u);
  // The waiting request: answered with kCancelled under its own id, dropped from the queue.
  ASSERT_TRUE(raw.SendRequest(proto::Cancel{5}, 8, proto::kFlagNoReply));
  proto::Header header;
  auto reply = raw.ReadReply(5000, &header);
  ASSERT_TRUE(reply.has_value());
  auto* err = std::get_if<proto::ErrorReply>(&*reply);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(err->code, Errc::kCancelled);
  EXPECT_EQ(header.request_id, 5u);
  EXPECT_NE(err->message.find("'q'"), std::string::npos) << err->message;
  EXPECT_EQ(holder.Stat("q").waiting, 0u);
  // Cancelled twice, or after the grant: ignored; the connection goes on.
  ASSERT_TRUE(raw.SendRequest(proto::Cancel{5}, 9, proto::kFlagNoReply));
  held.Release();
  ASSERT_TRUE(raw.SendRequest(proto::Acquire{"q", proto::LeaseMode::kRead, 0, 5000}, 10));
  reply = raw.ReadReply(5000, &header);
  ASSERT_TRUE(reply.has_value());
  ASSERT_TRUE(std::holds_alternative<proto::AcquireOk>(*reply));
  EXPECT_EQ(header.request_id, 10u);
  ASSERT_TRUE(raw.SendRequest(proto::Cancel{10}, 11, proto::kFlagNoReply));
  ASSERT_TRUE(raw.SendRequest(proto::Ping{}, 12));
  reply = raw.ReadReply(5000, &header);
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(std::holds_alternative<proto::Pong>(*reply));
  EXPECT_EQ(holder.Stat("q").readers, 1u);  // the granted lease was not touched by the Cancel
  holder.Remove("q");
}

TEST_F(LeaseLifetimeTest, ChannelWriterWaitCanBeInterrupted) {
  Client c = Connect();
  Client other = Connect();
  Channel channel(c, "chan", {.format = "B", .shape = {16}});
  Writer first = channel.writer();
  Channel again(other, "chan");
  std::atomic<bool> stop{false};
  auto pending = std::async(std::launch::async, [&] {
    WriterOptions options{.timeout = kWaitForever};
    options.interrupted = [&] { return stop.load(); };
    return CodeOf([&] { again.writer(options); });
  });
  EXPECT_EQ(pending.wait_for(100ms), std::future_status::timeout) << "it waits for the place";
  stop = true;
  ASSERT_EQ(pending.wait_for(2s), std::future_status::ready);
  EXPECT_EQ(pending.get(), Errc::kCancelled);
  EXPECT_EQ(Channel::Stat(c, "chan").writer_pid, static_cast<uint32_t>(::getpid()))
      << "the first writer is still the writer";
  // A bounded wait through the options still times out as before.
  EXPECT_EQ(CodeOf([&] { again.writer(WriterOptions{.timeout = 50ms}); }), Errc::kTimeout);
  first = Writer();
  Channel::Remove(c, "chan");
}

// --- 2. exist_ok never returns a segment of another shape ----------------------------------------

TEST_F(LeaseLifetimeTest, ExistOkReturnsOnlyTheSameShape) {
  Client c = Connect();
  c.Create("w", {.format = "f", .shape = {1024, 1024}});
  // The same, asked for in each spelling that completes to it.
  EXPECT_EQ(c.Create("w", {.format = "f", .shape = {1024, 1024}, .exist_ok = true}).size, 4194304u);
  EXPECT_EQ(c.Create("w", {.size = 4194304, .format = "f", .shape = {1024, 1024}, .exist_ok = true})
                .shape,
            (std::vector<uint64_t>{1024, 1024}));
  // Another shape, format or size: refused, naming both.
  std::string text =
      ErrorText([&] { c.Create("w", {.size = 4096, .format = "B", .exist_ok = true}); });
  EXPECT_EQ(text,
            "segment 'w' exists as float32 (1024, 1024), 4194304 bytes; asked for uint8 (4096,), "
            "4096 bytes");
  EXPECT_EQ(CodeOf([&] { c.Create("w", {.size = 4194304, .exist_ok = true}); }),
            Errc::kAlreadyExists);
  EXPECT_EQ(CodeOf([&] { c.Create("w", {.format = "f", .shape = {1048576}, .exist_ok = true}); }),
            Errc::kAlreadyExists);
  EXPECT_EQ(CodeOf([&] { c.Create("w", {.format = "i", .shape = {1024, 1024}, .exist_ok = true}); }),
            Errc::kAlreadyExists);
  EXPECT_EQ(CodeOf([&] { c.Create("w", {.format = "f", .shape = {1024, 1024, 1}, .exist_ok = true}); }),
            Errc::kAlreadyExists);
  // A request that is invalid in itself says so, whether or not the name exists.
  EXPECT_EQ(CodeOf([&] { c.Create("w", {.size = 10, .format = "f", .exist_ok = true}); }),
            Errc::kInvalidArgument);

  // Raw bytes: "" and "B" are the same format; an empty shape is the 1-D default.
  c.Create("raw", 4096);
  EXPECT_EQ(c.Create("raw", {.size = 4096, .exist_ok = true}).size, 4096u);
  EXPECT_EQ(c.Create("raw", {.size = 4096, .format = "B", .exist_ok = true}).size, 4096u);
  EXPECT_EQ(c.Create("raw", {.format = "B", .shape = {4096}, .exist_ok = true}).size, 4096u);
  EXPECT_EQ(CodeOf([&] { c.Create("raw", {.format = "B", .shape = {64, 64}, .exist_ok = true}); }),
            Errc::kAlreadyExists);
  EXPECT_EQ(ErrorText([&] { c.Create("raw", {.size = 8192, .exist_ok = true}); }),
            "segment 'raw' exists as uint8 (4096,), 4096 bytes; asked for uint8 (8192,), 8192 bytes");
  // A refused exist_ok changed nothing.
  SegmentInfo info = c.Stat("w");
  EXPECT_EQ(info.format, "f");
  EXPECT_EQ(info.shape, (std::vector<uint64_t>{1024, 1024}));
  c.Remove("w");
  c.Remove("raw");
}

// --- 3. Messages a user can act on ---------------------------------------------------------------

TEST(LeaseLifetimeMessages, ErrorTextIsItsOwnMessageOnce) {
  Error e(Errc::kNotFound, "no segment named 'x'");
  EXPECT_STREQ(e.what(), "no segment named 'x'");
  EXPECT_EQ(e.code(), Errc::kNotFound);
  EXPECT_STREQ(Error(Errc::kTimeout, "").what(), "timed out");
  Error copy = e;  // copying keeps the text
  EXPECT_STREQ(copy.what(), "no segment named 'x'");
  const std::system_error& base = e;
  EXPECT_STREQ(base.what(), "no segment named 'x'");
}

TEST(LeaseLifetimeMessages, ConnectSaysWhatIsAtTheSocketPath) {
  std::string dir = std::filesystem::temp_directory_path().string() + "/shmlease-msg-XXXXXX";
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  // Nothing there.
  std::string missing = dir + "/missing.sock";
  std::string text = ErrorText([&] { Client c(missing); });
  EXPECT_EQ(text, "no socket at " + missing +
                      " (shmleased is not running): start shmleased (./scripts/dev run, or "
                      "systemctl start shmleased.socket) or set SHMLEASE_SOCKET");
  EXPECT_EQ(CodeOf([&] { Client c(missing); }), Errc::kDaemonUnavailable);
  // A directory and a regular file.
  EXPECT_EQ(ErrorText([&] { Client c(dir); }), dir + " is a directory, not a socket");
  std::string file = dir + "/file";
  std::ofstream(file) << "x";
  EXPECT_EQ(ErrorText([&] { Client c(file); }), file + " is a regular file, not a socket");
  EXPECT_EQ(CodeOf([&] { Client c(file); }), Errc::kDaemonUnavailable);
  // A socket nobody listens on (a daemon that died leaves one).
  std::string stale = dir + "/stale.sock";
  ASSERT_NO_FATAL_FAILURE(testing::BindStaleSocket(stale));
  text = ErrorText([&] { Client c(stale); });
  EXPECT_EQ(text, "nothing listens on the socket " + stale +
                      ": shmleased is not running (a stale socket of a daemon that died?)");
  EXPECT_EQ(Count(text, "not running"), 1u);
  std::filesystem::remove_all(dir);
}

// Runs `body` in a child process as uid/gid 65534 without supplementary groups (as root), or as
// this user (who is then refused by mode bits alone); returns its exit status.
template <typename F>
int AsAnotherUser(F&& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
      ::_exit(90);
    }
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(LeaseLifetimeMessages, PermissionDeniedSaysWhichGroupMayConnectAndHowToJoin) {
  DaemonProcess daemon;
  // The refused child must reach the socket: open its directory.
  ASSERT_EQ(::chmod(daemon.dir().c_str(), 0755), 0);
  const std::string socket = daemon.socket_path();
  // Group 0 may connect (0660) when run as root; a non-root run keeps its own group, with no
  // write bit for anyone, so the owner is refused too.
  const bool root = ::geteuid() == 0;
  ASSERT_EQ(::chown(socket.c_str(), 0, 0) == 0 || !root, true);
  ASSERT_EQ(::chmod(socket.c_str(), root ? 0660 : 0440), 0);
  struct stat st {};
  ASSERT_EQ(::stat(socket.c_str(), &st), 0);
  std::string group = root ? "root" : std::to_string(st.st_gid);
  if (!root) {
    std::ifstream groups("/etc/group");
    for (std::string line; std::getline(groups, line);) {
      auto a = line.find(':'), b = line.find(':', a + 1), c = line.find(':', b + 1);
      if (line.substr(b + 1, c - b - 1) == std::to_string(st.st_gid)) group = line.substr(0, a);
    }
  }
  int status = AsAnotherUser([&] {
    try {
      Client c(socket);
      return 1;
    } catch (const Error& e) {
      std::string text = e.what();
      if (e.errc() != Errc::kPermissionDenied) return 2;
      if (text.find("cannot connect to shmleased at " + socket) == std::string::npos) return 3;
      if (root) {
        if (text.find("Members of group '" + group + "' may connect") == std::string::npos) return 4;
        if (text.find("sudo usermod -aG " + group + " $USER`, then log in again") ==
            std::string::npos) {
          return 5;
        }
        if (text.find("srw-rw---- (0660)") == std::string::npos) return 6;
      } else if (text.find("group '" + group + "' may not write to it either") ==
                 std::string::npos) {
        return 7;
      }
      if (Count(text, "ermission denied") != 1) return 8;
      return 0;
    }
  });
  EXPECT_EQ(status, 0) << "child check " << status << " failed";
  if (root) {
    // No write bit for the group: joining it would not help, and the message does not say so.
    ASSERT_EQ(::chmod(socket.c_str(), 0640), 0);
    status = AsAnotherUser([&] {
      try {
        Client c(socket);
        return 1;
      } catch (const Error& e) {
        std::string text = e.what();
        if (text.find("usermod") != std::string::npos) return 2;
        return text.find("group 'root' may not write to it either") != std::string::npos ? 0 : 3;
      }
    });
    EXPECT_EQ(status, 0) << "child check " << status << " failed";
  }
  ::chmod(socket.c_str(), 0600);
}

TEST_F(LeaseLifetimeTest, TimeoutNamesSegmentModeWaitAndHolders) {
  Client holder = Connect();
  Client other = Connect();
  Client waiting = Connect();
  holder.Create("t", 4096);
  Lease held = holder.Acquire("t", Mode::kWrite, {.exclusive = true});
  // One more request waits, so the count is not trivially zero.
  auto queued = std::async(std::launch::async, [&] {
    return CodeOf([&] { waiting.Acquire("t", Mode::kRead, {.timeout = 3s}); });
  });
  WaitForWaiting(holder, "t", 1);
  std::string text =
      ErrorText([&] { other.Acquire("t", Mode::kWrite, {.exclusive = true, .timeout = 150ms}); });
  std::string comm;
  std::getline(std::ifstream("/proc/self/comm"), comm);
  EXPECT_EQ(text, "timed out after 150 ms waiting for a write exclusive lease on segment 't': "
                  "held by pid " + std::to_string(::getpid()) + " (" + comm +
                      ") w exclusive; 1 waiting");
  EXPECT_EQ(Count(text, "timed out"), 1u);
  // Timeout 0 names the holders too.
  text = ErrorText([&] { other.Acquire("t", Mode::kRead, {.timeout = 0ms}); });
  EXPECT_NE(text.find("timeout is 0 (held by pid " + std::to_string(::getpid())), std::string::npos)
      << text;
  held.Release();
  EXPECT_EQ(queued.get(), Errc::kOk);
  holder.Remove("t");
}

// Who holds a segment is told only to a caller who may lease it: here the segment is closed to
// the waiting user (uid 65534, as root; else the test's own user) while it waits.
TEST(LeaseLifetimeMessages, TimeoutNamesNoHoldersToACallerWhoMayNoLongerLease) {
  DaemonProcess daemon({"--socket-mode", "0666"});
  ASSERT_EQ(::chmod(daemon.dir().c_str(), 0755), 0);
  Client owner(daemon.socket_path());
  owner.Create("closed", {.size = 4096, .mode = 0666});
  Lease held = owner.Acquire("closed", Mode::kWrite, {.exclusive = true});
  std::thread closer([&] {
    auto until = Clock::now() + 5s;
    while (owner.Stat("closed").waiting == 0 && Clock::now() < until) {
      std::this_thread::sleep_for(2ms);
    }
    owner.Chmod("closed", 0600);
  });
  const std::string socket = daemon.socket_path();
  const bool root = ::geteuid() == 0;
  int status = AsAnotherUser([&] {
    try {
      Client c(socket);
      c.Acquire("closed", Mode::kRead, {.timeout = 400ms});
      return 1;
    } catch (const Error& e) {
      if (e.errc() != Errc::kTimeout) return 2;
      std::string text = e.what();
      // The owner is the same user when not run as root: then the holders are named.
      if (!root) return text.find("held by pid") != std::string::npos ? 0 : 3;
      return text == "timed out waiting for the lease" ? 0 : 4;
    }
  });
  closer.join();
  EXPECT_EQ(status, 0) << "child check " << status << " failed";
  held.Release();
  owner.Remove("closed");
}

TEST_F(LeaseLifetimeTest, AlreadyExistsSaysItOnceAndHowToOpenIt) {
  Client c = Connect();
  c.Create("E2", 4096);
  std::string text = ErrorText([&] { c.Create("E2", 4096); });
  EXPECT_EQ(text,
            "segment 'E2' already exists (to open it instead, pass exist_ok=True in Python, "
            "--exist-ok to the shmlease CLI, or CreateOptions::exist_ok in C++)");
  EXPECT_EQ(Count(text, "already exists"), 1u);
  c.Remove("E2");
}

TEST_F(LeaseLifetimeTest, OpeningAMissingChannelSaysChannel) {
  Client c = Connect();
  std::string text = ErrorText([&] { Channel missing(c, "nochan"); });
  EXPECT_EQ(CodeOf([&] { Channel missing(c, "nochan"); }), Errc::kNotFound);
  EXPECT_NE(text.find("no channel named 'nochan'"), std::string::npos) << text;
  EXPECT_EQ(text.find("segment"), std::string::npos) << text;
}

// --- 4. A lease knows when the daemon no longer counts it ----------------------------------------

TEST_F(LeaseLifetimeTest, HeldUntilReleasedOrTheClientIsClosed) {
  Client c = Connect();
  Client watcher = Connect();
  c.Create("h", 4096);
  Lease lease = c.Acquire("h", Mode::kWrite);
  EXPECT_TRUE(lease.held());
  EXPECT_FALSE(lease.lost());
  Lease moved = std::move(lease);
  EXPECT_FALSE(lease.held());  // NOLINT(bugprone-use-after-move): the moved-from lease is empty
  EXPECT_TRUE(moved.held());
  Lease second = c.Acquire("h", Mode::kRead);
  second.Release();
  EXPECT_FALSE(second.held());
  EXPECT_FALSE(second.lost());  // released, not lost
  c.Close();
  EXPECT_FALSE(moved.held());
  EXPECT_TRUE(moved.lost());
  EXPECT_TRUE(moved.valid());  // still mapped and readable
  (void)moved.data()[0];
  // And indeed the daemon counts it no more.
  auto until = Clock::now() + 5s;
  while (watcher.Stat("h").writers != 0 && Clock::now() < until) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(watcher.Stat("h").writers, 0u);
  moved.Release();
  EXPECT_FALSE(moved.lost());
  watcher.Remove("h");
}

TEST_F(LeaseLifetimeTest, FrameHeldThroughItsConnection) {
  Client c = Connect();
  Channel channel(c, "fch", {.format = "B", .shape = {64}});
  Writer writer = channel.writer();
  Reader reader = channel.reader();
  Frame slot = writer.Claim();
  EXPECT_TRUE(slot.held());
  slot.Release();
  EXPECT_FALSE(slot.held());
  Frame claimed = writer.Claim();
  writer.Publish(claimed);
  Frame frame = reader.Next(1s);
  EXPECT_TRUE(frame.held());
  Frame unpublished = writer.Claim();
  c.Close();
  EXPECT_FALSE(frame.held());
  EXPECT_FALSE(unpublished.held());
  EXPECT_FALSE(Frame().held());
  frame.Release();
  unpublished.Release();
  writer = Writer();
  reader = Reader();
  Client cleanup = Connect();
  Channel::Remove(cleanup, "fch");
}

// The daemon dies; reconnecting off: the lease is lost at once, without another call.
TEST(LeaseLifetimeDaemonGone, WithoutReconnectTheLeaseIsLostWhenTheDaemonDies) {
  DaemonProcess daemon;
  Client c(daemon.socket_path());
  c.set_reconnect_timeout(0ms);
  c.Create("gone", 4096);
  Lease lease = c.Acquire("gone", Mode::kRead);
  EXPECT_TRUE(lease.held());
  daemon.Kill(SIGKILL);
  auto until = Clock::now() + 5s;
  while (lease.held() && Clock::now() < until) std::this_thread::sleep_for(2ms);
  EXPECT_FALSE(lease.held());
  EXPECT_TRUE(lease.lost());
  EXPECT_EQ(CodeOf([&] { c.Ping(); }), Errc::kConnectionLost);
  EXPECT_TRUE(lease.lost());
  lease.Release();
  // What the killed daemon left in /dev/shm is unlinked by ~DaemonProcess.
}

// With reconnecting on, a lease stays held across a dead daemon until reconnecting fails; then it
// is lost for good, even when a later call does reconnect.
TEST(LeaseLifetimeDaemonGone, FailedReconnectLosesTheLeaseForGood) {
  DaemonProcess daemon;
  Client c(daemon.socket_path());
  c.set_reconnect_timeout(200ms);
  c.Create("kept", 4096);
  Lease lease = c.Acquire("kept", Mode::kRead);
  daemon.Kill(SIGKILL);
  std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(lease.held());  // the next call would reconnect and reclaim it
  EXPECT_EQ(CodeOf([&] { c.Ping(); }), Errc::kConnectionLost);  // nobody to reconnect to
  EXPECT_FALSE(lease.held());
  EXPECT_TRUE(lease.lost());
  daemon.Start();
  EXPECT_NO_THROW(c.Ping());  // the connection comes back...
  EXPECT_TRUE(lease.lost());  // ...the lease does not
  EXPECT_FALSE(lease.held());
  lease.Release();
  EXPECT_EQ(c.Stats().leases, 0u);
  EXPECT_EQ(daemon.Stop(), 0);
  // What the killed daemon left in /dev/shm is unlinked by ~DaemonProcess.
}

}  // namespace
}  // namespace shmlease
