// Pure encoder and decoder for the messages in protocol.hpp: bytes in, a message, "need more" or
// "bad" out. No I/O and no allocation before a length is checked against its bound, so it can be
// unit-tested and fuzzed on its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "shmlease/protocol.hpp"

namespace shmlease::proto {

enum class DecodeStatus { kOk, kNeedMore, kBad };

struct FrameResult {
  DecodeStatus status = DecodeStatus::kNeedMore;
  Header header;                     // valid when status == kOk
  std::span<const std::byte> body;   // valid when status == kOk; points into the input
  size_t consumed = 0;               // header + body bytes, when status == kOk
  Errc error = Errc::kOk;            // why, when status == kBad
  std::string reason;                // human text, when status == kBad
};

// Splits one frame off the front of `input`. A header whose magic, flags or length is wrong is
// kBad before any body byte arrives; a length above `max_body` is kBad (kMessageTooLarge).
FrameResult DecodeFrame(std::span<const std::byte> input, uint32_t max_body) noexcept;

// Decodes a request body of the header's type. On failure returns false and sets `error`/`reason`
// (kUnknownType for an unknown type, kBadMessage for a body that does not decode exactly).
bool DecodeRequest(const Header& header, std::span<const std::byte> body, Request& out,
                   Errc& error, std::string& reason);
bool DecodeReply(const Header& header, std::span<const std::byte> body, Reply& out, Errc& error,
                 std::string& reason);

// Appends a whole frame (header + body) to `out`.
void EncodeRequest(const Request& request, uint32_t request_id, uint16_t flags,
                   std::vector<std::byte>& out);
void EncodeReply(const Reply& reply, uint32_t request_id, uint16_t flags,
                 std::vector<std::byte>& out);

// The type a request or reply travels under.
MsgType TypeOf(const Request& request) noexcept;
MsgType TypeOf(const Reply& reply) noexcept;

// "hello", "acquire_ok", ... for logs.
const char* TypeName(MsgType type) noexcept;

}  // namespace shmlease::proto
