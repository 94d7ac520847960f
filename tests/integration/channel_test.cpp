// Frame channels against the real daemon: ordering, both policies, many and late readers, and the
// faults of issue 4 (a reader or the writer SIGKILLed mid-way).
#include "shmlease/channel.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.hpp"
#include "daemon_test.hpp"
#include "errc_of.hpp"

namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::CodeOf;
using testing::FailureOf;

class ChannelTest : public testing::DaemonTest {
 protected:
  void TearDown() override {
    testing::RemoveAllSegments(daemon_);
    DaemonTest::TearDown();
  }
  static ChannelOptions Small(ChannelPolicy policy = ChannelPolicy::kBlock, uint32_t slots = 4) {
    return {.format = "I", .shape = {16}, .slots = slots, .policy = policy};
  }
  // Writes `value` into every element and publishes; returns the sequence number.
  static uint64_t Send(Writer& w, uint32_t value, std::chrono::milliseconds timeout = 2s) {
    Frame f = w.Claim(timeout);
    for (uint32_t& x : f.as_writable<uint32_t>()) x = value;
    return w.Publish(f, std::as_bytes(std::span(&value, 1)));
  }
  // Forks a participant of channel `name`: a child process with a connection of its own that runs
  // `body`, which calls ready() once it is set up (ForkParticipant returns then) and never returns:
  // it ends in ::pause(), holding whatever it holds until the test kills it (KillChild).
  // `child` is its pid.
  void ForkParticipant(
      pid_t& child, const std::string& name,
      const std::function<void(Channel&, const std::function<void()>& ready)>& body) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    child = ::fork();
    if (child == 0) {
      Client cc(daemon_.socket_path());
      Channel cch(cc, name);
      body(cch, [&] {
        char x = 1;
        (void)!::write(ready[1], &x, 1);
      });
      ::_exit(0);
    }
    char x;
    ASSERT_EQ(::read(ready[0], &x, 1), 1);
    ::close(ready[0]);
    ::close(ready[1]);
  }
  static void KillChild(pid_t child) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  }
  // Channel `name` on `c` with a reader and a writer, and frame 1 (every element 1) taken by the
  // reader.
  struct FirstFrame {
    FirstFrame(Client& c, const std::string& name, const ChannelOptions& options)
        : ch(c, name, options), r(ch.reader()), w(ch.writer()) {
      Send(w, 1);
      first = r.Next(1s);
    }
    Channel ch;
    Reader r;
    Writer w;
    Frame first;
  };
  static uint32_t ValueOf(const Frame& f) {
    auto v = f.as<uint32_t>();
    for (uint32_t x : v) EXPECT_EQ(x, v[0]);  // never a torn frame
    return v[0];
  }
};

TEST_F(ChannelTest, CreateOpenAndValidate) {
  Client c = Connect();
  Channel ch(c, "cam0", Small());
  EXPECT_EQ(ch.frame_bytes(), 64u);
  EXPECT_EQ(ch.slots(), 4u);
  Channel opened(c, "cam0");
  EXPECT_EQ(opened.shape(), (std::vector<uint64_t>{16}));
  EXPECT_EQ(opened.format(), "I");
  EXPECT_EQ(opened.policy(), ChannelPolicy::kBlock);
  EXPECT_EQ(CodeOf([&] { Channel(c, "cam0", Small(ChannelPolicy::kLatest)); }),
            Errc::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { Channel(c, "nope"); }), Errc::kNotFound);
  EXPECT_EQ(CodeOf([&] { Channel(c, "bad", {.shape = {4}, .slots = 1}); }), Errc::kInvalidArgument);
  Channel::Remove(c, "cam0");
  EXPECT_EQ(CodeOf([&] { Channel::Remove(c, "cam0"); }), Errc::kNotFound);
}

TEST_F(ChannelTest, ConcurrentCreatorsAllGetTheChannel) {
  for (int round = 0; round < 20; ++round) {
    std::string name = "race" + std::to_string(round);
    std::vector<std::thread> threads;
    std::atomic<int> ok{0};
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&] {
        Client c = Connect();
        Channel ch(c, name, Small());
        if (ch.frame_bytes() == 64) ++ok;
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 4) << round;
  }
}

TEST_F(ChannelTest, OneWriterAtATime) {
  Client c = Connect();
  Channel ch(c, "w", Small());
  Writer w = ch.writer();
  EXPECT_EQ(CodeOf([&] { ch.writer(); }), Errc::kTimeout);
  Client other = Connect();
  Channel ch2(other, "w");
  EXPECT_EQ(CodeOf([&] { ch2.writer(50ms); }), Errc::kTimeout);
  w.Close();
  Writer w2 = ch2.writer(1s);
  EXPECT_TRUE(w2.valid());
}

TEST_F(ChannelTest, BlockPolicyDeliversEveryFrameInOrderWithMeta) {
  Client c = Connect();
  Channel ch(c, "ord", Small());
  Reader r = ch.reader();
  Writer w = ch.writer();
  std::thread producer([&] {
    for (uint32_t i = 1; i <= 2000; ++i) Send(w, i);
    w.Close();
  });
  uint64_t expected = 1;
  for (;;) {
    Frame f;
    try {
      f = r.Next(5s);
    } catch (const Error& e) {
      EXPECT_EQ(e.errc(), Errc::kEndOfStream);
      break;
    }
    EXPECT_EQ(f.seq(), expected);
    EXPECT_EQ(ValueOf(f), expected);
    uint32_t meta;
    ASSERT_EQ(f.meta().size(), sizeof(meta));
    std::memcpy(&meta, f.meta().data(), sizeof(meta));
    EXPECT_EQ(meta, expected);
    EXPECT_EQ(f.missed(), 0u);
    EXPECT_GT(f.timestamp_ns(), 0);
    EXPECT_FALSE(f.writable());
    EXPECT_EQ(CodeOf([&] { f.writable_data(); }), Errc::kPermissionDenied);
    ++expected;
  }
  producer.join();
  EXPECT_EQ(expected, 2001u);
}

TEST_F(ChannelTest, BlockPolicyBackpressureAndSlowReader) {
  Client c = Connect();
  Channel ch(c, "bp", Small(ChannelPolicy::kBlock, 3));
  Reader r = ch.reader();
  Writer w = ch.writer();
  for (uint32_t i = 1; i <= 3; ++i) Send(w, i);
  // Every slot is unread: the writer waits, then times out.
  EXPECT_EQ(CodeOf([&] { w.Claim(30ms); }), Errc::kTimeout);
  Frame first = r.Next(1s);
  EXPECT_EQ(first.seq(), 1u);
  EXPECT_EQ(CodeOf([&] { w.Claim(30ms); }), Errc::kTimeout);  // still held
  first.Release();
  Send(w, 4, 1s);
  for (uint64_t s = 2; s <= 4; ++s) EXPECT_EQ(r.Next(1s).seq(), s);
  EXPECT_EQ(CodeOf([&] { r.Next(20ms); }), Errc::kTimeout);
  EXPECT_FALSE(r.TryNext());
}

TEST_F(ChannelTest, LatestPolicySkipsAndCountsMissed) {
  Client c = Connect();
  Channel ch(c, "lat", Small(ChannelPolicy::kLatest, 3));
  Reader r = ch.reader();
  Writer w = ch.writer();
  for (uint32_t i = 1; i <= 10; ++i) Send(w, i, 0ms);  // never waits for the reader
  Frame f = r.Next(1s);
  EXPECT_EQ(f.seq(), 10u);
  EXPECT_EQ(ValueOf(f), 10u);
  EXPECT_EQ(f.missed(), 9u);
  // The held frame is not overwritten; the writer keeps going with the other slots.
  for (uint32_t i = 11; i <= 20; ++i) Send(w, i, 0ms);
  EXPECT_EQ(ValueOf(f), 10u);
  Frame g = r.Next(1s);
  EXPECT_EQ(g.seq(), 20u);
  EXPECT_EQ(g.missed(), 9u);
  Send(w, 21, 0ms);
  Frame h = r.Next(1s);
  EXPECT_EQ(h.seq(), 21u);
  EXPECT_EQ(h.missed(), 0u);
}

TEST_F(ChannelTest, ManyReadersAndLateJoiner) {
  Client c = Connect();
  Channel ch(c, "many", Small(ChannelPolicy::kBlock, 4));
  Writer w = ch.writer();
  std::vector<Reader> readers;
  for (int i = 0; i < 5; ++i) readers.push_back(ch.reader());
  EXPECT_EQ(w.reader_count(), 5u);
  for (uint32_t i = 1; i <= 2; ++i) Send(w, i);
  Reader late = ch.reader();  // sees only what comes after it joined
  std::vector<std::thread> threads;
  std::vector<int> counts(readers.size() + 1, 0);
  for (size_t k = 0; k <= readers.size(); ++k) {
    Reader* r = k < readers.size() ? &readers[k] : &late;
    threads.emplace_back([r, k, &counts] {
      uint64_t prev = 0;
      for (;;) {
        try {
          Frame f = r->Next(5s);
          EXPECT_GT(f.seq(), prev);
          EXPECT_EQ(f.seq(), prev == 0 ? f.seq() : prev + 1);
          prev = f.seq();
          ++counts[k];
        } catch (const Error& e) {
          EXPECT_EQ(e.errc(), Errc::kEndOfStream);
          return;
        }
      }
    });
  }
  for (uint32_t i = 3; i <= 300; ++i) Send(w, i);
  w.Close();
  for (auto& t : threads) t.join();
  for (size_t k = 0; k < readers.size(); ++k) EXPECT_EQ(counts[k], 300) << k;
  EXPECT_EQ(counts.back(), 298);
}

TEST_F(ChannelTest, KilledReaderHoldingFramesDoesNotStallTheWriter) {
  Client c = Connect();
  Channel ch(c, "kr", Small(ChannelPolicy::kBlock, 3));
  Writer w = ch.writer();
  pid_t child = -1;
  ASSERT_NO_FATAL_FAILURE(ForkParticipant(child, "kr", [](Channel& cch, const auto& ready) {
    Reader r = cch.reader();
    ready();
    Frame a = r.Next(5s);  // held until the kill
    Frame b = r.Next(5s);
    ::pause();
  }));
  Reader mine = ch.reader();
  for (uint32_t i = 1; i <= 3; ++i) Send(w, i);
  for (int i = 0; i < 3; ++i) mine.Next(1s);
  ::usleep(50000);  // the child takes two frames and holds them
  KillChild(child);
  // The dead reader's frames come back: the writer can go round the ring again.
  for (uint32_t i = 4; i <= 10; ++i) {
    Send(w, i, 2s);
    EXPECT_EQ(mine.Next(1s).seq(), i);
  }
  EXPECT_EQ(w.reader_count(), 1u);
}

TEST_F(ChannelTest, KilledWriterMidFrameEndsStreamAndANewWriterTakesOver) {
  Client c = Connect();
  Channel ch(c, "kw", Small(ChannelPolicy::kBlock, 4));
  Reader r = ch.reader();
  pid_t child = -1;
  ASSERT_NO_FATAL_FAILURE(ForkParticipant(child, "kw", [](Channel& cch, const auto& ready) {
    Writer w = cch.writer();
    Send(w, 1);
    Frame half = w.Claim(1s);
    for (uint32_t& v : half.as_writable<uint32_t>()) v = 0xDEAD;  // never published
    ready();
    ::pause();
  }));
  KillChild(child);
  Frame f = r.Next(2s);
  EXPECT_EQ(f.seq(), 1u);
  EXPECT_EQ(ValueOf(f), 1u);
  f.Release();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(CodeOf([&] { r.Next(5s); }), Errc::kEndOfStream);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  // The daemon released the dead writer's token: a new writer takes over, seq continues.
  Writer w = ch.writer(2s);
  for (uint32_t i = 2; i <= 5; ++i) Send(w, i, 1s);  // all 4 slots: the half-written one too
  for (uint64_t s = 2; s <= 5; ++s) {
    Frame g = r.Next(1s);
    EXPECT_EQ(g.seq(), s);
    EXPECT_EQ(ValueOf(g), s);
  }
}

TEST_F(ChannelTest, FilenoIsReadableWhenAFrameIsReady) {
  Client c = Connect();
  Channel ch(c, "fd", Small());
  Reader r = ch.reader();
  Writer w = ch.writer();
  pollfd p{r.fileno(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 30), 0);
  Send(w, 7);
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  Frame f = r.TryNext();
  ASSERT_TRUE(f);
  EXPECT_EQ(ValueOf(f), 7u);
  EXPECT_EQ(::poll(&p, 1, 30), 0);  // drained
  w.Close();
  ASSERT_EQ(::poll(&p, 1, 2000), 1);  // end of stream is an event too
  EXPECT_EQ(CodeOf([&] { r.Next(100ms); }), Errc::kEndOfStream);
}

// Once the end was reported (Next's kEndOfStream or AtEnd()), fileno() is quiet: a poll loop
// does not wake forever. A new writer's frames and its own end make it readable again.
TEST_F(ChannelTest, FilenoQuietOnceEndReported) {
  Client c = Connect();
  Channel ch(c, "fdend", Small());
  Reader r = ch.reader();
  pollfd p{r.fileno(), POLLIN, 0};
  EXPECT_FALSE(r.AtEnd());  // no writer yet is not an end
  {
    Writer w = ch.writer();
    Send(w, 1);
  }  // closed with a frame unread
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  EXPECT_FALSE(r.AtEnd());  // a frame is left
  EXPECT_FALSE(r.ended());
  ASSERT_EQ(ValueOf(r.TryNext()), 1u);
  ASSERT_EQ(::poll(&p, 1, 2000), 1);  // the end is still to be reported
  EXPECT_FALSE(r.TryNext());
  EXPECT_TRUE(r.AtEnd());
  EXPECT_TRUE(r.ended());
  EXPECT_EQ(::poll(&p, 1, 200), 0);  // drained, and the helper does not signal it again
  EXPECT_TRUE(r.AtEnd());            // still the end, still quiet
  EXPECT_EQ(::poll(&p, 1, 100), 0);

  Writer w = ch.writer();
  EXPECT_FALSE(r.ended());
  EXPECT_FALSE(r.AtEnd());
  Send(w, 2);
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  ASSERT_EQ(ValueOf(r.TryNext()), 2u);
  EXPECT_EQ(::poll(&p, 1, 50), 0);
  w.Close();  // a new end: readable again, reported by Next this time
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  EXPECT_EQ(CodeOf([&] { r.Next(100ms); }), Errc::kEndOfStream);
  EXPECT_TRUE(r.ended());
  EXPECT_EQ(::poll(&p, 1, 200), 0);
}

// A writer that dies (no Close) ends the stream too: AtEnd() sees it, and the fd goes quiet.
TEST_F(ChannelTest, AtEndAfterWriterKilled) {
  Client c = Connect();
  Channel ch(c, "fddead", Small());
  Reader r = ch.reader();
  pid_t child = -1;
  ASSERT_NO_FATAL_FAILURE(ForkParticipant(child, "fddead", [](Channel& cch, const auto& ready) {
    Writer w = cch.writer();
    ready();
    ::pause();
  }));
  KillChild(child);
  pollfd p{r.fileno(), POLLIN, 0};  // after fork(): the helper thread starts here
  auto deadline = std::chrono::steady_clock::now() + 2s;
  bool ended = false;
  while (!ended && std::chrono::steady_clock::now() < deadline) {
    if (::poll(&p, 1, 100) == 1) {
      EXPECT_FALSE(r.TryNext());
      ended = r.AtEnd();
    }
  }
  ASSERT_TRUE(ended);
  EXPECT_EQ(::poll(&p, 1, 200), 0);
}

TEST_F(ChannelTest, BusyPollReader) {
  Client c = Connect();
  Channel ch(c, "bp2", Small());
  Reader r = ch.reader({.busy_poll = true});
  Writer w = ch.writer();
  std::thread t([&] {
    for (uint32_t i = 1; i <= 100; ++i) Send(w, i);
  });
  for (uint64_t s = 1; s <= 100; ++s) EXPECT_EQ(r.Next(2s).seq(), s);
  t.join();
}

// With two slots and a reader that always holds one, every claim is of the slot of the newest
// frame, the one the header's record describes: the writer marks the slot `claimed` first, so a
// reader taking that frame by the record never gets the bytes of the next one.
TEST_F(ChannelTest, AWriterReusingTheNewestFramesSlotNeverShowsAFrameThatChanges) {
  Client c = Connect();
  Channel ch(c, "reuse", Small(ChannelPolicy::kLatest, 2));
  Reader r = ch.reader({.busy_poll = true});
  Writer w = ch.writer();
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (uint32_t i = 1; !stop.load(); ++i) Send(w, i);
    w.Close();
  });
  uint64_t taken = 0, last = 0;
  // Stops at the first wrong frame (the writer thread must still be stopped and joined).
  for (const auto end = std::chrono::steady_clock::now() + 500ms;
       std::chrono::steady_clock::now() < end && !HasFailure(); ++taken) {
    Frame f = r.Next(2s);
    EXPECT_GT(f.seq(), last);
    last = f.seq();
    const uint32_t value = ValueOf(f);
    EXPECT_EQ(value, f.seq());  // the bytes of the frame taken, not of a later one
    uint32_t meta = 0;
    EXPECT_EQ(f.meta().size(), sizeof(meta));
    std::memcpy(&meta, f.meta().data(), std::min(sizeof(meta), f.meta().size()));
    EXPECT_EQ(meta, value);
    if (taken % 2 == 0) std::this_thread::sleep_for(20us);  // the writer goes on meanwhile
    EXPECT_EQ(ValueOf(f), value) << "a held frame changed";
  }
  stop.store(true);
  writer.join();
  EXPECT_GT(taken, 100u);
}

// --- Holding another process's frame (Channel::Hold): how arrays of frames travel ---------------

// Polls the daemon until the channel has `n` holders (a holder leaves with a one-way message).
void ExpectHoldersSoon(Client& c, const std::string& name, uint32_t n) {
  for (int i = 0; i < 200 && Channel::Stat(c, name).holders != n; ++i) ::usleep(10000);
  EXPECT_EQ(Channel::Stat(c, name).holders, n);
}

TEST_F(ChannelTest, AHolderKeepsItsSlotAndNeverMakesTheWriterWait) {
  Client c = Connect();
  FirstFrame one(c, "hold", Small(ChannelPolicy::kBlock, 3));
  const FrameLocation where = one.first.location();
  EXPECT_EQ(where.channel_name, "hold");
  EXPECT_EQ(where.seq, 1u);
  Client other = Connect();
  Channel theirs(other, "hold");
  Frame held = theirs.Hold(where);
  EXPECT_TRUE(held.held());
  EXPECT_FALSE(held.writable());
  EXPECT_EQ(held.seq(), 1u);
  EXPECT_EQ(ValueOf(held), 1u);
  ChannelInfo info = Channel::Stat(c, "hold");
  EXPECT_EQ(info.readers, 1u);  // a holder is not a reader: wait_for_readers does not count it
  EXPECT_EQ(info.holders, 1u);
  EXPECT_EQ(one.w.reader_count(), 1u);
  one.first.Release();
  // Only the holder has frame 1 now. The writer goes round the two other slots (the holder has
  // read "everything", so the block policy never waits for it) and never into the held one.
  for (uint32_t i = 2; i <= 30; ++i) {
    Send(one.w, i, 1s);
    EXPECT_EQ(ValueOf(one.r.Next(1s)), i);
  }
  EXPECT_EQ(ValueOf(held), 1u);
  // Two more frames fill the two free slots; with the third held the writer must wait.
  Send(one.w, 31, 1s);
  Send(one.w, 32, 1s);
  EXPECT_EQ(CodeOf([&] { one.w.Claim(30ms); }), Errc::kTimeout);
  held.Release();
  EXPECT_EQ(one.r.Next(1s).seq(), 31u);  // the reader lets go of 31: its slot is free too
  Send(one.w, 33, 1s);
  ExpectHoldersSoon(c, "hold", 0);
}

TEST_F(ChannelTest, HoldsOfOneHandleShareOnePlaceAndTheSlotGoesWithTheLast) {
  Client c = Connect();
  FirstFrame one(c, "share", Small(ChannelPolicy::kLatest, 2));
  Client other = Connect();
  Channel theirs(other, "share");
  Frame a = theirs.Hold(one.first.location());
  Frame b = theirs.Hold(one.first.location());
  EXPECT_EQ(Channel::Stat(c, "share").holders, 1u);
  one.first.Release();
  Send(one.w, 2);
  Frame second = one.r.Next(1s);  // now the reader holds one slot and `a`/`b` the other
  a.Release();
  EXPECT_EQ(CodeOf([&] { one.w.Claim(30ms); }), Errc::kTimeout);  // `b` still holds frame 1
  EXPECT_EQ(ValueOf(b), 1u);
  b.Release();
  Frame claimed = one.w.Claim(1s);
  EXPECT_TRUE(claimed.valid());
  ExpectHoldersSoon(c, "share", 0);
}

TEST_F(ChannelTest, HoldRefusesWhatIsNoLongerThere) {
  Client c = Connect();
  Client other = Connect();
  FrameLocation gone;
  {
    FirstFrame one(c, "again", Small(ChannelPolicy::kBlock, 2));
    gone = one.first.location();
    one.first.Release();  // nobody holds frame 1
    Channel theirs(other, "again");
    Send(one.w, 2);
    one.r.Next(1s);
    Send(one.w, 3);  // into frame 1's slot
    one.r.Next(1s);
    const auto reused = FailureOf([&] { theirs.Hold(gone); });
    EXPECT_EQ(reused.code, Errc::kNotFound);
    EXPECT_TRUE(reused.Says("frame 1 is no longer in slot")) << reused.message;
    FrameLocation no_slot = gone;
    no_slot.slot = 2;
    EXPECT_EQ(CodeOf([&] { theirs.Hold(no_slot); }), Errc::kInvalidArgument);
    Frame claimed = one.w.Claim(1s);
    EXPECT_EQ(CodeOf([&] { claimed.location(); }), Errc::kInvalidArgument);
    EXPECT_EQ(CodeOf([&] { Frame().location(); }), Errc::kInvalidArgument);
    Channel::Remove(c, "again");
  }
  // Created again under the name, with a frame 1 in the same slot: never taken for the old one.
  Channel ch(c, "again", Small(ChannelPolicy::kBlock, 2));
  Writer w = ch.writer();
  Send(w, 7);
  Channel theirs(other, "again");
  const auto recreated = FailureOf([&] { theirs.Hold(gone); });
  EXPECT_EQ(recreated.code, Errc::kNotFound);
  EXPECT_TRUE(recreated.Says("removed and created again")) << recreated.message;
  ExpectHoldersSoon(c, "again", 0);
}

TEST_F(ChannelTest, AKilledHolderGivesItsSlotBack) {
  Client c = Connect();
  FirstFrame one(c, "kh", Small(ChannelPolicy::kLatest, 2));
  const FrameLocation where = one.first.location();
  pid_t child = -1;
  ASSERT_NO_FATAL_FAILURE(ForkParticipant(child, "kh", [where](Channel& cch, const auto& ready) {
    Frame held = cch.Hold(where);
    ready();
    ::pause();
  }));
  one.first.Release();
  Send(one.w, 2);
  Frame second = one.r.Next(1s);
  EXPECT_EQ(CodeOf([&] { one.w.Claim(30ms); }), Errc::kTimeout);  // the child holds the other slot
  EXPECT_EQ(Channel::Stat(c, "kh").holders, 1u);
  KillChild(child);
  Frame claimed = one.w.Claim(2s);  // the daemon gave the dead holder's place back
  EXPECT_TRUE(claimed.valid());
  EXPECT_EQ(Channel::Stat(c, "kh").holders, 0u);
}

TEST_F(ChannelTest, WhenAllReaderPlacesAreTakenTheErrorSaysByWhom) {
  Client c = Connect();
  FirstFrame one(c, "full", Small(ChannelPolicy::kLatest, 2));
  std::vector<Reader> readers;
  for (int i = 0; i < 62; ++i) readers.push_back(one.ch.reader());
  Client other = Connect();
  Channel theirs(other, "full");
  Frame held = theirs.Hold(one.first.location());  // the 64th place
  const auto full = FailureOf([&] { one.ch.reader(); });
  EXPECT_EQ(full.code, Errc::kLimitLeases);
  EXPECT_TRUE(full.Says("all 64 reader places taken: 63 by readers, 1 by holders of frames"))
      << full.message;
  held.Release();
  ExpectHoldersSoon(c, "full", 0);
  Reader last = one.ch.reader();  // the holder's place is free again
  EXPECT_EQ(Channel::Stat(c, "full").readers, 64u);
}

TEST_F(ChannelTest, AHolderThatKeepsTheWriterFromEverySlotIsEvictedLikeAReader) {
  Client c = Connect();
  ChannelOptions options = Small(ChannelPolicy::kLatest, 2);
  options.reader_timeout = 100ms;
  FirstFrame one(c, "evict", options);
  Client other = Connect();
  Channel theirs(other, "evict");
  std::vector<Frame> held;
  held.push_back(theirs.Hold(one.first.location()));
  one.first.Release();
  Send(one.w, 2);
  held.push_back(theirs.Hold(one.r.Next(1s).location()));
  // The reader holds nothing now, the holder both slots: it blocks the writer beyond 100 ms.
  Frame claimed = one.w.Claim(5s);
  EXPECT_TRUE(claimed.valid());
  for (const Frame& f : held) EXPECT_FALSE(f.held());
  EXPECT_EQ(ValueOf(held[0]), 1u);  // its mapping stays readable
  // The writer took frame 1's slot: holding it again is refused; frame 2 is still there.
  EXPECT_EQ(CodeOf([&] { theirs.Hold(held[0].location()); }), Errc::kNotFound);
  EXPECT_EQ(ValueOf(theirs.Hold(held[1].location())), 2u);
}

}  // namespace
}  // namespace shmlease
