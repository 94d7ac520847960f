// Where the public types of shmlease/client.hpp meet the wire structs of shmlease/protocol.hpp:
// every conversion between the two, field by field, in one place. A change to the wire is
// absorbed here and never becomes a change of the public API.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "shmlease/channel.hpp"
#include "shmlease/client.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease::detail {

// Throws Error(kInvalidArgument) for a value outside the enum.
proto::LeaseMode ToWire(Mode mode);
// The decoder lets only known modes through; anything else is a kBadMessage Error.
Mode FromWire(proto::LeaseMode mode);

SegmentInfo FromWire(proto::SegmentInfo&& info);
// ReservedBytes() of the public SegmentInfo, for a wire one (the length a mapping takes).
uint64_t ReservedBytes(const proto::SegmentInfo& info) noexcept;
std::vector<SegmentInfo> FromWire(std::vector<proto::SegmentInfo>&& infos);
DaemonStats FromWire(proto::StatsOk&& stats);
ChannelPolicy FromWire(proto::ChannelPolicy policy);
ChannelInfo FromWire(const proto::ChannelInfo& info);

// The request for Client::Create. Throws Error(kInvalidArgument) for more dimensions than the
// wire carries or a CreateOptions::huge outside the enum.
proto::Create CreateRequest(std::string_view name, const CreateOptions& options);
// The request for Client::Acquire (the interrupted() callback stays with the caller).
proto::Acquire AcquireRequest(std::string_view name, Mode mode, const LeaseOptions& options);

}  // namespace shmlease::detail
