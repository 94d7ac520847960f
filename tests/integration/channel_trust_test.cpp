// Channels that no participant can subvert (issue 13): the kernel enforces the roles, a reader of
// another uid that writes random bytes into every shared mapping it has writable crashes nobody,
// spoils no honest reader's frame and does not keep the writer from finishing; slow readers are
// evicted after the reader timeout; permission bits mean read = may read, write = may write.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_test.hpp"
#include "errc_of.hpp"
#include "shmlease/channel.hpp"
#include "wait_for.hpp"

namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::CodeOf;
using testing::WaitFor;

struct Mapping {
  std::string perms;  // "rw-s", "r--s", ...
  uintptr_t start = 0;
  size_t size = 0;
  std::string name;
};

std::vector<Mapping> MappingsOfThisProcess() {
  std::vector<Mapping> out;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    std::istringstream in(line);
    std::string range, perms, offset, dev, inode, name;
    in >> range >> perms >> offset >> dev >> inode;
    std::getline(in, name);
    Mapping m;
    m.perms = perms;
    m.start = std::stoull(range.substr(0, range.find('-')), nullptr, 16);
    m.size = std::stoull(range.substr(range.find('-') + 1), nullptr, 16) - m.start;
    m.name = name;
    out.push_back(m);
  }
  return out;
}

std::vector<Mapping> Named(const std::string& label) {
  std::vector<Mapping> out;
  for (const Mapping& m : MappingsOfThisProcess()) {
    if (m.name.find(label) != std::string::npos) out.push_back(m);
  }
  return out;
}

// A frame's bytes from its sequence number; the checksum travels as metadata.
void Fill(std::span<std::byte> bytes, uint64_t seq) {
  uint64_t x = seq * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(bytes.data() + i, &x, 8);
  }
}
uint64_t Checksum(std::span<const std::byte> bytes) {
  uint64_t h = 1469598103934665603ull;
  for (std::byte b : bytes) h = (h ^ static_cast<uint8_t>(b)) * 1099511628211ull;
  return h;
}

class ChannelTrustTest : public testing::DaemonTest {
 protected:
  Client client_ = Connect();
  static void PublishEmpty(Writer& w, std::chrono::milliseconds timeout = 5s) {
    Frame f = w.Claim(timeout);
    w.Publish(f);
  }
  // Lets a process of another uid reach the socket.
  void OpenSocketToOthers() {
    ASSERT_EQ(::chmod(daemon_.dir().c_str(), 0755), 0);
    ASSERT_EQ(::chmod(daemon_.socket_path().c_str(), 0666), 0);
  }
  static bool Root() { return ::geteuid() == 0; }
  // Forks a child that becomes uid/gid 65534 (as root; else stays this user) and runs `body`,
  // whose return value is its exit status. Forked before this process maps any channel memory,
  // so the child inherits no writable mapping of it.
  template <typename F>
  static pid_t AsAnotherUser(F&& body) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (Root() &&
          (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
        ::_exit(90);
      }
      ::_exit(body());
    }
    return pid;
  }
  static int ExitStatus(pid_t pid) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // The "done when": a vandal reader of another uid, attaching again and again, writes
  // random bytes into every shared mapping it has writable for `seconds`, and tries to make the
  // frames writable; the writer publishes checksummed frames and an honest reader checks each.
  void RunVandal(ChannelPolicy policy) {
    OpenSocketToOthers();
    const std::string name = policy == ChannelPolicy::kBlock ? "vandal-block" : "vandal-latest";
    constexpr auto kRun = 3s;
    ChannelOptions options{.format = "B", .shape = {16384}, .slots = 4, .policy = policy};
    options.reader_timeout = 100ms;
    options.mode = 0644;  // others may read frames, not write them
    Channel ch(client_, name, options);
    const std::string socket = daemon_.socket_path();
    pid_t vandal = AsAnotherUser([&]() -> int {
      try {
        Client c(socket);
        Channel theirs(c, name);
        if (Root() && CodeOf([&] { theirs.writer(); }) != Errc::kPermissionDenied) return 3;
        std::mt19937_64 rng(::getpid());
        const auto until = std::chrono::steady_clock::now() + kRun;
        int attaches = 0;
        while (std::chrono::steady_clock::now() < until) {
          try {
            Reader r = theirs.reader();
            ++attaches;
            for (const Mapping& m : Named("memfd:shmlease-channel")) {
              if (m.perms[1] == 'w') return 4;  // frames mapped writable
              if (::mprotect(reinterpret_cast<void*>(m.start), m.size, PROT_READ | PROT_WRITE) ==
                  0) {
                return 5;
              }
            }
            const auto round = std::chrono::steady_clock::now() + 150ms;
            uint64_t n = 0;
            while (std::chrono::steady_clock::now() < round) {
              // Every shared mapping it may write: its own page (nothing else is writable to it).
              for (const Mapping& m : MappingsOfThisProcess()) {
                if (m.perms != "rw-s") continue;
                auto* words = reinterpret_cast<volatile uint64_t*>(m.start);
                for (size_t i = 0; i < m.size / 8; ++i) {
                  // Half the time plausible values (holds of real slots, an old position), so the
                  // writer's timeout has to act, not only its check of the held mask.
                  uint64_t v = rng();
                  if ((n & 1) == 0) v &= 0xF;
                  words[i] = v;
                }
              }
              ++n;
              try {
                Frame f = r.TryNext();  // and reads along, holding what it got
                (void)f;
              } catch (const Error&) {
              }
            }
          } catch (const Error& e) {
            if (e.errc() != Errc::kEvicted && e.errc() != Errc::kConnectionLost &&
                e.errc() != Errc::kBadMessage) {
              std::fprintf(stderr, "vandal: %s\n", e.what());
              return 6;
            }
          }
        }
        return attaches > 0 ? 0 : 7;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "vandal: %s\n", e.what());
        return 8;
      }
    });

    Client reader_client = Connect();
    Channel mine(reader_client, name);
    Reader honest = mine.reader();
    Writer w = ch.writer();
    std::atomic<uint64_t> published{0};
    std::thread writer([&] {
      const auto until = std::chrono::steady_clock::now() + kRun;
      while (std::chrono::steady_clock::now() < until) {
        Frame f = w.Claim(5s);
        const uint64_t seq = published.load() + 1;
        Fill(f.writable_data(), seq);
        uint64_t meta[2] = {seq, Checksum(f.data())};
        EXPECT_EQ(w.Publish(f, std::as_bytes(std::span(meta))), seq);
        published.store(seq);
      }
      w.Close();
    });
    uint64_t good = 0, bad = 0, last = 0;
    for (;;) {
      try {
        Frame f = honest.Next(10s);
        uint64_t meta[2];
        ASSERT_EQ(f.meta().size(), sizeof(meta));
        std::memcpy(meta, f.meta().data(), sizeof(meta));
        if (meta[0] != f.seq() || meta[1] != Checksum(f.data()) || f.seq() <= last) {
          ++bad;
        } else {
          ++good;
        }
        if (policy == ChannelPolicy::kBlock) {
          EXPECT_EQ(f.seq(), last + 1) << "a frame was lost";
        }
        last = f.seq();
      } catch (const Error& e) {
        ASSERT_EQ(e.errc(), Errc::kEndOfStream) << e.what();
        break;
      }
    }
    writer.join();
    EXPECT_EQ(ExitStatus(vandal), 0) << "the vandal crashed or found a hole";
    EXPECT_EQ(bad, 0u);
    EXPECT_GT(published.load(), 100u) << "the writer kept publishing";
    if (policy == ChannelPolicy::kBlock) {
      EXPECT_EQ(good, published.load()) << "the honest reader got every frame";
    } else {
      EXPECT_GT(good, 0u);
      EXPECT_EQ(last, published.load()) << "the newest frame arrived";
    }
    std::printf("%s: %lu frames published, %lu checked\n", name.c_str(),
                static_cast<unsigned long>(published.load()), static_cast<unsigned long>(good));
    Channel::Remove(client_, name);
  }
};

TEST_F(ChannelTrustTest, AVandalReaderOfAnotherUidSpoilsNothingBlock) {
  RunVandal(ChannelPolicy::kBlock);
}
TEST_F(ChannelTrustTest, AVandalReaderOfAnotherUidSpoilsNothingLatest) {
  RunVandal(ChannelPolicy::kLatest);
}

// The kernel enforces the roles: a reader's frames are mapped read-only and cannot be made
// writable or resized; its own page is the only channel memory it may write.
TEST_F(ChannelTrustTest, AReaderMapsTheFramesReadOnly) {
  Channel ch(client_, "roles", {.format = "B", .shape = {64}, .slots = 4});
  EXPECT_TRUE(client_.List().empty()) << "a channel makes no segments";
  Reader r = ch.reader();
  auto frames = Named("memfd:shmlease-channel");
  auto pages = Named("memfd:shmlease-reader");
  ASSERT_EQ(frames.size(), 1u);
  ASSERT_EQ(pages.size(), 1u);
  EXPECT_EQ(frames[0].perms, "r--s");
  EXPECT_EQ(pages[0].perms, "rw-s");
  EXPECT_NE(
      ::mprotect(reinterpret_cast<void*>(frames[0].start), frames[0].size, PROT_READ | PROT_WRITE),
      0);
  EXPECT_EQ(errno, EACCES);
  // Through /proc/self/map_files the frames cannot be opened writable by another uid (mode 0600),
  // and, whoever opens them, not resized (sealed).
  char path[160];
  std::snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx",
                static_cast<unsigned long>(frames[0].start),
                static_cast<unsigned long>(frames[0].start + frames[0].size));
  int fd = ::open(path, O_RDONLY);
  if (fd >= 0) {  // (map_files needs CAP_SYS_ADMIN)
    EXPECT_NE(::ftruncate(fd, 0), 0);
    ::close(fd);
  }
  int rw = ::open(path, O_RDWR);
  if (rw >= 0) {
    EXPECT_NE(::ftruncate(rw, 0), 0) << "the frames could be shrunk";
    EXPECT_NE(::ftruncate(rw, 1 << 30), 0) << "the frames could be grown";
    ::close(rw);
  }
  Writer w = ch.writer();
  auto writer_frames = Named("memfd:shmlease-channel");
  ASSERT_EQ(writer_frames.size(), 2u);
  int writable = 0;
  for (const Mapping& m : writer_frames) writable += m.perms == "rw-s" ? 1 : 0;
  EXPECT_EQ(writable, 1) << "only the writer's mapping is writable";
  Frame f = w.Claim(1s);
  f.writable_data()[0] = std::byte{42};
  w.Publish(f);
  Frame got = r.Next(1s);
  EXPECT_EQ(got.data()[0], std::byte{42});
  EXPECT_EQ(CodeOf([&] { got.writable_data(); }), Errc::kPermissionDenied);
  got.Release();
  Channel::Remove(client_, "roles");
}

// Read permission lets a user read frames; only write permission lets it be the writer.
// As root the other user is uid 65534 and the bits are the group/other ones; otherwise the test's
// own user is refused by its owner bits alone (the daemon frees both channels when it stops).
TEST_F(ChannelTrustTest, PermissionBitsAreReadAndWrite) {
  OpenSocketToOthers();
  Channel open(client_, "readable", {.format = "B", .shape = {64}, .mode = Root() ? 0644u : 0444u});
  Channel closed(client_, "private", {.format = "B", .shape = {64}, .mode = Root() ? 0600u : 0u});
  const std::string socket = daemon_.socket_path();
  pid_t child = AsAnotherUser([&]() -> int {
    Client c(socket);
    Channel readable(c, "readable");
    Reader r = readable.reader();
    if (CodeOf([&] { readable.writer(); }) != Errc::kPermissionDenied) return 2;
    if (CodeOf([&] { Channel::Remove(c, "readable"); }) != Errc::kPermissionDenied) return 3;
    if (CodeOf([&] { Channel(c, "private"); }) != Errc::kPermissionDenied) return 4;
    for (const ChannelInfo& info : Channel::List(c)) {
      if (info.name == "private") return 5;  // a channel it may not read is not listed
    }
    return 0;
  });
  EXPECT_EQ(ExitStatus(child), 0);
  if (Root()) {
    Channel::Remove(client_, "readable");
    Channel::Remove(client_, "private");
  }
}

// kBlock with a reader timeout: a reader that keeps the writer waiting longer is evicted and told
// why; the writer goes on; the other readers lose nothing.
TEST_F(ChannelTrustTest, ASlowReaderIsEvictedAfterTheReaderTimeout) {
  ChannelOptions options{.format = "I", .shape = {4}, .slots = 2};
  options.reader_timeout = 50ms;
  Channel ch(client_, "slow", options);
  EXPECT_EQ(ch.reader_timeout(), 50ms);
  Reader slow = ch.reader();
  Reader fast = ch.reader();
  Writer w = ch.writer();
  std::vector<uint64_t> got;
  std::thread consumer([&] {
    for (;;) {
      try {
        got.push_back(fast.Next(5s).seq());
      } catch (const Error&) {
        return;
      }
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) PublishEmpty(w);
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 50ms) << "the writer waited for the slow reader first";
  EXPECT_LT(waited, 2s);
  w.Close();
  consumer.join();
  EXPECT_EQ(got.size(), 10u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], i + 1);
  try {
    slow.Next(1s);
    ADD_FAILURE() << "the slow reader was not evicted";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kEvicted);
    EXPECT_NE(std::string(e.what()).find("longer than the reader timeout (50 ms)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(WaitFor([&] { return ch.reader_count() == 1u; }, 2s));
  Channel::Remove(client_, "slow");
}

// A wait for a slot made of short claims (as Python makes it, to see Ctrl-C) still evicts the
// reader that keeps it waiting past the reader timeout.
TEST_F(ChannelTrustTest, TheReaderTimeoutSpansShortClaims) {
  ChannelOptions options{.format = "I", .shape = {4}, .slots = 2};
  options.reader_timeout = 150ms;
  Channel ch(client_, "short", options);
  Reader slow = ch.reader();
  Writer w = ch.writer();
  PublishEmpty(w);
  PublishEmpty(w);
  const auto t0 = std::chrono::steady_clock::now();
  int timeouts = 0;
  for (;;) {
    try {
      Frame f = w.Claim(20ms);
      break;
    } catch (const Error& e) {
      ASSERT_EQ(e.errc(), Errc::kTimeout);
      ++timeouts;
    }
  }
  EXPECT_GE(timeouts, 5);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 150ms);
  EXPECT_EQ(CodeOf([&] { slow.Next(1s); }), Errc::kEvicted);
  Channel::Remove(client_, "short");
}

// After Client::Close() nothing is taken or published through its channels, at once (the daemon
// drops the attachments when it sees the connection close).
TEST_F(ChannelTrustTest, AClosedClientsParticipantsStopAtOnce) {
  Client own = Connect();
  Channel ch(own, "closed", {.format = "B", .shape = {64}, .slots = 4});
  Reader r = ch.reader();
  Writer w = ch.writer();
  Frame claimed = w.Claim(1s);
  PublishEmpty(w);
  own.Close();
  EXPECT_EQ(CodeOf([&] { w.Claim(1s); }), Errc::kConnectionLost);
  EXPECT_EQ(CodeOf([&] { w.Publish(claimed); }), Errc::kConnectionLost);
  EXPECT_EQ(CodeOf([&] { r.TryNext(); }), Errc::kConnectionLost);
  EXPECT_EQ(CodeOf([&] { r.Next(1s); }), Errc::kConnectionLost);
}

// Frames of varying size: each carries its length; the largest is the channel's maximum.
TEST_F(ChannelTrustTest, VariableSizeFramesCarryTheirLength) {
  ChannelOptions options;
  options.max_frame_bytes = 1 << 20;
  Channel ch(client_, "packets", options);
  EXPECT_TRUE(ch.variable());
  EXPECT_EQ(ch.frame_bytes(), 1u << 20);
  Reader r = ch.reader();
  Writer w = ch.writer();
  for (size_t length : {size_t{0}, size_t{1}, size_t{1000}, size_t{1} << 20}) {
    Frame f = w.Claim(1s);
    EXPECT_EQ(f.size(), 1u << 20) << "a claimed frame spans the slot";
    std::memset(f.writable_data().data(), 0x33, length);
    w.Publish(f, length);
    Frame got = r.Next(1s);
    ASSERT_EQ(got.size(), length);
    for (std::byte b : got.data()) ASSERT_EQ(b, std::byte{0x33});
  }
  Frame f = w.Claim(1s);
  EXPECT_EQ(CodeOf([&] { w.Publish(f, (1 << 20) + 1); }), Errc::kInvalidArgument);
  // Opening by name gives the same kind of channel; a fixed shape over it is refused.
  Channel opened(client_, "packets");
  EXPECT_TRUE(opened.variable());
  try {
    Channel(client_, "packets", {.format = "B", .shape = {16}});
    ADD_FAILURE() << "opened a variable-size channel as a fixed one";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("frames of up to 1048576 bytes"), std::string::npos)
        << e.what();
  }
  // A fixed-shape channel accepts only its frame size.
  Channel fixed(client_, "fixed", {.format = "B", .shape = {16}});
  Writer fw = fixed.writer();
  Frame ff = fw.Claim(1s);
  EXPECT_EQ(CodeOf([&] { fw.Publish(ff, 8); }), Errc::kInvalidArgument);
  fw.Publish(ff, 16);
  Channel::Remove(client_, "packets");
  Channel::Remove(client_, "fixed");
}

// A reader's death is known at once from its connection (no polling): its place is free and the
// frames it held are the writer's again, within a moment.
TEST_F(ChannelTrustTest, AKilledReadersPlaceIsFreedByTheDaemonAtOnce) {
  Channel ch(client_, "death", {.format = "B", .shape = {64}, .slots = 2});
  Writer w = ch.writer();
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const std::string socket = daemon_.socket_path();
  pid_t child = ::fork();
  if (child == 0) {
    Client c(socket);
    Channel theirs(c, "death");
    Reader r = theirs.reader();
    char x = 1;
    (void)!::write(ready[1], &x, 1);
    Frame held = r.Next(5s);  // holds slot 1 of 2 until killed
    (void)!::write(ready[1], &x, 1);
    ::pause();
    ::_exit(0);
  }
  char x;
  ASSERT_EQ(::read(ready[0], &x, 1), 1);
  PublishEmpty(w, 1s);
  ASSERT_EQ(::read(ready[0], &x, 1), 1);
  EXPECT_EQ(w.reader_count(), 1u);
  // The reader holds frame 1's slot and has not taken frame 2: no slot is free for frame 3.
  PublishEmpty(w, 1s);
  EXPECT_EQ(CodeOf([&] { w.Claim(50ms); }), Errc::kTimeout);
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  Frame f = w.Claim(2s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  EXPECT_EQ(w.reader_count(), 0u);
  ::close(ready[0]);
  ::close(ready[1]);
  Channel::Remove(client_, "death");
}

// Channels do not survive a daemon restart; a participant of one that died is told, rather than
// waiting for a writer's end nobody would announce. The writer publishes on meanwhile (the memory
// is its own), and a new daemon knows nothing of the channel.
TEST_F(ChannelTrustTest, AParticipantLearnsThatTheDaemonIsGone) {
  Channel ch(client_, "gone", {.format = "B", .shape = {64}, .slots = 4});
  Reader r = ch.reader();
  Writer w = ch.writer();
  PublishEmpty(w);
  EXPECT_EQ(r.Next(1s).seq(), 1u);
  daemon_.Kill(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(CodeOf([&] { r.Next(5s); }), Errc::kConnectionLost);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "told within a slice or two";
  daemon_.Start();
  Client fresh = Connect();
  EXPECT_EQ(CodeOf([&] { Channel(fresh, "gone"); }), Errc::kNotFound);
}

}  // namespace
}  // namespace shmlease
