#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "errc_of.hpp"
#include "wait_for.hpp"
#include "inprocess_daemon.hpp"
#include "shmlease/channel.hpp"

// A channel's writer and readers through the daemon run in this process (inprocess_daemon.hpp):
// the channel's own logic, checked in milliseconds; the multi-process cases are in
// tests/integration/channel_test.cpp.
namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::CodeOf;
using testing::WaitFor;

class ChannelInProcessTest : public testing::InProcessDaemonTest {
 protected:
  static ChannelOptions Small(uint32_t slots = 4) {
    return {.format = "I", .shape = {8}, .slots = slots, .policy = ChannelPolicy::kBlock};
  }
  // Fills the frame with `value` and publishes it with `value` as its metadata.
  static uint64_t Send(Writer& w, uint32_t value) {
    Frame f = w.Claim(2s);
    for (uint32_t& x : f.as_writable<uint32_t>()) x = value;
    return w.Publish(f, std::as_bytes(std::span(&value, 1)));
  }
  static uint32_t MetaOf(const Frame& f) {
    uint32_t value = 0;
    EXPECT_EQ(f.meta().size(), sizeof(value));
    std::memcpy(&value, f.meta().data(), sizeof(value));
    return value;
  }

  Client client_ = Connect();
};

TEST_F(ChannelInProcessTest, FramesArriveInOrder) {
  Channel ch(client_, "ord", Small());
  EXPECT_EQ(ch.frame_bytes(), 32u);
  Reader r = ch.reader();
  Writer w = ch.writer();
  EXPECT_EQ(w.reader_count(), 1u);
  std::thread producer([&] {
    for (uint32_t i = 1; i <= 500; ++i) Send(w, i);
    w.Close();
  });
  for (uint64_t seq = 1; seq <= 500; ++seq) {
    Frame f = r.Next(5s);
    EXPECT_EQ(f.seq(), seq);
    for (uint32_t x : f.as<uint32_t>()) EXPECT_EQ(x, seq) << "a torn frame";
    EXPECT_EQ(MetaOf(f), seq);
    EXPECT_TRUE(f.held());
  }
  EXPECT_EQ(CodeOf([&] { r.Next(5s); }), Errc::kEndOfStream) << "the writer closed after 500";
  producer.join();
  EXPECT_TRUE(r.ended());
  Channel::Remove(client_, "ord");
}

TEST_F(ChannelInProcessTest, AReaderThatJoinsSeesOnlyLaterFrames) {
  Channel ch(client_, "join", Small());
  Writer w = ch.writer();
  Reader early = ch.reader();
  Send(w, 1);
  Send(w, 2);
  Client other = Connect();
  Channel opened(other, "join");  // opens the existing channel, whatever its shape
  EXPECT_EQ(opened.shape(), (std::vector<uint64_t>{8}));
  Reader late = opened.reader();
  EXPECT_EQ(w.reader_count(), 2u);
  EXPECT_FALSE(late.TryNext()) << "nothing published since it joined";
  Send(w, 3);
  Frame f = late.Next(1s);
  EXPECT_EQ(f.seq(), 3u);
  EXPECT_EQ(MetaOf(f), 3u);
  for (uint64_t seq = 1; seq <= 3; ++seq) EXPECT_EQ(early.Next(1s).seq(), seq);
  EXPECT_EQ(CodeOf([&] { late.Next(20ms); }), Errc::kTimeout);
  f.Release();
  late = Reader();
  // The reader leaves with a one-way message: its place is free as soon as the daemon reads it.
  EXPECT_TRUE(WaitFor([&] { return w.reader_count() == 1u; }, 2s))
      << "a destroyed reader gives its place back";
  Channel::Remove(client_, "join");
}

TEST_F(ChannelInProcessTest, CloseEndsTheStreamAfterTheLastFrameAndANewWriterGoesOn) {
  Channel ch(client_, "close", Small());
  Reader r = ch.reader();
  {
    Writer w = ch.writer();
    EXPECT_EQ(CodeOf([&] { ch.writer(); }), Errc::kTimeout) << "one writer at a time";
    Send(w, 1);
    w.Close();
    EXPECT_FALSE(w.valid());
  }
  EXPECT_EQ(r.Next(1s).seq(), 1u) << "what was published before the close still arrives";
  EXPECT_EQ(CodeOf([&] { r.Next(1s); }), Errc::kEndOfStream);
  EXPECT_TRUE(r.AtEnd());
  Writer next = ch.writer(1s);
  EXPECT_EQ(Send(next, 2), 2u) << "sequence numbers go on";
  Frame f = r.Next(1s);
  EXPECT_EQ(f.seq(), 2u);
  EXPECT_FALSE(r.ended());
  f.Release();
  next.Close();
  Channel::Remove(client_, "close");
  EXPECT_EQ(CodeOf([&] { Channel(client_, "close"); }), Errc::kNotFound);
}

TEST_F(ChannelInProcessTest, AClosedClientsFramesAreNoLongerHeld) {
  Channel ch(client_, "gone", Small());
  Writer w = ch.writer();
  Reader r = ch.reader();
  Send(w, 9);
  Frame f = r.Next(1s);
  EXPECT_TRUE(f.held());
  Channel::Remove(client_, "gone");
  client_.Close();
  EXPECT_FALSE(f.held());
}

// A participant may write the control block (every reader must be able to): one that rewrites the
// geometry, every slot's meta size and the published-slot hint, while the writer publishes, makes
// nobody crash. Openers that came before keep their private copy of the geometry; a frame whose
// meta size is out of range is refused with kBadMessage and the stream goes on; a new opener
// refuses the rewritten header.
TEST_F(ChannelInProcessTest, AReaderWaitingForTheChannelGetsTheFirstFrame) {
  // The reader starts first and waits for the channel by name; the writer waits for it before
  // its first publish, so frame 1 is not missed.
  std::atomic<uint64_t> first_seq{0};
  std::thread reader([&] {
    Client other = Connect();
    Channel ch(other, "early", {.wait = 5s});
    Reader r = ch.reader();
    first_seq = r.Next(5s).seq();
  });
  std::this_thread::sleep_for(20ms);  // the reader is waiting: the channel does not exist yet
  Channel ch(client_, "early", Small());
  Writer w = ch.writer();
  ASSERT_TRUE(w.WaitForReaders(1, 5s));
  Send(w, 1);
  reader.join();
  EXPECT_EQ(first_seq.load(), 1u);
  Channel::Remove(client_, "early");
}

TEST_F(ChannelInProcessTest, WaitingForAMissingChannelTimesOutQuickly) {
  auto start = std::chrono::steady_clock::now();
  try {
    Channel(client_, "never", {.wait = 30ms});
    FAIL() << "opened a channel that does not exist";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kTimeout);
    EXPECT_NE(std::string(e.what()).find("'never'"), std::string::npos) << e.what();
  }
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 30ms);
  EXPECT_LT(took, 1s);
  EXPECT_EQ(CodeOf([&] { Channel(client_, "never"); }), Errc::kNotFound) << "no wait by default";
  EXPECT_EQ(CodeOf([&] { Channel(client_, "never", {.wait = -5ms}); }), Errc::kInvalidArgument);
  bool asked = false;
  EXPECT_EQ(CodeOf([&] {
              Channel(client_, "never", {.wait = kWaitForever, .interrupted = [&] {
                                           asked = true;
                                           return true;
                                         }});
            }),
            Errc::kCancelled);
  EXPECT_TRUE(asked);
}

TEST_F(ChannelInProcessTest, SlotsAndPolicyAreCheckedOnlyWhenGiven) {
  Channel ch(client_, "shaped",
             {.format = "I", .shape = {8}, .slots = 4, .policy = ChannelPolicy::kLatest});
  Channel same(client_, "shaped", {.format = "I", .shape = {8}});  // slots, policy unset
  EXPECT_EQ(same.slots(), 4u);
  EXPECT_EQ(same.policy(), ChannelPolicy::kLatest);
  Channel explicit_same(client_, "shaped", {.format = "I", .shape = {8}, .slots = 4});
  EXPECT_EQ(explicit_same.slots(), 4u);
  try {
    Channel(client_, "shaped", {.format = "I", .shape = {8}, .slots = 8});
    FAIL() << "a different slots value was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kInvalidArgument);
    std::string what = e.what();
    EXPECT_NE(what.find("4 slots"), std::string::npos) << what;
    EXPECT_NE(what.find("8 slots"), std::string::npos) << what;
  }
  EXPECT_EQ(CodeOf([&] {
              Channel(client_, "shaped",
                      {.format = "I", .shape = {8}, .policy = ChannelPolicy::kBlock});
            }),
            Errc::kInvalidArgument);
  Channel::Remove(client_, "shaped");
}

// A channel never adopts, overwrites or removes a segment that is not its own: a user's
// `model.data` beside a new channel `model` (or one planted by another user) is refused and kept.
// A name is a segment's or a channel's, never both, and neither adopts or removes the other.
TEST_F(ChannelInProcessTest, ChannelsAndSegmentsShareOneNamespace) {
  client_.Create("model", {.size = 4096});
  {
    Lease w = client_.Acquire("model", Mode::kWrite);
    std::memset(w.writable_data().data(), 0x5A, 4096);
  }
  try {
    Channel ch(client_, "model", Small());
    ADD_FAILURE() << "created a channel over a segment";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kAlreadyExists);
    EXPECT_NE(std::string(e.what()).find("a segment named 'model' exists"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(CodeOf([&] { Channel(client_, "model"); }), Errc::kNotFound);
  Lease r = client_.Acquire("model", Mode::kRead);
  for (std::byte b : r.data()) ASSERT_EQ(b, std::byte{0x5A});
  r.Release();

  Channel cam(client_, "cam", Small());
  try {
    client_.Create("cam", {.size = 4096});
    ADD_FAILURE() << "created a segment over a channel";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kAlreadyExists);
    EXPECT_NE(std::string(e.what()).find("a channel named 'cam' exists"), std::string::npos)
        << e.what();
  }
  try {
    client_.Acquire("cam", Mode::kRead);
    ADD_FAILURE() << "leased a channel as a segment";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kNotFound);
    EXPECT_NE(std::string(e.what()).find("'cam' is a channel"), std::string::npos) << e.what();
  }
  // The old part names are ordinary names now.
  client_.Create("cam.data", {.size = 4096});
  client_.Create("cam.writer", {.size = 4096});
  Writer w = cam.writer();
  Reader rd = cam.reader();
  Send(w, 7);
  EXPECT_EQ(MetaOf(rd.Next(1s)), 7u);
  std::vector<std::string> names;
  for (const SegmentInfo& info : client_.List()) names.push_back(info.name);
  EXPECT_EQ(names, (std::vector<std::string>{"cam.data", "cam.writer", "model"}));
  std::vector<ChannelInfo> channels = Channel::List(client_);
  ASSERT_EQ(channels.size(), 1u);
  EXPECT_EQ(channels[0].name, "cam");
  EXPECT_EQ(channels[0].readers, 1u);
  EXPECT_EQ(channels[0].writer_pid, static_cast<uint32_t>(::getpid()));
  for (const char* name : {"model", "cam.data", "cam.writer"}) client_.Remove(name);
  Channel::Remove(client_, "cam");
}

TEST_F(ChannelInProcessTest, RemoveTakesOnlyWhatItNames) {
  client_.Create("plain", {.size = 4096});
  try {
    Channel::Remove(client_, "plain");
    ADD_FAILURE() << "removed a plain segment as a channel";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kNotFound);
    EXPECT_NE(std::string(e.what()).find("'plain' is a segment"), std::string::npos) << e.what();
  }
  EXPECT_EQ(client_.List().size(), 1u) << "the segment is kept";
  Channel ch(client_, "chan", Small());
  EXPECT_EQ(CodeOf([&] { client_.Remove("chan"); }), Errc::kNotFound);
  EXPECT_EQ(Channel::List(client_).size(), 1u) << "the channel is kept";
  EXPECT_EQ(CodeOf([&] { Channel::Remove(client_, "absent"); }), Errc::kNotFound);
  // Removed while attached: the participants go on; the name is free at once.
  Writer w = ch.writer();
  Reader r = ch.reader();
  Channel::Remove(client_, "chan");
  EXPECT_TRUE(Channel::List(client_).empty());
  Send(w, 5);
  EXPECT_EQ(MetaOf(r.Next(1s)), 5u);
  Channel again(client_, "chan", Small());
  Channel::Remove(client_, "chan");
  client_.Remove("plain");
}

}  // namespace
}  // namespace shmlease
