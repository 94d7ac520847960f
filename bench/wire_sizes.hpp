// The encoded sizes of a lease's messages, measured with the codec the client and the daemon use:
// the raw-socket baselines of lease_bench and lease_scaling_bench carry exactly these many bytes.
#pragma once

#include <cstddef>
#include <vector>

#include "shmlease/client.hpp"
#include "shmlease/codec.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease::bench {

struct WireSizes {
  size_t acquire_request = 0;
  size_t acquire_reply = 0;    // for the segment `info` describes
  size_t release_request = 0;  // one-way: no reply
};

inline WireSizes MeasureWireSizes(const SegmentInfo& info) {
  // Only the variable-length fields change an encoded size; the others are fixed-width.
  proto::SegmentInfo wire;
  wire.name = info.name;
  wire.format = info.format;
  wire.shape = info.shape;
  WireSizes sizes;
  std::vector<std::byte> frame;
  proto::EncodeRequest(proto::Acquire{info.name, proto::LeaseMode::kRead, 0, proto::kWaitForever},
                       1, 0, frame);
  sizes.acquire_request = frame.size();
  frame.clear();
  proto::EncodeReply(proto::AcquireOk{1, proto::LeaseMode::kRead, 0, wire}, 1, 0, frame);
  sizes.acquire_reply = frame.size();
  frame.clear();
  proto::EncodeRequest(proto::Release{1}, 2, proto::kFlagNoReply, frame);
  sizes.release_request = frame.size();
  return sizes;
}

}  // namespace shmlease::bench
