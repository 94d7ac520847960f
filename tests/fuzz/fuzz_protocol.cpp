// libFuzzer target for the wire codec (common/src/codec.cpp): DecodeFrame, DecodeRequest and
// DecodeReply over arbitrary bytes. Beyond "does not crash" (ASan/UBSan watch every access), it
// checks properties a peer relies on:
//   - framing: a frame's consumed length is 16 + body_length and lies inside the input; any prefix
//     of a good frame is "need more", never "bad" and never a frame;
//   - canonical encoding: whatever decodes re-encodes to exactly the bytes it came from (the
//     encoder and decoder agree on every field), and decodes again to an equal message;
//   - errors: a refusal carries the right code and a reason.
// The input is read two ways: as a byte stream of frames (what the daemon's session sees), and,
// from its third byte on, as a body of the type named by its first two bytes (so the body
// decoders are reached without the fuzzer having to find a whole valid header first).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "shmlease/codec.hpp"
#include "shmlease/protocol.hpp"

namespace proto = shmlease::proto;
using shmlease::Errc;

namespace {

// A failed property: print what broke and abort, which libFuzzer records as a crash with its input.
[[noreturn]] void Fail(const char* what, const proto::Header& header) {
  std::fprintf(stderr, "fuzz_protocol: %s (type 0x%04x, flags 0x%04x, id %u, body %u)\n", what,
               static_cast<unsigned>(header.type), header.flags, header.request_id,
               header.body_length);
  std::abort();
}
#define FUZZ_CHECK(cond, header)      \
  do {                                \
    if (!(cond)) Fail(#cond, header); \
  } while (0)

bool IsFrameOf(const std::vector<std::byte>& encoded, std::span<const std::byte> frame) {
  return encoded.size() == frame.size() &&
         std::equal(encoded.begin(), encoded.end(), frame.begin());
}

// Decodes `body` under `header` as a request and as a reply; what decodes must re-encode to
// `frame` (the header and body it came from) and decode again to the same message.
void CheckBody(const proto::Header& header, std::span<const std::byte> body,
               std::span<const std::byte> frame) {
  proto::Request request;
  Errc error = Errc::kOk;
  std::string reason;
  if (proto::DecodeRequest(header, body, request, error, reason)) {
    FUZZ_CHECK(proto::TypeOf(request) == header.type, header);
    std::vector<std::byte> encoded;
    proto::EncodeRequest(request, header.request_id, header.flags, encoded);
    FUZZ_CHECK(IsFrameOf(encoded, frame), header);
    auto again = proto::DecodeFrame(encoded, UINT32_MAX);
    FUZZ_CHECK(again.status == proto::DecodeStatus::kOk && again.consumed == encoded.size(),
               header);
    proto::Request decoded;
    FUZZ_CHECK(proto::DecodeRequest(again.header, again.body, decoded, error, reason), header);
    FUZZ_CHECK(decoded == request, header);
  } else {
    FUZZ_CHECK(error == Errc::kBadMessage || error == Errc::kUnknownType, header);
    FUZZ_CHECK(!reason.empty(), header);
  }

  proto::Reply reply;
  error = Errc::kOk;
  reason.clear();
  if (proto::DecodeReply(header, body, reply, error, reason)) {
    FUZZ_CHECK(proto::TypeOf(reply) == header.type, header);
    std::vector<std::byte> encoded;
    proto::EncodeReply(reply, header.request_id, header.flags, encoded);
    FUZZ_CHECK(IsFrameOf(encoded, frame), header);
    auto again = proto::DecodeFrame(encoded, UINT32_MAX);
    FUZZ_CHECK(again.status == proto::DecodeStatus::kOk && again.consumed == encoded.size(),
               header);
    proto::Reply decoded;
    FUZZ_CHECK(proto::DecodeReply(again.header, again.body, decoded, error, reason), header);
    FUZZ_CHECK(decoded == reply, header);
  } else {
    FUZZ_CHECK(error == Errc::kBadMessage || error == Errc::kUnknownType, header);
    FUZZ_CHECK(!reason.empty(), header);
  }
  FUZZ_CHECK(proto::TypeName(header.type) != nullptr, header);
}

// The stream view: frames one after another, as a session splits them.
void CheckStream(std::span<const std::byte> input, uint32_t max_body) {
  while (true) {
    proto::FrameResult frame = proto::DecodeFrame(input, max_body);
    if (frame.status == proto::DecodeStatus::kNeedMore) return;
    if (frame.status == proto::DecodeStatus::kBad) {
      FUZZ_CHECK(frame.error == Errc::kBadMessage || frame.error == Errc::kMessageTooLarge,
                 frame.header);
      FUZZ_CHECK(!frame.reason.empty(), frame.header);
      if (frame.error == Errc::kMessageTooLarge) {
        FUZZ_CHECK(frame.header.body_length > max_body, frame.header);
      }
      return;
    }
    const proto::Header& h = frame.header;
    FUZZ_CHECK(h.body_length <= max_body, h);
    FUZZ_CHECK(frame.consumed == proto::kHeaderSize + h.body_length, h);
    FUZZ_CHECK(frame.consumed <= input.size(), h);
    FUZZ_CHECK(frame.body.data() == input.data() + proto::kHeaderSize, h);
    FUZZ_CHECK(frame.body.size() == h.body_length, h);
    FUZZ_CHECK((h.flags & ~proto::kKnownFlags) == 0, h);
    // Every shorter prefix waits for more bytes; a reader fed one byte at a time must not fail.
    for (size_t cut :
         {size_t{0}, size_t{1}, size_t{4}, size_t{15}, proto::kHeaderSize, frame.consumed - 1}) {
      if (cut >= frame.consumed) continue;
      auto partial = proto::DecodeFrame(input.first(cut), max_body);
      FUZZ_CHECK(partial.status == proto::DecodeStatus::kNeedMore, h);
    }
    CheckBody(h, frame.body, input.first(frame.consumed));
    input = input.subspan(frame.consumed);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  CheckStream(input, proto::kDefaultMaxMessage);
  // A body behind a header of the type the first two bytes name, with a fixed id and flags.
  if (size >= 2) {
    proto::Header header;
    header.type = static_cast<proto::MsgType>(data[0] | (data[1] << 8));
    header.flags = 0;
    header.request_id = 0x01020304;
    auto body = input.subspan(2);
    header.body_length = static_cast<uint32_t>(body.size());
    std::vector<std::byte> frame;
    auto put = [&frame](uint64_t v, int bytes) {
      for (int i = 0; i < bytes; ++i)
        frame.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
    };
    put(proto::kMagic, 4);
    put(header.body_length, 4);
    put(static_cast<uint16_t>(header.type), 2);
    put(header.flags, 2);
    put(header.request_id, 4);
    frame.insert(frame.end(), body.begin(), body.end());
    CheckBody(header, body, frame);
  }
  return 0;
}
