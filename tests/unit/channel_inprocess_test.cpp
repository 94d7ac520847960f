#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <thread>
#include <vector>

#include "errc_of.hpp"
#include "inprocess_daemon.hpp"
#include "shmlease/channel.hpp"

// A channel's writer and readers through the daemon run in this process (inprocess_daemon.hpp):
// the channel's own logic, checked in milliseconds; the multi-process cases are in
// tests/integration/channel_test.cpp.
namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::CodeOf;

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
  EXPECT_TRUE(w.WaitForReaders(1, 1s));
  EXPECT_EQ(w.reader_count(), 1u) << "a destroyed reader gives its slot back";
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

}  // namespace
}  // namespace shmlease
