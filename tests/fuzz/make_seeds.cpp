// Writes the seed corpus of fuzz_protocol: every request and reply type encoded by the real codec,
// as a whole frame ("frame-*"), as the fuzzer's typed-body form (u16 type, then the body:
// "body-*"), and a few frames back to back ("stream-*"). Run after a protocol change:
//   fuzz_make_seeds tests/fuzz/corpus/fuzz_protocol
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "shmlease/codec.hpp"
#include "shmlease/protocol.hpp"

namespace proto = shmlease::proto;

namespace {

void Write(const std::string& dir, const std::string& name, const std::vector<std::byte>& bytes) {
  std::ofstream out(dir + "/" + name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// The typed-body form: the frame's u16 type, then its body.
std::vector<std::byte> TypedBody(const std::vector<std::byte>& frame) {
  std::vector<std::byte> out(frame.begin() + 8, frame.begin() + 10);
  out.insert(out.end(), frame.begin() + proto::kHeaderSize, frame.end());
  return out;
}

proto::SegmentInfo Info() {
  proto::SegmentInfo info;
  info.id = 7;
  info.name = "camera.left";
  info.size = 1080 * 1920 * 4;
  info.format = "f";
  info.shape = {1080, 1920};
  info.created_unix_ns = 1700000000123456789;
  info.creator_pid = 4242;
  info.creator_uid = 1000;
  info.readers = 2;
  info.writers = 0;
  info.waiting = 1;
  info.page_size = 4096;
  info.owner_uid = 1000;
  info.owner_gid = 1000;
  info.mode = 0640;
  return info;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  std::vector<std::pair<std::string, proto::Request>> requests = {
      {"hello", proto::Hello{proto::kVersion, "seed-client"}},
      {"ping", proto::Ping{}},
      {"create", proto::Create{"frames", 0, "f", {480, 640, 3}, proto::kCreateExistOk, 0640}},
      {"create-raw", proto::Create{"raw", 4096, "", {}, 0, proto::kDefaultMode}},
      {"acquire", proto::Acquire{"frames", proto::LeaseMode::kWrite, 1, 250}},
      {"acquire-forever",
       proto::Acquire{"frames", proto::LeaseMode::kRead, 0, proto::kWaitForever}},
      {"release", proto::Release{42}},
      {"remove", proto::Remove{"frames"}},
      {"stat", proto::Stat{"frames"}},
      {"list", proto::List{}},
      {"chmod", proto::Chmod{"frames", 0664}},
      {"stats", proto::Stats{}},
      {"reclaim", proto::Reclaim{{{3, 7, 1700000000123456789, proto::LeaseMode::kWrite, 0}},
                                 {{7, 1700000000123456789, 1}}}},
      {"cancel", proto::Cancel{5}},
  };
  // Added later: written after the others, so the earlier seeds stay byte-identical.
  std::vector<std::pair<std::string, proto::Request>> channel_requests = {
      {"channel-create",
       proto::ChannelCreate{"cam", "B", {480, 640, 3}, 0, 8, 1, 100, proto::kCreateExistOk, 0644}},
      {"channel-create-variable", proto::ChannelCreate{"pkts", "B", {}, 1 << 20, 4, 2, 0, 0, 0600}},
      {"channel-stat", proto::ChannelStat{"cam"}},
      {"channel-attach", proto::ChannelAttach{"cam", proto::ChannelRole::kWriter}},
      {"channel-part", proto::ChannelPart{1, proto::ChannelPartKind::kReaderPage, 3, 9}},
      {"channel-detach", proto::ChannelDetach{1, proto::ChannelRole::kReader, 3, 9}},
      {"channel-evict", proto::ChannelEvict{1, 3, 9, proto::ChannelEvictReason::kTimeout}},
      {"channel-remove", proto::ChannelRemove{"cam"}},
      {"channel-list", proto::ChannelList{}},
  };
  proto::ChannelInfo channel;
  channel.id = 1;
  channel.name = "cam";
  channel.format = "B";
  channel.shape = {480, 640, 3};
  channel.slots = 8;
  channel.frame_bytes = 921600;
  channel.slot_stride = 921600;
  channel.data_offset = 8192;
  channel.frames_bytes = 8192 + 8 * 921600;
  channel.reader_page_bytes = 4096;
  channel.mode = 0644;
  proto::StatsOk stats{3, 1 << 20, 1 << 30, 2, 2, 5000, {}};
  stats.clients.push_back(
      {1, 4242, 1000, 1000, "python3", 0, {{"frames", proto::LeaseMode::kRead, 0}}});
  std::vector<std::pair<std::string, proto::Reply>> replies = {
      {"hello-ok", proto::HelloOk{proto::kVersion, 99, proto::kDefaultMaxMessage, "0.1.0"}},
      {"pong", proto::Pong{}},
      {"create-ok", proto::CreateOk{Info()}},
      {"acquire-ok", proto::AcquireOk{5, proto::LeaseMode::kRead, 0, Info()}},
      {"release-ok", proto::ReleaseOk{}},
      {"remove-ok", proto::RemoveOk{}},
      {"stat-ok", proto::StatOk{Info()}},
      {"list-ok", proto::ListOk{{Info(), Info()}}},
      {"chmod-ok", proto::ChmodOk{Info()}},
      {"stats-ok", stats},
      {"segment-gone", proto::SegmentGone{7}},
      {"error", proto::ErrorReply{shmlease::Errc::kNotFound, "no segment named 'frames'"}},
      {"reclaim-ok",
       proto::ReclaimOk{{{3, 11, shmlease::Errc::kOk}, {4, 0, shmlease::Errc::kNotFound}},
                        {{7, 1700000000123456789, 1}}}},
  };
  std::vector<std::byte> stream;
  uint32_t id = 1;
  for (const auto& [name, request] : requests) {
    std::vector<std::byte> frame;
    proto::EncodeRequest(request, id++, 0, frame);
    Write(dir, "frame-" + name, frame);
    Write(dir, "body-" + name, TypedBody(frame));
    if (stream.size() < 512) stream.insert(stream.end(), frame.begin(), frame.end());
  }
  Write(dir, "stream-requests", stream);
  std::vector<std::byte> no_reply;
  proto::EncodeRequest(proto::Release{42}, 9, proto::kFlagNoReply, no_reply);
  Write(dir, "frame-release-noreply", no_reply);
  stream.clear();
  for (const auto& [name, reply] : replies) {
    std::vector<std::byte> frame;
    uint16_t flags = name == "acquire-ok" ? proto::kFlagFd : 0;
    proto::EncodeReply(reply, name == "segment-gone" ? 0 : id++, flags, frame);
    Write(dir, "frame-" + name, frame);
    Write(dir, "body-" + name, TypedBody(frame));
    if (stream.size() < 512) stream.insert(stream.end(), frame.begin(), frame.end());
  }
  Write(dir, "stream-replies", stream);
  std::vector<std::pair<std::string, proto::Reply>> channel_replies = {
      {"channel-ok", proto::ChannelOk{channel, 1}},
      {"channel-attach-ok", proto::ChannelAttachOk{channel, 3, 9}},
      {"channel-part-ok", proto::ChannelPartOk{3, 9}},
      {"channel-done", proto::ChannelDone{}},
      {"channel-list-ok", proto::ChannelListOk{{channel, channel}}},
  };
  for (const auto& [name, request] : channel_requests) {
    std::vector<std::byte> frame;
    proto::EncodeRequest(request, id++, 0, frame);
    Write(dir, "frame-" + name, frame);
    Write(dir, "body-" + name, TypedBody(frame));
  }
  for (const auto& [name, reply] : channel_replies) {
    std::vector<std::byte> frame;
    const bool fd = name == "channel-attach-ok" || name == "channel-part-ok";
    proto::EncodeReply(reply, id++, fd ? proto::kFlagFd : 0, frame);
    Write(dir, "frame-" + name, frame);
    Write(dir, "body-" + name, TypedBody(frame));
  }
  return 0;
}
