#include "shmlease/codec.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "shmlease/errc.hpp"
#include "shmlease/protocol.hpp"
#include "shmlease/wire_fields.hpp"

// The largest single allocation seen since the last reset: lets the tests prove that a length
// field is checked against its bound before anything is allocated for it.
namespace {
std::atomic<size_t> g_largest_allocation{0};
}  // namespace

// These replace the global allocation functions for the whole test binary; malloc and free are
// their matching pair, which GCC cannot see across the replacement.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(size_t size) {
  size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
  while (size > seen && !g_largest_allocation.compare_exchange_weak(seen, size)) {
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace shmlease::proto {
namespace {

using Bytes = std::vector<std::byte>;

Bytes Encode(const Request& request, uint32_t id = 7, uint16_t flags = 0) {
  Bytes out;
  EncodeRequest(request, id, flags, out);
  return out;
}
Bytes Encode(const Reply& reply, uint32_t id = 7, uint16_t flags = 0) {
  Bytes out;
  EncodeReply(reply, id, flags, out);
  return out;
}

Bytes FromHex(std::initializer_list<int> values) {
  Bytes out;
  for (int v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

void PutU16(Bytes& b, uint16_t v) {
  for (int i = 0; i < 2; ++i) b.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
}
void PutU32(Bytes& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
}
void PutU64(Bytes& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
}
void PutString(Bytes& b, const std::string& s) {
  PutU16(b, static_cast<uint16_t>(s.size()));
  for (char c : s) b.push_back(static_cast<std::byte>(c));
}

// A whole frame around a hand-made body.
Bytes Frame(MsgType type, const Bytes& body, uint16_t flags = 0, uint32_t id = 1) {
  Bytes out;
  PutU32(out, kMagic);
  PutU32(out, static_cast<uint32_t>(body.size()));
  PutU16(out, static_cast<uint16_t>(type));
  PutU16(out, flags);
  PutU32(out, id);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

// Rewrites the header's body_length to match the bytes after the header.
void FixLength(Bytes& frame) {
  uint32_t n = static_cast<uint32_t>(frame.size() - kHeaderSize);
  for (int i = 0; i < 4; ++i) frame[4 + i] = static_cast<std::byte>((n >> (8 * i)) & 0xFF);
}

struct RequestDecode {
  bool ok = false;
  Request message;
  Errc error = Errc::kOk;
  std::string reason;
};
struct ReplyDecode {
  bool ok = false;
  Reply message;
  Errc error = Errc::kOk;
  std::string reason;
};

// Frames `bytes` (which must hold exactly one whole frame) and decodes it as a request.
RequestDecode DecodeRequestFrame(const Bytes& bytes) {
  FrameResult frame = DecodeFrame(bytes, kClientMaxReply);
  EXPECT_EQ(frame.status, DecodeStatus::kOk) << frame.reason;
  EXPECT_EQ(frame.consumed, bytes.size());
  RequestDecode result;
  if (frame.status != DecodeStatus::kOk) return result;
  result.ok = DecodeRequest(frame.header, frame.body, result.message, result.error, result.reason);
  return result;
}
ReplyDecode DecodeReplyFrame(const Bytes& bytes) {
  FrameResult frame = DecodeFrame(bytes, kClientMaxReply);
  EXPECT_EQ(frame.status, DecodeStatus::kOk) << frame.reason;
  EXPECT_EQ(frame.consumed, bytes.size());
  ReplyDecode result;
  if (frame.status != DecodeStatus::kOk) return result;
  result.ok = DecodeReply(frame.header, frame.body, result.message, result.error, result.reason);
  return result;
}

SegmentInfo SampleInfo(std::string name, std::string format, std::vector<uint64_t> shape) {
  SegmentInfo info;
  info.id = 0x0102030405060708ull;
  info.name = std::move(name);
  info.format = std::move(format);
  info.shape = std::move(shape);
  info.size = 1080ull * 1920 * 3;
  info.created_unix_ns = -1234567890123456789ll;  // negative on purpose: signedness survives
  info.creator_pid = 4242;
  info.creator_uid = 0xFFFFFFFEu;
  info.readers = 3;
  info.writers = 1;
  info.exclusive = 1;
  info.waiting = 9;
  info.removed = 1;
  info.page_size = 2 * 1024 * 1024;
  info.huge_fallback = 1;
  info.owner_uid = 1000;
  info.owner_gid = 0xFFFFFFFDu;
  info.mode = 0640;
  return info;
}

// The smallest possible segment description: one-letter name, no format, no shape.
SegmentInfo MinimalInfo(std::string name = "a") {
  SegmentInfo info;
  info.name = std::move(name);
  return info;
}

std::vector<Request> SampleRequests() {
  std::vector<Request> out;
  out.push_back(Hello{});
  out.push_back(Hello{.version = 77, .client_name = "shmlease-cli/0.1 pid 123"});
  out.push_back(Ping{});
  out.push_back(Create{.name = "frames", .size = 64ull << 20});
  out.push_back(Create{
      .name = "img", .size = 0, .format = "f", .shape = {1080, 1920, 3}, .flags = kCreateExistOk});
  out.push_back(Create{.name = std::string(kMaxString, 'n'),
                       .size = std::numeric_limits<uint64_t>::max(),
                       .format = "d",
                       .shape = {1, 2, 3, 4, 5, 6, 7, 8},
                       .flags = 0xFF,
                       .mode = 0xFFFFFFFFu});
  out.push_back(Create{.name = "huge", .size = 1ull << 30, .flags = kCreateHuge, .mode = 0640});
  out.push_back(Acquire{.name = "frames", .mode = LeaseMode::kRead});
  out.push_back(Acquire{
      .name = "frames", .mode = LeaseMode::kWrite, .exclusive = 1, .timeout_ms = kWaitForever});
  out.push_back(Acquire{.name = "x",
                        .mode = LeaseMode::kWrite,
                        .exclusive = 0,
                        .timeout_ms = std::numeric_limits<int64_t>::max()});
  out.push_back(Release{.lease_id = 0});
  out.push_back(Release{.lease_id = 0xFEDCBA9876543210ull});
  out.push_back(Remove{.name = "frames"});
  out.push_back(Stat{.name = "a.b_c-d"});
  out.push_back(Stat{.name = ""});
  out.push_back(List{});
  out.push_back(Chmod{.name = "frames", .mode = 0640});
  out.push_back(Stats{});
  out.push_back(Cancel{.request_id = 0});
  out.push_back(Cancel{.request_id = 0xFFFFFFFFu});
  out.push_back(Reclaim{});
  out.push_back(Reclaim{
      .leases = {{.lease_id = 7, .segment_id = 3, .created_unix_ns = -1, .mode = LeaseMode::kWrite,
                  .exclusive = 1},
                 {.lease_id = ~0ull, .segment_id = 1, .created_unix_ns = 42}},
      .mappings = {{.segment_id = 3, .created_unix_ns = -1, .writable = 1}}});
  out.push_back(ChannelCreate{.name = "cam", .format = "B", .shape = {1080, 1920, 3}});
  out.push_back(ChannelCreate{.name = "pkts", .max_frame_bytes = 1 << 20, .slots = 64,
                              .policy = 2, .reader_timeout_ms = 250, .flags = kCreateExistOk,
                              .mode = 0644});
  out.push_back(ChannelStat{.name = "cam"});
  out.push_back(ChannelAttach{.name = "cam", .role = ChannelRole::kWriter});
  out.push_back(ChannelAttach{.name = "cam", .role = ChannelRole::kReader});
  out.push_back(ChannelPart{.channel_id = 3, .kind = ChannelPartKind::kReaderPage, .index = 63,
                            .generation = ~0ull});
  out.push_back(ChannelDetach{.channel_id = 3, .role = ChannelRole::kReader, .index = 2,
                              .generation = 9});
  out.push_back(ChannelEvict{.channel_id = 3, .index = 1, .generation = 4,
                             .reason = ChannelEvictReason::kBadState});
  out.push_back(ChannelRemove{.name = "cam"});
  out.push_back(ChannelList{});
  return out;
}

ChannelInfo SampleChannel(std::string name) {
  ChannelInfo c;
  c.id = 12;
  c.name = std::move(name);
  c.format = "B";
  c.shape = {480, 640, 3};
  c.slots = 8;
  c.policy = ChannelPolicy::kLatest;
  c.frame_bytes = 921600;
  c.slot_stride = 921600;
  c.data_offset = 8192;
  c.frames_bytes = 8192 + 8 * 921600;
  c.reader_page_bytes = 4096;
  c.reader_timeout_ms = 100;
  c.created_unix_ns = -5;
  c.owner_uid = 1000;
  c.owner_gid = 100;
  c.mode = 0644;
  c.writer_pid = 77;
  c.readers = 3;
  return c;
}

std::vector<Reply> SampleReplies() {
  std::vector<Reply> out;
  out.push_back(ChannelOk{.info = SampleChannel("cam"), .created = 1});
  out.push_back(ChannelAttachOk{.info = SampleChannel("cam"), .index = 63, .generation = 2});
  out.push_back(ChannelPartOk{.index = 5, .generation = 6});
  out.push_back(ChannelDone{});
  out.push_back(ChannelListOk{});
  out.push_back(ChannelListOk{.channels = {SampleChannel("a"), SampleChannel("b")}});
  out.push_back(HelloOk{});
  out.push_back(
      HelloOk{.version = 1, .server_pid = 99, .max_message = 1 << 20, .server_version = "0.1.0"});
  out.push_back(Pong{});
  out.push_back(CreateOk{.info = SampleInfo("img", "B", {1080, 1920, 3})});
  out.push_back(CreateOk{.info = MinimalInfo()});
  out.push_back(AcquireOk{
      .lease_id = 5, .mode = LeaseMode::kRead, .exclusive = 0, .info = SampleInfo("ro", "", {})});
  out.push_back(AcquireOk{.lease_id = ~0ull,
                          .mode = LeaseMode::kWrite,
                          .exclusive = 1,
                          .info = SampleInfo("rw", "q", {1, 2, 3, 4, 5, 6, 7, 8})});
  out.push_back(ReleaseOk{});
  out.push_back(RemoveOk{});
  out.push_back(StatOk{.info = SampleInfo("frames", "e", {7})});
  out.push_back(StatOk{.info = MinimalInfo("")});
  out.push_back(ListOk{});
  out.push_back(ListOk{.segments = {MinimalInfo()}});
  out.push_back(ListOk{.segments = {MinimalInfo(""), MinimalInfo("a"), MinimalInfo("b"),
                                    SampleInfo("big", "f", {2, 2})}});
  out.push_back(ChmodOk{.info = SampleInfo("chmodded", "", {})});
  out.push_back(StatsOk{});
  out.push_back(StatsOk{
      .segments = 3,
      .bytes = 1ull << 40,
      .max_bytes = ~0ull,
      .leases = 7,
      .connections = 2,
      .uptime_ms = 123456789,
      .clients = {ClientInfo{.conn_id = 1, .pid = 42, .uid = 1000, .gid = 100, .process = "cam",
                             .waiting = 1,
                             .leases = {HeldLease{.segment = "frames", .mode = LeaseMode::kWrite,
                                                  .exclusive = 1},
                                        HeldLease{.segment = "w", .mode = LeaseMode::kRead}}},
                  ClientInfo{.conn_id = 9, .process = ""}}});
  out.push_back(SegmentGone{.segment_id = 12});
  out.push_back(ErrorReply{.code = Errc::kNotFound, .message = "no segment named 'x'"});
  out.push_back(ErrorReply{.code = Errc::kOk, .message = ""});
  out.push_back(ErrorReply{.code = Errc::kMapFailed, .message = std::string(kMaxErrorText, 'e')});
  out.push_back(ReclaimOk{});
  out.push_back(ReclaimOk{
      .leases = {{.old_lease_id = 7, .new_lease_id = (5ull << 32) + 1, .status = Errc::kOk},
                 {.old_lease_id = 8, .new_lease_id = 0, .status = Errc::kNotFound}},
      .mappings = {{.segment_id = 3, .created_unix_ns = 9, .writable = 0}}});
  return out;
}

// --- Byte layout -------------------------------------------------------------------------------

TEST(CodecLayout, HeaderIsLittleEndianMagicLengthTypeFlagsId) {
  Bytes frame = Encode(Request{Ping{}}, 0x01020304, kFlagNoReply);
  EXPECT_EQ(frame, FromHex({'S', 'H', 'M', 'L', 0, 0, 0, 0, 0x02, 0x00, 0x02, 0x00, 0x04, 0x03,
                            0x02, 0x01}));
}

TEST(CodecLayout, StringsAreU16LengthThenBytes) {
  Bytes frame = Encode(Request{Stat{.name = "ab"}}, 1);
  ASSERT_EQ(frame.size(), kHeaderSize + 4);
  EXPECT_EQ(frame[4], std::byte{4});  // body_length
  EXPECT_EQ(frame[8], std::byte{0x07});
  EXPECT_EQ(frame[9], std::byte{0x00});
  Bytes body(frame.begin() + kHeaderSize, frame.end());
  EXPECT_EQ(body, FromHex({0x02, 0x00, 'a', 'b'}));
}

TEST(CodecLayout, CancelIsTypeTwelveWithTheWithdrawnRequestIdAsU32) {
  Bytes frame = Encode(Request{Cancel{.request_id = 0x0A0B0C0D}}, 9, kFlagNoReply);
  EXPECT_EQ(frame, FromHex({'S', 'H', 'M', 'L', 4, 0, 0, 0, 0x0C, 0x00, 0x02, 0x00, 9, 0, 0, 0,
                            0x0D, 0x0C, 0x0B, 0x0A}));
  EXPECT_STREQ(TypeName(MsgType::kCancel), "cancel");
  // A Cancel is never a reply: there is no cancel_ok.
  Reply reply;
  Errc error = Errc::kOk;
  std::string reason;
  Header header{.body_length = 0, .type = static_cast<MsgType>(0x800C)};
  EXPECT_FALSE(DecodeReply(header, {}, reply, error, reason));
  EXPECT_EQ(error, Errc::kUnknownType);
}

TEST(CodecLayout, ReplyTypesHaveTheReplyBitOfTheirRequest) {
  std::vector<Request> requests = SampleRequests();
  for (const Request& request : requests) {
    MsgType type = TypeOf(request);
    EXPECT_EQ(static_cast<uint16_t>(type) & kReplyBit, 0) << TypeName(type);
  }
  EXPECT_EQ(TypeOf(Reply{HelloOk{}}), MsgType::kHelloOk);
  EXPECT_EQ(static_cast<uint16_t>(MsgType::kHelloOk),
            static_cast<uint16_t>(MsgType::kHello) | kReplyBit);
  EXPECT_EQ(TypeOf(Reply{ListOk{}}), MsgType::kListOk);
  EXPECT_EQ(TypeOf(Reply{ErrorReply{}}), MsgType::kError);
  EXPECT_EQ(TypeOf(Reply{SegmentGone{}}), MsgType::kSegmentGone);
}

TEST(CodecLayout, TypeNamesAreKnownForEveryMessage) {
  for (const Request& r : SampleRequests()) EXPECT_STRNE(TypeName(TypeOf(r)), "unknown");
  for (const Reply& r : SampleReplies()) EXPECT_STRNE(TypeName(TypeOf(r)), "unknown");
  EXPECT_STREQ(TypeName(MsgType::kAcquireOk), "acquire_ok");
  EXPECT_STREQ(TypeName(static_cast<MsgType>(0x1234)), "unknown");
}

// --- Round trips -------------------------------------------------------------------------------

TEST(CodecRoundTrip, EveryRequestType) {
  std::vector<Request> requests = SampleRequests();
  // Every alternative of the variant is covered at least once.
  std::vector<bool> seen(std::variant_size_v<Request>, false);
  for (const Request& request : requests) {
    seen[request.index()] = true;
    Bytes frame = Encode(request, 0xA1B2C3D4, kFlagNoReply);
    FrameResult f = DecodeFrame(frame, kClientMaxReply);
    ASSERT_EQ(f.status, DecodeStatus::kOk) << TypeName(TypeOf(request));
    EXPECT_EQ(f.header.type, TypeOf(request));
    EXPECT_EQ(f.header.request_id, 0xA1B2C3D4u);
    EXPECT_EQ(f.header.flags, kFlagNoReply);
    EXPECT_EQ(f.header.body_length, frame.size() - kHeaderSize);
    RequestDecode d = DecodeRequestFrame(frame);
    ASSERT_TRUE(d.ok) << TypeName(TypeOf(request)) << ": " << d.reason;
    EXPECT_EQ(d.message, request) << TypeName(TypeOf(request));
  }
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_TRUE(seen[i]) << "request alternative " << i;
}

TEST(CodecRoundTrip, EveryReplyType) {
  std::vector<Reply> replies = SampleReplies();
  std::vector<bool> seen(std::variant_size_v<Reply>, false);
  for (const Reply& reply : replies) {
    seen[reply.index()] = true;
    Bytes frame = Encode(reply, 99, kFlagFd);
    ReplyDecode d = DecodeReplyFrame(frame);
    ASSERT_TRUE(d.ok) << TypeName(TypeOf(reply)) << ": " << d.reason;
    EXPECT_EQ(d.message, reply) << TypeName(TypeOf(reply));
    FrameResult f = DecodeFrame(frame, kClientMaxReply);
    EXPECT_EQ(f.header.flags, kFlagFd);
    EXPECT_EQ(f.header.request_id, 99u);
  }
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_TRUE(seen[i]) << "reply alternative " << i;
}

TEST(CodecRoundTrip, SegmentInfoShapesKeepEveryDimension) {
  for (size_t dims = 0; dims <= 8; ++dims) {
    std::vector<uint64_t> shape;
    for (size_t i = 0; i < dims; ++i) shape.push_back((i + 1) * 1000003ull << (4 * i));
    StatOk reply{.info = SampleInfo("s", "H", shape)};
    ReplyDecode d = DecodeReplyFrame(Encode(Reply{reply}));
    ASSERT_TRUE(d.ok) << dims << " dims: " << d.reason;
    EXPECT_EQ(std::get<StatOk>(d.message).info.shape, shape);
  }
}

TEST(CodecRoundTrip, ListOfManyShortSegments) {
  // Short names, no format and no shape: the smallest description the daemon can send.
  ListOk list;
  for (int i = 0; i < 1000; ++i) list.segments.push_back(MinimalInfo(std::to_string(i % 10)));
  ReplyDecode d = DecodeReplyFrame(Encode(Reply{list}));
  ASSERT_TRUE(d.ok) << d.reason;
  EXPECT_EQ(std::get<ListOk>(d.message), list);
}

TEST(CodecRoundTrip, ErrorReplyKeepsCodesThisBuildDoesNotKnow) {
  Bytes body;
  PutU32(body, 9999);
  PutString(body, "from the future");
  ReplyDecode d = DecodeReplyFrame(Frame(MsgType::kError, body));
  ASSERT_TRUE(d.ok) << d.reason;
  const auto& error = std::get<ErrorReply>(d.message);
  EXPECT_EQ(static_cast<uint32_t>(error.code), 9999u);
  EXPECT_EQ(error.message, "from the future");
}

TEST(CodecRoundTrip, EncoderAppendsAndFramesSplitOneByOne) {
  Bytes stream;
  std::vector<Request> requests = SampleRequests();
  for (size_t i = 0; i < requests.size(); ++i) {
    EncodeRequest(requests[i], static_cast<uint32_t>(i), 0, stream);
  }
  std::span<const std::byte> rest(stream);
  for (size_t i = 0; i < requests.size(); ++i) {
    FrameResult f = DecodeFrame(rest, kDefaultMaxMessage);
    ASSERT_EQ(f.status, DecodeStatus::kOk) << i;
    EXPECT_EQ(f.header.request_id, i);
    Request out;
    Errc error;
    std::string reason;
    ASSERT_TRUE(DecodeRequest(f.header, f.body, out, error, reason)) << reason;
    EXPECT_EQ(out, requests[i]);
    rest = rest.subspan(f.consumed);
  }
  EXPECT_TRUE(rest.empty());
  EXPECT_EQ(DecodeFrame(rest, kDefaultMaxMessage).status, DecodeStatus::kNeedMore);
}

TEST(CodecRoundTrip, EncoderCapsStringsAtTheirBoundSoItsOutputAlwaysDecodes) {
  Bytes frame = Encode(Request{Stat{.name = std::string(kMaxString + 500, 's')}});
  RequestDecode d = DecodeRequestFrame(frame);
  ASSERT_TRUE(d.ok) << d.reason;
  EXPECT_EQ(std::get<Stat>(d.message).name, std::string(kMaxString, 's'));

  Bytes error = Encode(
      Reply{ErrorReply{.code = Errc::kInternal, .message = std::string(kMaxErrorText + 1, 'e')}});
  ReplyDecode e = DecodeReplyFrame(error);
  ASSERT_TRUE(e.ok) << e.reason;
  EXPECT_EQ(std::get<ErrorReply>(e.message).message.size(), kMaxErrorText);
}

// --- Every message, from its field list ---------------------------------------------------------

// Gives every field of a message a value unlike its default, walking the same Fields() the codec
// walks: a message that round-trips after this has every member on the wire, both ways.
class Filler {
 public:
  template <class M>
  void Fill(M& m) {
    std::apply([this](auto... field) { (Set(field), ...); }, M::Fields(m));
  }

 private:
  template <class T>
  void Set(wire::IntField<T> f) {
    if constexpr (std::is_enum_v<T>) {
      f.value = static_cast<T>(1000 + next_++);  // a code this build may not know
    } else {
      // Every byte of the field non-zero and different from field to field.
      f.value = static_cast<T>(0x0807060504030201ull * ++next_);
    }
  }
  template <class T>
  void Set(wire::FlagField<T> f) {
    f.value = 1;
  }
  template <class T, auto... kValid>
  void Set(wire::OneOfField<T, kValid...> f) {
    // The last valid value: the first (kRead) is the default.
    T values[] = {kValid...};
    f.value = values[sizeof...(kValid) - 1];
  }
  template <class T, size_t kMax>
  void Set(wire::TextField<T, kMax> f) {
    f.value = "field " + std::to_string(++next_);
  }
  template <class T>
  void Set(wire::ShapeField<T> f) {
    f.value = {++next_, 2, 3};
  }
  template <class T>
  void Set(wire::NestedField<T> f) {
    Fill(f.value);
  }
  template <class T>
  void Set(wire::ListField<T> f) {
    f.value.resize(2);
    for (auto& item : f.value) Fill(item);
  }

  uint64_t next_ = 0;
};

// Calls f(std::type_identity<M>{}) for every message M of a variant.
template <class Variant, class F>
void ForEachMessage(F f) {
  [&f]<size_t... kI>(std::index_sequence<kI...>) {
    (f(std::type_identity<std::variant_alternative_t<kI, Variant>>{}), ...);
  }
  (std::make_index_sequence<std::variant_size_v<Variant>>{});
}

template <class Variant>
void CheckEveryMessageOf() {
  ForEachMessage<Variant>([]<class M>(std::type_identity<M>) {
    SCOPED_TRACE(M::kName);
    EXPECT_EQ(TypeOf(Variant{M{}}), M::kType);
    EXPECT_STREQ(TypeName(M::kType), M::kName);

    // An empty message (no strings, lists or dimensions) is exactly its computed minimum size.
    Bytes empty = Encode(Variant{M{}}, 3, 0);
    EXPECT_EQ(empty.size(), kHeaderSize + wire::kMinBytesOf<M>);

    M full;
    Filler().Fill(full);
    if (std::tuple_size_v < wire::FieldsOf < M >>> 0) {
      EXPECT_FALSE(full == M{});
    }
    for (const M& m : {M{}, full}) {
      Bytes frame = Encode(Variant{m}, 0xCAFE, kFlagNoReply);
      FrameResult f = DecodeFrame(frame, kClientMaxReply);
      ASSERT_EQ(f.status, DecodeStatus::kOk);
      ASSERT_EQ(f.consumed, frame.size());
      Variant out;
      Errc error = Errc::kOk;
      std::string reason;
      bool ok;
      if constexpr (std::is_same_v<Variant, Request>) {
        ok = DecodeRequest(f.header, f.body, out, error, reason);
      } else {
        ok = DecodeReply(f.header, f.body, out, error, reason);
      }
      ASSERT_TRUE(ok) << reason;
      ASSERT_TRUE(std::holds_alternative<M>(out));
      EXPECT_EQ(std::get<M>(out), m);
      EXPECT_EQ(Encode(out, 0xCAFE, kFlagNoReply), frame);
    }
  });
}

TEST(CodecEveryMessage, RequestsRoundTripWithEveryFieldSet) { CheckEveryMessageOf<Request>(); }
TEST(CodecEveryMessage, RepliesRoundTripWithEveryFieldSet) { CheckEveryMessageOf<Reply>(); }

TEST(CodecEveryMessage, MinimumSizesAreThoseOfTheProtocol) {
  // docs/PROTOCOL.md: "With an empty name, an empty format and no dimensions a SegmentInfo is 68
  // bytes"; the Reclaim sizes are what a client budgets a Reclaim request with.
  EXPECT_EQ(wire::kMinBytesOf<SegmentInfo>, 68u);
  EXPECT_EQ(kReclaimLeaseBytes, 26u);
  EXPECT_EQ(kReclaimMappingBytes, 17u);
  EXPECT_EQ(kReclaimResultBytes, 20u);
  EXPECT_EQ(wire::kMinBytesOf<ClientInfo>, 30u);  // conn_id, pid, uid, gid, process, waiting, count
  EXPECT_EQ(wire::kMinBytesOf<HeldLease>, 4u);
}

TEST(CodecEveryMessage, StatsWithOneClientOfNoNameAndNoLeases) {
  // The smallest client entry (30 bytes) alone in a StatsOk: its count must not be refused as
  // more than the body holds.
  StatsOk stats{.clients = {ClientInfo{.conn_id = 4}}};
  ReplyDecode d = DecodeReplyFrame(Encode(Reply{stats}));
  ASSERT_TRUE(d.ok) << d.reason;
  EXPECT_EQ(std::get<StatsOk>(d.message), stats);
}

// --- Framing -----------------------------------------------------------------------------------

TEST(CodecFrame, NeedMoreAtEveryTruncationPointOfEveryValidFrame) {
  std::vector<Bytes> frames;
  for (const Request& r : SampleRequests()) frames.push_back(Encode(r));
  for (const Reply& r : SampleReplies()) frames.push_back(Encode(r));
  for (const Bytes& frame : frames) {
    for (size_t n = 0; n < frame.size(); ++n) {
      FrameResult f = DecodeFrame(std::span(frame).first(n), kClientMaxReply);
      ASSERT_EQ(f.status, DecodeStatus::kNeedMore) << "prefix " << n << " of " << frame.size();
      EXPECT_EQ(f.consumed, 0u);
    }
    FrameResult whole = DecodeFrame(frame, kClientMaxReply);
    ASSERT_EQ(whole.status, DecodeStatus::kOk);
    EXPECT_EQ(whole.consumed, frame.size());
  }
}

TEST(CodecFrame, BadMagicInAFullHeader) {
  Bytes frame = Encode(Request{Ping{}});
  for (size_t i = 0; i < 4; ++i) {
    Bytes bad = frame;
    bad[i] ^= std::byte{0x20};
    FrameResult f = DecodeFrame(bad, kDefaultMaxMessage);
    EXPECT_EQ(f.status, DecodeStatus::kBad) << "byte " << i;
    EXPECT_EQ(f.error, Errc::kBadMessage);
    EXPECT_FALSE(f.reason.empty());
  }
}

TEST(CodecFrame, BadMagicIsSeenFromTheFirstWrongByte) {
  // A client that sends HTTP or random text is refused on its first byte, not after 16.
  using namespace std::string_view_literals;
  for (std::string_view text : {"G"sv, "GET / HTTP/1.1\r\n"sv, "S\0"sv, "SH!"sv, "SHMX"sv, "shml"sv,
                                "\0\0\0\0\0\0\0\0"sv}) {
    Bytes bytes;
    for (char c : text) bytes.push_back(static_cast<std::byte>(c));
    FrameResult f = DecodeFrame(bytes, kDefaultMaxMessage);
    EXPECT_EQ(f.status, DecodeStatus::kBad) << text.size() << " bytes";
    EXPECT_EQ(f.error, Errc::kBadMessage);
  }
  // The magic's own prefixes are only incomplete.
  Bytes magic = FromHex({'S', 'H', 'M', 'L'});
  for (size_t n = 0; n <= 4; ++n) {
    EXPECT_EQ(DecodeFrame(std::span(magic).first(n), kDefaultMaxMessage).status,
              DecodeStatus::kNeedMore)
        << n;
  }
  // A bad first byte followed by anything: still bad.
  Bytes one = FromHex({0x00});
  EXPECT_EQ(DecodeFrame(one, kDefaultMaxMessage).status, DecodeStatus::kBad);
}

TEST(CodecFrame, UnknownHeaderFlagsAreRefused) {
  for (uint32_t bit = 0; bit < 16; ++bit) {
    uint16_t flag = static_cast<uint16_t>(1u << bit);
    Bytes frame = Encode(Request{Ping{}}, 1, flag);
    FrameResult f = DecodeFrame(frame, kDefaultMaxMessage);
    if ((flag & kKnownFlags) != 0) {
      EXPECT_EQ(f.status, DecodeStatus::kOk) << "flag " << flag;
    } else {
      EXPECT_EQ(f.status, DecodeStatus::kBad) << "flag " << flag;
      EXPECT_EQ(f.error, Errc::kBadMessage);
    }
  }
  // Refused from the header alone, before the body arrives.
  Bytes header = Encode(Request{Stat{.name = "abc"}}, 1, 0x0100);
  header.resize(kHeaderSize);
  EXPECT_EQ(DecodeFrame(header, kDefaultMaxMessage).status, DecodeStatus::kBad);
  EXPECT_EQ(DecodeFrame(Encode(Request{Ping{}}, 1, kKnownFlags), kDefaultMaxMessage).status,
            DecodeStatus::kOk);
}

TEST(CodecFrame, BodyLengthAboveTheLimitIsMessageTooLarge) {
  Bytes body(100, std::byte{0});
  Bytes frame = Frame(MsgType::kPing, body);
  FrameResult at_limit = DecodeFrame(frame, 100);
  EXPECT_EQ(at_limit.status, DecodeStatus::kOk);
  FrameResult over = DecodeFrame(frame, 99);
  EXPECT_EQ(over.status, DecodeStatus::kBad);
  EXPECT_EQ(over.error, Errc::kMessageTooLarge);
  EXPECT_NE(over.reason.find("100"), std::string::npos) << over.reason;

  // Refused from the header alone.
  Bytes header(frame.begin(), frame.begin() + kHeaderSize);
  EXPECT_EQ(DecodeFrame(header, 99).status, DecodeStatus::kBad);
  EXPECT_EQ(DecodeFrame(header, 100).status, DecodeStatus::kNeedMore);
}

TEST(CodecFrame, FourGibLengthFieldIsRefusedWithoutAllocating) {
  Bytes header;
  PutU32(header, kMagic);
  PutU32(header, 0xFFFFFFFFu);
  PutU16(header, static_cast<uint16_t>(MsgType::kList));
  PutU16(header, 0);
  PutU32(header, 1);
  for (uint32_t limit : {kDefaultMaxMessage, kClientMaxReply, 0xFFFFFFFEu}) {
    g_largest_allocation = 0;
    FrameResult f = DecodeFrame(header, limit);
    size_t largest = g_largest_allocation.load();
    EXPECT_EQ(f.status, DecodeStatus::kBad) << limit;
    EXPECT_EQ(f.error, Errc::kMessageTooLarge) << limit;
    EXPECT_LT(largest, 4096u) << "allocated " << largest << " bytes for a refused frame";
  }
  // Even with no limit at all the decoder only asks for more; it never allocates the body.
  g_largest_allocation = 0;
  FrameResult f = DecodeFrame(header, 0xFFFFFFFFu);
  EXPECT_EQ(f.status, DecodeStatus::kNeedMore);
  EXPECT_LT(g_largest_allocation.load(), 4096u);
}

TEST(CodecFrame, ZeroLimitAllowsOnlyEmptyBodies) {
  EXPECT_EQ(DecodeFrame(Encode(Request{Ping{}}), 0).status, DecodeStatus::kOk);
  FrameResult f = DecodeFrame(Encode(Request{Release{}}), 0);
  EXPECT_EQ(f.status, DecodeStatus::kBad);
  EXPECT_EQ(f.error, Errc::kMessageTooLarge);
}

TEST(CodecFrame, BodyPointsIntoTheInputAndExtraBytesAreLeft) {
  Bytes frame = Encode(Request{Remove{.name = "zz"}});
  size_t one = frame.size();
  frame.push_back(std::byte{'S'});  // the start of the next frame
  FrameResult f = DecodeFrame(frame, kDefaultMaxMessage);
  ASSERT_EQ(f.status, DecodeStatus::kOk);
  EXPECT_EQ(f.consumed, one);
  EXPECT_EQ(f.body.data(), frame.data() + kHeaderSize);
  EXPECT_EQ(f.body.size(), one - kHeaderSize);
}

// --- Bodies that do not decode -----------------------------------------------------------------

void ExpectBadRequest(const Bytes& frame, const std::string& what) {
  RequestDecode d = DecodeRequestFrame(frame);
  EXPECT_FALSE(d.ok) << what;
  EXPECT_EQ(d.error, Errc::kBadMessage) << what;
  EXPECT_FALSE(d.reason.empty()) << what;
}
void ExpectBadReply(const Bytes& frame, const std::string& what) {
  ReplyDecode d = DecodeReplyFrame(frame);
  EXPECT_FALSE(d.ok) << what;
  EXPECT_EQ(d.error, Errc::kBadMessage) << what;
  EXPECT_FALSE(d.reason.empty()) << what;
}

TEST(CodecBody, EveryTruncatedBodyIsBad) {
  for (const Request& r : SampleRequests()) {
    Bytes frame = Encode(r);
    for (size_t cut = 1; cut <= frame.size() - kHeaderSize; ++cut) {
      Bytes shorter(frame.begin(), frame.end() - static_cast<ptrdiff_t>(cut));
      FixLength(shorter);
      ExpectBadRequest(shorter, std::string(TypeName(TypeOf(r))) + " less " + std::to_string(cut));
    }
  }
  for (const Reply& r : SampleReplies()) {
    Bytes frame = Encode(r);
    for (size_t cut = 1; cut <= frame.size() - kHeaderSize; ++cut) {
      Bytes shorter(frame.begin(), frame.end() - static_cast<ptrdiff_t>(cut));
      FixLength(shorter);
      ExpectBadReply(shorter, std::string(TypeName(TypeOf(r))) + " less " + std::to_string(cut));
    }
  }
}

TEST(CodecBody, TrailingBytesAfterAValidBodyAreBad) {
  for (const Request& r : SampleRequests()) {
    for (size_t extra : {1, 2, 8, 100}) {
      Bytes frame = Encode(r);
      frame.insert(frame.end(), extra, std::byte{0});
      FixLength(frame);
      ExpectBadRequest(frame, std::string(TypeName(TypeOf(r))) + " plus " + std::to_string(extra));
    }
  }
  for (const Reply& r : SampleReplies()) {
    Bytes frame = Encode(r);
    frame.push_back(std::byte{0});
    FixLength(frame);
    ExpectBadReply(frame, std::string(TypeName(TypeOf(r))) + " plus 1");
  }
}

TEST(CodecBody, UnknownTypesAreUnknownTypeNotBadMessage) {
  const uint16_t request_types[] = {0x0000,
                                    0x0015,
                                    0x00FF,
                                    0x7FFF,
                                    static_cast<uint16_t>(MsgType::kPong),
                                    static_cast<uint16_t>(MsgType::kError),
                                    static_cast<uint16_t>(MsgType::kSegmentGone)};
  for (uint16_t type : request_types) {
    Header header{.body_length = 0, .type = static_cast<MsgType>(type)};
    Request out;
    Errc error = Errc::kOk;
    std::string reason;
    EXPECT_FALSE(DecodeRequest(header, {}, out, error, reason)) << type;
    EXPECT_EQ(error, Errc::kUnknownType) << type;
    EXPECT_FALSE(reason.empty());
  }
  const uint16_t reply_types[] = {0x0001, 0x0002, 0x0008, 0x8000, 0x800C, 0x8101, 0xFFFE};
  for (uint16_t type : reply_types) {
    Header header{.body_length = 0, .type = static_cast<MsgType>(type)};
    Reply out;
    Errc error = Errc::kOk;
    std::string reason;
    EXPECT_FALSE(DecodeReply(header, {}, out, error, reason)) << type;
    EXPECT_EQ(error, Errc::kUnknownType) << type;
  }
  // The frame layer passes unknown types up: the session answers them with kUnknownType.
  EXPECT_EQ(DecodeFrame(Frame(static_cast<MsgType>(0x0042), {}), kDefaultMaxMessage).status,
            DecodeStatus::kOk);
}

TEST(CodecBody, StringsLongerThanTheirBound) {
  for (size_t n : {kMaxString, kMaxString + 1, size_t{0xFFFF}}) {
    Bytes body;
    PutString(body, std::string(n, 'a'));
    RequestDecode d = DecodeRequestFrame(Frame(MsgType::kStat, body));
    EXPECT_EQ(d.ok, n <= kMaxString) << n;
  }
  for (size_t n : {kMaxErrorText, kMaxErrorText + 1}) {
    Bytes body;
    PutU32(body, 6);
    PutString(body, std::string(n, 'e'));
    ReplyDecode d = DecodeReplyFrame(Frame(MsgType::kError, body));
    EXPECT_EQ(d.ok, n <= kMaxErrorText) << n;
  }
  // A length prefix that claims more than the body holds.
  Bytes body;
  PutU16(body, 10);
  body.push_back(std::byte{'a'});
  ExpectBadRequest(Frame(MsgType::kRemove, body), "string past the body");
}

Bytes CreateBody(uint8_t dims) {
  Bytes body;
  PutString(body, "img");
  PutU64(body, 0);
  PutString(body, "B");
  body.push_back(static_cast<std::byte>(dims));
  for (uint8_t i = 0; i < dims; ++i) PutU64(body, 2);
  body.push_back(std::byte{0});  // flags
  PutU32(body, 0600);            // mode
  return body;
}

TEST(CodecBody, ShapeWithMoreThanEightDimensions) {
  EXPECT_TRUE(DecodeRequestFrame(Frame(MsgType::kCreate, CreateBody(8))).ok);
  ExpectBadRequest(Frame(MsgType::kCreate, CreateBody(9)), "9 dims");
  ExpectBadRequest(Frame(MsgType::kCreate, CreateBody(255)), "255 dims");
  // The encoder writes what it is given; the decoder still refuses it.
  Create create{.name = "img", .format = "B", .shape = std::vector<uint64_t>(9, 2)};
  ExpectBadRequest(Encode(Request{create}), "encoded 9 dims");
  StatOk stat{.info = SampleInfo("img", "B", std::vector<uint64_t>(9, 1))};
  ExpectBadReply(Encode(Reply{stat}), "segment info with 9 dims");
}

TEST(CodecBody, ListWithAnAbsurdCountIsRefusedWithoutAllocating) {
  for (uint32_t count : {1u, 2u, 1000u, 0x7FFFFFFFu, 0xFFFFFFFFu}) {
    Bytes body;
    PutU32(body, count);
    g_largest_allocation = 0;
    ReplyDecode d = DecodeReplyFrame(Frame(MsgType::kListOk, body));
    EXPECT_FALSE(d.ok) << count;
    EXPECT_EQ(d.error, Errc::kBadMessage) << count;
    EXPECT_LT(g_largest_allocation.load(), 4096u) << count;
  }
  // One segment more than the body holds.
  Bytes two = Encode(Reply{ListOk{.segments = {MinimalInfo(), MinimalInfo()}}});
  two[kHeaderSize] = std::byte{3};
  ExpectBadReply(two, "count 3 with 2 segments");
}

TEST(CodecBody, BoolFieldsAboveOneAreBad) {
  for (uint8_t value : {2, 0x80, 0xFF}) {
    Bytes acquire;
    PutString(acquire, "a");
    acquire.push_back(std::byte{1});                   // mode
    acquire.push_back(static_cast<std::byte>(value));  // exclusive
    PutU64(acquire, 0);
    ExpectBadRequest(Frame(MsgType::kAcquire, acquire), "acquire exclusive");

    // SegmentInfo's exclusive and removed flags, found by encoding a known value and patching it.
    StatOk stat{.info = MinimalInfo("z")};
    Bytes frame = Encode(Reply{stat});
    // Layout: id 8, name 2+1, size 8, format 2, dims 1, created 8, pid 4, uid 4, readers 4,
    // writers 4, exclusive 1, waiting 4, removed 1, page_size 4, huge_fallback 1, owner_uid 4,
    // owner_gid 4, mode 4.
    size_t exclusive_at = kHeaderSize + 8 + 3 + 8 + 2 + 1 + 8 + 4 + 4 + 4 + 4;
    size_t removed_at = exclusive_at + 1 + 4;
    size_t fallback_at = removed_at + 1 + 4;
    ASSERT_EQ(frame.size(), fallback_at + 1 + 4 + 4 + 4);
    Bytes bad_fallback = frame;
    bad_fallback[fallback_at] = static_cast<std::byte>(value);
    ExpectBadReply(bad_fallback, "info.huge_fallback");
    Bytes bad_exclusive = frame;
    bad_exclusive[exclusive_at] = static_cast<std::byte>(value);
    ExpectBadReply(bad_exclusive, "info.exclusive");
    Bytes bad_removed = frame;
    bad_removed[removed_at] = static_cast<std::byte>(value);
    ExpectBadReply(bad_removed, "info.removed");
    // And 1 is accepted at both places.
    bad_exclusive[exclusive_at] = std::byte{1};
    EXPECT_TRUE(DecodeReplyFrame(bad_exclusive).ok);

    Bytes acquire_ok = Encode(Reply{AcquireOk{.lease_id = 1, .info = MinimalInfo("z")}});
    acquire_ok[kHeaderSize + 8 + 1] = static_cast<std::byte>(value);  // exclusive after mode
    ExpectBadReply(acquire_ok, "acquire_ok exclusive");
  }
}

TEST(CodecBody, InvalidLeaseModes) {
  for (uint8_t mode : {0, 3, 4, 0x81, 0xFF}) {
    Bytes acquire;
    PutString(acquire, "a");
    acquire.push_back(static_cast<std::byte>(mode));
    acquire.push_back(std::byte{0});
    PutU64(acquire, 0);
    ExpectBadRequest(Frame(MsgType::kAcquire, acquire), "acquire mode " + std::to_string(mode));

    Bytes reply = Encode(Reply{AcquireOk{.lease_id = 1, .info = MinimalInfo("z")}});
    reply[kHeaderSize + 8] = static_cast<std::byte>(mode);
    ExpectBadReply(reply, "acquire_ok mode " + std::to_string(mode));
  }
  for (uint8_t mode : {1, 2}) {
    Bytes acquire;
    PutString(acquire, "a");
    acquire.push_back(static_cast<std::byte>(mode));
    acquire.push_back(std::byte{0});
    PutU64(acquire, 0);
    RequestDecode d = DecodeRequestFrame(Frame(MsgType::kAcquire, acquire));
    ASSERT_TRUE(d.ok) << d.reason;
    EXPECT_EQ(static_cast<uint8_t>(std::get<Acquire>(d.message).mode), mode);
  }
}

TEST(CodecBody, EmptyBodyMessagesRefuseAnyBody) {
  for (MsgType type : {MsgType::kPing, MsgType::kList}) {
    ExpectBadRequest(Frame(type, FromHex({0})), TypeName(type));
  }
  for (MsgType type : {MsgType::kPong, MsgType::kReleaseOk, MsgType::kRemoveOk}) {
    ExpectBadReply(Frame(type, FromHex({0})), TypeName(type));
  }
}

// --- Random bytes ------------------------------------------------------------------------------

// Decodes `input` as the daemon and the client would and checks that every answer is consistent:
// a frame's size matches its header, the answer for a prefix never contradicts the answer for the
// whole, and any message that decodes re-encodes to exactly the same bytes (the encoding is
// canonical, so nothing is silently dropped or reinterpreted).
void CheckConsistent(const Bytes& input, uint32_t max_body) {
  FrameResult f = DecodeFrame(input, max_body);
  switch (f.status) {
    case DecodeStatus::kNeedMore:
      ASSERT_EQ(f.consumed, 0u);
      break;
    case DecodeStatus::kBad:
      ASSERT_TRUE(f.error == Errc::kBadMessage || f.error == Errc::kMessageTooLarge);
      ASSERT_FALSE(f.reason.empty());
      if (f.error == Errc::kMessageTooLarge) {
        ASSERT_GE(input.size(), kHeaderSize);
        ASSERT_GT(f.header.body_length, max_body);
      }
      break;
    case DecodeStatus::kOk: {
      ASSERT_GE(input.size(), kHeaderSize);
      ASSERT_LE(f.header.body_length, max_body);
      ASSERT_EQ(f.consumed, kHeaderSize + f.header.body_length);
      ASSERT_LE(f.consumed, input.size());
      ASSERT_EQ(f.body.size(), f.header.body_length);
      ASSERT_EQ(f.body.data(), input.data() + kHeaderSize);
      ASSERT_EQ(f.header.flags & ~kKnownFlags, 0);
      Bytes frame(input.begin(), input.begin() + static_cast<ptrdiff_t>(f.consumed));

      Request request;
      Errc error = Errc::kOk;
      std::string reason;
      if (DecodeRequest(f.header, f.body, request, error, reason)) {
        ASSERT_EQ(TypeOf(request), f.header.type);
        ASSERT_EQ(Encode(request, f.header.request_id, f.header.flags), frame);
      } else {
        ASSERT_TRUE(error == Errc::kBadMessage || error == Errc::kUnknownType);
        ASSERT_FALSE(reason.empty());
        ASSERT_EQ(error == Errc::kUnknownType,
                  (static_cast<uint16_t>(f.header.type) & kReplyBit) != 0 ||
                      static_cast<uint16_t>(f.header.type) == 0 ||
                      static_cast<uint16_t>(f.header.type) > static_cast<uint16_t>(MsgType::kChannelList));
      }
      Reply reply;
      error = Errc::kOk;
      reason.clear();
      if (DecodeReply(f.header, f.body, reply, error, reason)) {
        ASSERT_EQ(TypeOf(reply), f.header.type);
        ASSERT_EQ(Encode(reply, f.header.request_id, f.header.flags), frame);
      } else {
        ASSERT_TRUE(error == Errc::kBadMessage || error == Errc::kUnknownType);
        ASSERT_FALSE(reason.empty());
      }
      break;
    }
  }
  // Prefixes: never kOk before the whole frame, and kBad stays kBad as more bytes arrive.
  bool bad_seen = false;
  size_t limit = std::min(input.size(), f.status == DecodeStatus::kOk ? f.consumed : input.size());
  for (size_t n = 0; n < limit; ++n) {
    FrameResult p = DecodeFrame(std::span(input).first(n), max_body);
    ASSERT_NE(p.status, DecodeStatus::kOk) << "prefix " << n;
    if (p.status == DecodeStatus::kBad) bad_seen = true;
    if (bad_seen) {
      ASSERT_EQ(p.status, DecodeStatus::kBad) << "prefix " << n;
    }
  }
  if (bad_seen) {
    ASSERT_EQ(f.status, DecodeStatus::kBad);
  }
  // The same input gives the same answer.
  FrameResult again = DecodeFrame(input, max_body);
  ASSERT_EQ(again.status, f.status);
  ASSERT_EQ(again.consumed, f.consumed);
}

TEST(CodecFuzz, RandomBuffersNeverCrashAndAnswerConsistently) {
  std::mt19937_64 rng(20240601);
  for (int i = 0; i < 3000; ++i) {
    Bytes input(rng() % 200);
    for (auto& b : input) b = static_cast<std::byte>(rng());
    // Half of them get the right magic so the decoder looks past the first four bytes.
    if (i % 2 == 0 && input.size() >= 4) {
      input[0] = std::byte{'S'};
      input[1] = std::byte{'H'};
      input[2] = std::byte{'M'};
      input[3] = std::byte{'L'};
    }
    // And a third of those a small body length, so that bodies are reached.
    if (i % 6 == 0 && input.size() >= kHeaderSize) {
      uint32_t n = static_cast<uint32_t>(input.size() - kHeaderSize);
      for (int k = 0; k < 4; ++k) input[4 + k] = static_cast<std::byte>((n >> (8 * k)) & 0xFF);
      input[9] = static_cast<std::byte>(static_cast<uint8_t>(input[9]) & 0x80);
      input[10] = std::byte{0};
      input[11] = std::byte{0};
    }
    ASSERT_NO_FATAL_FAILURE(CheckConsistent(input, 256)) << "buffer " << i;
  }
}

TEST(CodecFuzz, MutatedValidFramesNeverCrashAndAnswerConsistently) {
  std::vector<Bytes> frames;
  for (const Request& r : SampleRequests()) frames.push_back(Encode(r));
  for (const Reply& r : SampleReplies()) {
    Bytes frame = Encode(r);
    if (frame.size() < 600) frames.push_back(frame);  // keep the prefix checks cheap
  }
  std::mt19937_64 rng(77);
  int decoded = 0;
  for (int i = 0; i < 4000; ++i) {
    Bytes input = frames[rng() % frames.size()];
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % input.size();
      switch (rng() % 6) {
        case 0:  // flip one bit
          input[at] ^= static_cast<std::byte>(1u << (rng() % 8));
          break;
        case 1:  // replace one byte
          input[at] = static_cast<std::byte>(rng());
          break;
        case 2:  // insert a byte
          input.insert(input.begin() + static_cast<ptrdiff_t>(at), static_cast<std::byte>(rng()));
          break;
        case 3:  // delete a byte
          if (input.size() > 1) input.erase(input.begin() + static_cast<ptrdiff_t>(at));
          break;
        case 4:  // truncate
          input.resize(at);
          break;
        case 5:  // a byte inside the body, with the header's length kept right
          if (input.size() > kHeaderSize) {
            input[kHeaderSize + rng() % (input.size() - kHeaderSize)] =
                static_cast<std::byte>(rng() % 4 == 0 ? 0xFF : rng() % 3);
          }
          break;
      }
      if (input.empty()) break;
    }
    if (rng() % 2 == 0 && input.size() >= kHeaderSize) FixLength(input);
    FrameResult f = DecodeFrame(input, kDefaultMaxMessage);
    if (f.status == DecodeStatus::kOk) ++decoded;
    ASSERT_NO_FATAL_FAILURE(CheckConsistent(input, kDefaultMaxMessage)) << "mutation " << i;
  }
  // The mutations must reach the body decoders, not only the header checks.
  EXPECT_GT(decoded, 1000);
}

}  // namespace
}  // namespace shmlease::proto
