#include "wire_types.hpp"

#include <string>
#include <utility>

#include "shmlease/format.hpp"

namespace shmlease::detail {

static_assert(kProtocolVersion == proto::kVersion, "the public protocol version is the wire's");
static_assert(kDefaultSegmentMode == proto::kDefaultMode, "the public default mode is the wire's");

proto::LeaseMode ToWire(Mode mode) {
  switch (mode) {
    case Mode::kRead:
      return proto::LeaseMode::kRead;
    case Mode::kWrite:
      return proto::LeaseMode::kWrite;
  }
  throw Error(Errc::kInvalidArgument, "the lease mode is not one of Mode::kRead, Mode::kWrite");
}

Mode FromWire(proto::LeaseMode mode) {
  switch (mode) {
    case proto::LeaseMode::kRead:
      return Mode::kRead;
    case proto::LeaseMode::kWrite:
      return Mode::kWrite;
  }
  throw Error(Errc::kBadMessage, "shmleased sent an unknown lease mode");
}

SegmentInfo FromWire(proto::SegmentInfo&& info) {
  SegmentInfo out;
  out.id = info.id;
  out.name = std::move(info.name);
  out.size = info.size;
  out.format = std::move(info.format);
  out.shape = std::move(info.shape);
  out.created_unix_ns = info.created_unix_ns;
  out.creator_pid = info.creator_pid;
  out.creator_uid = info.creator_uid;
  out.readers = info.readers;
  out.writers = info.writers;
  out.exclusive = info.exclusive;
  out.waiting = info.waiting;
  out.removed = info.removed;
  out.page_size = info.page_size;
  out.huge_fallback = info.huge_fallback;
  out.owner_uid = info.owner_uid;
  out.owner_gid = info.owner_gid;
  out.mode = info.mode;
  return out;
}

uint64_t ReservedBytes(const proto::SegmentInfo& info) noexcept {
  SegmentInfo sizes;  // no allocation: only the two numbers the rounding needs
  sizes.size = info.size;
  sizes.page_size = info.page_size;
  return shmlease::ReservedBytes(sizes);
}

std::vector<SegmentInfo> FromWire(std::vector<proto::SegmentInfo>&& infos) {
  std::vector<SegmentInfo> out;
  out.reserve(infos.size());
  for (proto::SegmentInfo& info : infos) out.push_back(FromWire(std::move(info)));
  return out;
}

DaemonStats FromWire(proto::StatsOk&& stats) {
  DaemonStats out;
  out.segments = stats.segments;
  out.bytes = stats.bytes;
  out.max_bytes = stats.max_bytes;
  out.leases = stats.leases;
  out.connections = stats.connections;
  out.uptime_ms = stats.uptime_ms;
  out.clients.reserve(stats.clients.size());
  for (proto::ClientInfo& client : stats.clients) {
    ClientInfo& c = out.clients.emplace_back();
    c.conn_id = client.conn_id;
    c.pid = client.pid;
    c.uid = client.uid;
    c.gid = client.gid;
    c.process = std::move(client.process);
    c.waiting = client.waiting;
    c.leases.reserve(client.leases.size());
    for (proto::HeldLease& lease : client.leases) {
      c.leases.push_back(
          HeldLease{std::move(lease.segment), FromWire(lease.mode), lease.exclusive});
    }
  }
  return out;
}

proto::Create CreateRequest(std::string_view name, const CreateOptions& options) {
  // The wire carries at most kMaxDims dimensions: say what is wrong instead of a bad message.
  if (options.shape.size() > kMaxDims) {
    throw Error(Errc::kInvalidArgument, "shape has " + std::to_string(options.shape.size()) +
                                            " dimensions; at most " + std::to_string(kMaxDims) +
                                            " are allowed");
  }
  uint8_t flags = options.exist_ok ? proto::kCreateExistOk : 0;
  switch (options.huge) {
    case HugePages::kDefault:
      break;
    case HugePages::kNo:
      flags |= proto::kCreateNoHuge;
      break;
    case HugePages::kYes:
      flags |= proto::kCreateHuge;
      break;
    case HugePages::kBestEffort:
      flags |= proto::kCreateHugeBestEffort;
      break;
    default:
      throw Error(Errc::kInvalidArgument,
                  "CreateOptions::huge is not one of kDefault, kNo, kYes, kBestEffort");
  }
  return proto::Create{.name = std::string(name),
                       .size = options.size,
                       .format = options.format,
                       .shape = options.shape,
                       .flags = flags,
                       .mode = options.mode};
}

proto::Acquire AcquireRequest(std::string_view name, Mode mode, const LeaseOptions& options) {
  int64_t timeout = options.timeout.count() < 0 ? proto::kWaitForever : options.timeout.count();
  return proto::Acquire{.name = std::string(name),
                        .mode = ToWire(mode),
                        .exclusive = static_cast<uint8_t>(options.exclusive ? 1 : 0),
                        .timeout_ms = timeout};
}

ChannelPolicy FromWire(proto::ChannelPolicy policy) {
  switch (policy) {
    case proto::ChannelPolicy::kLatest:
      return ChannelPolicy::kLatest;
    case proto::ChannelPolicy::kBlock:
      break;
  }
  return ChannelPolicy::kBlock;
}

ChannelInfo FromWire(const proto::ChannelInfo& c) {
  ChannelInfo out;
  out.name = c.name;
  out.format = c.format;
  out.shape = c.shape;
  out.slots = c.slots;
  out.policy = FromWire(c.policy);
  out.frame_bytes = c.frame_bytes;
  out.variable = c.variable != 0;
  out.reader_timeout = std::chrono::milliseconds(c.reader_timeout_ms);
  out.bytes = c.frames_bytes;
  out.owner_uid = c.owner_uid;
  out.owner_gid = c.owner_gid;
  out.mode = c.mode;
  out.writer_pid = c.writer_pid;
  out.readers = c.readers;
  out.holders = c.holders;
  out.created_unix_ns = c.created_unix_ns;
  return out;
}

}  // namespace shmlease::detail
