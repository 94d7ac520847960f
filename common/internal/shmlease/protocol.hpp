// The shmlease wire protocol: every message, limit and constant, defined once.
// docs/PROTOCOL.md describes the same bytes in prose; keep the two in step.
//
// A message is a 16-byte header followed by `body_length` bytes of body, all little-endian:
//   u32 magic ("SHML"), u32 body_length, u16 type, u16 flags, u32 request_id.
// Replies carry the request's id and its type with the high bit set (kReplyBit); an Error reply
// (kError) can answer any request. Strings are u16 length + bytes; shapes are u8 count + u64 each.
//
// Each message states its type (kType), its name for logs (kName) and, in Fields(m), its members
// in wire order with how each travels (wire_fields.hpp); codec.cpp encodes, decodes and sizes
// every message from that one list. The Request and Reply variants at the end are the list of
// messages: decoding dispatches on them and TypeName() reads them. A new message is an enum value,
// a struct here and its place in one variant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "shmlease/errc.hpp"
#include "shmlease/wire_fields.hpp"

namespace shmlease::proto {

inline constexpr uint32_t kMagic = 0x4C4D4853;  // "SHML" as little-endian bytes
inline constexpr uint32_t kVersion = 1;
inline constexpr size_t kHeaderSize = 16;
// A daemon never accepts a body above its configured max message size; this is the default and
// the ceiling a client accepts for replies (a List of many segments can be large).
inline constexpr uint32_t kDefaultMaxMessage = 64 * 1024;
inline constexpr uint32_t kClientMaxReply = 64 * 1024 * 1024;
inline constexpr size_t kMaxString = 1024;     // any string field
inline constexpr size_t kMaxErrorText = 4096;  // an Error reply's message

inline constexpr uint16_t kReplyBit = 0x8000;

// Requests and their replies, paired: a reply is its request's value | kReplyBit.
enum class MsgType : uint16_t {
  kHello = 0x0001,
  kHelloOk = 0x8001,
  kPing = 0x0002,
  kPong = 0x8002,
  kCreate = 0x0003,
  kCreateOk = 0x8003,
  kAcquire = 0x0004,
  kAcquireOk = 0x8004,
  kRelease = 0x0005,
  kReleaseOk = 0x8005,
  kRemove = 0x0006,
  kRemoveOk = 0x8006,
  kStat = 0x0007,
  kStatOk = 0x8007,
  kList = 0x0008,
  kListOk = 0x8008,
  kChmod = 0x0009,
  kChmodOk = 0x8009,
  kStats = 0x000A,
  kStatsOk = 0x800A,
  // Unsolicited, request_id 0: the daemon freed a segment this connection was sent a descriptor
  // for; the client may unmap it once no lease of its own uses it.
  kSegmentGone = 0x8100,
  kError = 0xFFFF,
  // After a reconnect: the leases and mappings a client still holds (docs/RESTART.md).
  kReclaim = 0x000B,
  kReclaimOk = 0x800B,
  // Withdraws a waiting Acquire of this connection. No reply of its own: the Acquire is answered
  // (ErrorReply kCancelled, or the grant if it raced ahead). Unknown or finished ids are ignored.
  kCancel = 0x000C,
  // Channels (docs/CHANNELS.md): daemon objects whose parts are sealed memory the daemon made.
  kChannelCreate = 0x000D,
  kChannelOk = 0x800D,  // answers ChannelCreate, ChannelStat and ChannelRemove
  kChannelStat = 0x000E,
  kChannelAttach = 0x000F,
  kChannelAttachOk = 0x800F,
  kChannelPart = 0x0010,
  kChannelPartOk = 0x8010,
  kChannelDetach = 0x0011,
  kChannelDone = 0x8011,  // answers ChannelDetach and ChannelEvict
  kChannelEvict = 0x0012,
  kChannelRemove = 0x0013,
  kChannelList = 0x0014,
  kChannelListOk = 0x8014,
};

// Header flags.
// server -> client: a descriptor rides with this message.
inline constexpr uint16_t kFlagFd = 0x0001;
// client -> server: answer only on failure.
inline constexpr uint16_t kFlagNoReply = 0x0002;
inline constexpr uint16_t kKnownFlags = kFlagFd | kFlagNoReply;

struct Header {
  uint32_t body_length = 0;
  MsgType type = MsgType::kPing;
  uint16_t flags = 0;
  uint32_t request_id = 0;
};

enum class LeaseMode : uint8_t { kRead = 1, kWrite = 2 };

// The two field rules most messages use.
namespace wire {
// A string of at most kMaxString bytes (an Error reply's message has a bound of its own).
constexpr auto Str(auto& text) { return Text<kMaxString>(text); }
// A lease mode: one byte, kRead or kWrite; any other value is a bad message.
constexpr auto Mode(auto& mode) { return OneOf<LeaseMode::kRead, LeaseMode::kWrite>(mode); }
}  // namespace wire

// Everything a client may learn about one segment.
struct SegmentInfo {
  uint64_t id = 0;  // unique for the daemon's lifetime, never reused
  std::string name;
  uint64_t size = 0;
  std::string format;  // "" = raw bytes
  std::vector<uint64_t> shape;
  int64_t created_unix_ns = 0;
  uint32_t creator_pid = 0;
  uint32_t creator_uid = 0;
  uint32_t readers = 0;       // read leases held
  uint32_t writers = 0;       // write leases held
  uint8_t exclusive = 0;      // 1 while an exclusive lease is held
  uint32_t waiting = 0;       // lease requests queued
  uint8_t removed = 0;        // 1 once removed; freed with its last lease
  uint32_t page_size = 0;     // backing page size in bytes (2 MiB when backed by huge pages)
  uint8_t huge_fallback = 0;  // 1: huge pages were asked for (best effort) but normal pages back it
  uint32_t owner_uid = 0;     // access control: owner, group and permission bits (rw for
  uint32_t owner_gid = 0;     // owner, group, others, as in 0640; x bits are ignored)
  uint32_t mode = 0600;

  static auto Fields(auto& m) {
    return std::tuple{
        wire::Int(m.id),          wire::Str(m.name),        wire::Int(m.size),
        wire::Str(m.format),      wire::Shape(m.shape),     wire::Int(m.created_unix_ns),
        wire::Int(m.creator_pid), wire::Int(m.creator_uid), wire::Int(m.readers),
        wire::Int(m.writers),     wire::Flag(m.exclusive),  wire::Int(m.waiting),
        wire::Flag(m.removed),    wire::Int(m.page_size),   wire::Flag(m.huge_fallback),
        wire::Int(m.owner_uid),   wire::Int(m.owner_gid),   wire::Int(m.mode)};
  }
  bool operator==(const SegmentInfo&) const = default;
};

// --- Requests (client -> daemon) ---
struct Hello {
  static constexpr MsgType kType = MsgType::kHello;
  static constexpr const char* kName = "hello";
  uint32_t version = kVersion;
  std::string client_name;
  static auto Fields(auto& m) { return std::tuple{wire::Int(m.version), wire::Str(m.client_name)}; }
  bool operator==(const Hello&) const = default;
};
struct Ping {
  static constexpr MsgType kType = MsgType::kPing;
  static constexpr const char* kName = "ping";
  static auto Fields(auto&) { return std::tuple{}; }
  bool operator==(const Ping&) const = default;
};
inline constexpr uint8_t kCreateExistOk = 0x01;
inline constexpr uint8_t kCreateHuge = 0x02;            // back it with huge pages, or fail
inline constexpr uint8_t kCreateHugeBestEffort = 0x04;  // huge pages if the host has them
inline constexpr uint8_t kCreateNoHuge = 0x08;  // normal pages even above the daemon's threshold
inline constexpr uint8_t kCreateKnownFlags = 0x0F;
inline constexpr uint32_t kDefaultMode = 0600;
struct Create {
  static constexpr MsgType kType = MsgType::kCreate;
  static constexpr const char* kName = "create";
  std::string name;
  uint64_t size = 0;  // 0: derive from format and shape
  std::string format;
  std::vector<uint64_t> shape;
  uint8_t flags = 0;
  uint32_t mode = kDefaultMode;  // permission bits, at most 0777
  static auto Fields(auto& m) {
    return std::tuple{wire::Str(m.name),    wire::Int(m.size),  wire::Str(m.format),
                      wire::Shape(m.shape), wire::Int(m.flags), wire::Int(m.mode)};
  }
  bool operator==(const Create&) const = default;
};
inline constexpr int64_t kWaitForever = -1;
struct Acquire {
  static constexpr MsgType kType = MsgType::kAcquire;
  static constexpr const char* kName = "acquire";
  std::string name;
  LeaseMode mode = LeaseMode::kRead;
  uint8_t exclusive = 0;
  int64_t timeout_ms = 0;  // 0: fail at once if not grantable; kWaitForever: no limit
  static auto Fields(auto& m) {
    return std::tuple{wire::Str(m.name), wire::Mode(m.mode), wire::Flag(m.exclusive),
                      wire::Int(m.timeout_ms)};
  }
  bool operator==(const Acquire&) const = default;
};
struct Release {
  static constexpr MsgType kType = MsgType::kRelease;
  static constexpr const char* kName = "release";
  uint64_t lease_id = 0;
  static auto Fields(auto& m) { return std::tuple{wire::Int(m.lease_id)}; }
  bool operator==(const Release&) const = default;
};
struct Remove {
  static constexpr MsgType kType = MsgType::kRemove;
  static constexpr const char* kName = "remove";
  std::string name;
  static auto Fields(auto& m) { return std::tuple{wire::Str(m.name)}; }
  bool operator==(const Remove&) const = default;
};
struct Stat {
  static constexpr MsgType kType = MsgType::kStat;
  static constexpr const char* kName = "stat";
  std::string name;
  static auto Fields(auto& m) { return std::tuple{wire::Str(m.name)}; }
  bool operator==(const Stat&) const = default;
};
struct List {
  static constexpr MsgType kType = MsgType::kList;
  static constexpr const char* kName = "list";
  static auto Fields(auto&) { return std::tuple{}; }
  bool operator==(const List&) const = default;
};
// Changes a segment's permission bits; only its owner or an administrator may.
struct Chmod {
  static constexpr MsgType kType = MsgType::kChmod;
  static constexpr const char* kName = "chmod";
  std::string name;
  uint32_t mode = kDefaultMode;
  static auto Fields(auto& m) { return std::tuple{wire::Str(m.name), wire::Int(m.mode)}; }
  bool operator==(const Chmod&) const = default;
};
struct Stats {
  static constexpr MsgType kType = MsgType::kStats;
  static constexpr const char* kName = "stats";
  static auto Fields(auto&) { return std::tuple{}; }
  bool operator==(const Stats&) const = default;
};
// A lease the client held on an earlier connection (perhaps to an earlier daemon process). A
// segment is named by its id and its creation time together, so that a daemon that lost its state
// and reuses ids can never mistake another segment for it.
struct ReclaimLease {
  uint64_t lease_id = 0;  // the id the client knew it by; echoed in the result
  uint64_t segment_id = 0;
  int64_t created_unix_ns = 0;
  LeaseMode mode = LeaseMode::kRead;
  uint8_t exclusive = 0;
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.lease_id), wire::Int(m.segment_id), wire::Int(m.created_unix_ns),
                      wire::Mode(m.mode), wire::Flag(m.exclusive)};
  }
  bool operator==(const ReclaimLease&) const = default;
};
// A segment the client has mapped (writable or read-only) from a descriptor it was passed earlier.
struct ReclaimMapping {
  uint64_t segment_id = 0;
  int64_t created_unix_ns = 0;
  uint8_t writable = 0;
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.segment_id), wire::Int(m.created_unix_ns),
                      wire::Flag(m.writable)};
  }
  bool operator==(const ReclaimMapping&) const = default;
};
// What one entry of a Reclaim takes on the wire (a client fills a request up to its size limit).
inline constexpr size_t kReclaimLeaseBytes = wire::kMinBytesOf<ReclaimLease>;
inline constexpr size_t kReclaimMappingBytes = wire::kMinBytesOf<ReclaimMapping>;
// Re-grants `leases` on this connection and records `mappings` as already passed (no descriptor is
// sent again for them). Each lease is granted as an Acquire with timeout 0 would be, or refused.
struct Reclaim {
  static constexpr MsgType kType = MsgType::kReclaim;
  static constexpr const char* kName = "reclaim";
  std::vector<ReclaimLease> leases;
  std::vector<ReclaimMapping> mappings;
  static auto Fields(auto& m) { return std::tuple{wire::List(m.leases), wire::List(m.mappings)}; }
  bool operator==(const Reclaim&) const = default;
};

// Withdraws the Acquire sent as `request_id` on this connection while it waits in a queue: the
// daemon drops it and answers that Acquire with ErrorReply(kCancelled). If the lease was already
// granted (the AcquireOk may cross the Cancel), or the request is unknown or finished, the Cancel
// is ignored; a client that receives the grant after cancelling releases it. Never answered.
struct Cancel {
  static constexpr MsgType kType = MsgType::kCancel;
  static constexpr const char* kName = "cancel";
  uint32_t request_id = 0;
  static auto Fields(auto& m) { return std::tuple{wire::Int(m.request_id)}; }
  bool operator==(const Cancel&) const = default;
};

// --- Channels ---
enum class ChannelPolicy : uint8_t { kBlock = 1, kLatest = 2 };
// A holder is a reader place that takes no frames of its own: it holds frames another process
// took, by slot and sequence number (an array of a frame sent to another process). It never makes
// the writer wait for frames it has not read, and is not counted among the readers.
enum class ChannelRole : uint8_t { kReader = 1, kWriter = 2, kHolder = 3 };
// What a ChannelPart asks for: the asker's own reader page (a reader, read-write), or a reader's
// page read-only (the writer, to see which frames that reader holds).
enum class ChannelPartKind : uint8_t { kOwnPage = 1, kReaderPage = 2 };
namespace wire {
constexpr auto Policy(auto& p) { return OneOf<ChannelPolicy::kBlock, ChannelPolicy::kLatest>(p); }
constexpr auto Role(auto& r) {
  return OneOf<ChannelRole::kReader, ChannelRole::kWriter, ChannelRole::kHolder>(r);
}
constexpr auto PartKind(auto& k) {
  return OneOf<ChannelPartKind::kOwnPage, ChannelPartKind::kReaderPage>(k);
}
}  // namespace wire

// Everything a client may learn about one channel. The geometry is the daemon's: participants use
// it (never the copy in shared memory) for every size and index.
struct ChannelInfo {
  uint64_t id = 0;
  std::string name;
  std::string format;
  std::vector<uint64_t> shape;
  uint32_t slots = 0;
  ChannelPolicy policy = ChannelPolicy::kBlock;
  uint64_t frame_bytes = 0;    // the largest frame (fixed-shape: exactly every frame)
  uint8_t variable = 0;        // 1: frames carry their own length, up to frame_bytes
  uint64_t slot_stride = 0;    // bytes between slots' data
  uint64_t data_offset = 0;    // where slot 0's data starts in the frames part
  uint64_t frames_bytes = 0;   // size of the frames part
  uint32_t reader_page_bytes = 0;
  int64_t reader_timeout_ms = 0;  // 0: block waits for readers without limit
  int64_t created_unix_ns = 0;
  uint32_t owner_uid = 0;
  uint32_t owner_gid = 0;
  uint32_t mode = 0600;  // read = may read frames, write = may be the writer
  uint32_t writer_pid = 0;  // 0: no writer attached
  uint32_t readers = 0;
  uint32_t holders = 0;  // places holding frames for other processes (ChannelRole::kHolder)
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.id),          wire::Str(m.name),
                      wire::Str(m.format),      wire::Shape(m.shape),
                      wire::Int(m.slots),       wire::Policy(m.policy),
                      wire::Int(m.frame_bytes), wire::Flag(m.variable),
                      wire::Int(m.slot_stride), wire::Int(m.data_offset),
                      wire::Int(m.frames_bytes), wire::Int(m.reader_page_bytes),
                      wire::Int(m.reader_timeout_ms), wire::Int(m.created_unix_ns),
                      wire::Int(m.owner_uid),   wire::Int(m.owner_gid),
                      wire::Int(m.mode),        wire::Int(m.writer_pid),
                      wire::Int(m.readers),     wire::Int(m.holders)};
  }
  bool operator==(const ChannelInfo&) const = default;
};

// Creates a channel, or with kCreateExistOk returns the existing one when it matches: format and
// shape (and max frame size) always, slots and policy only when given (non-zero).
struct ChannelCreate {
  static constexpr MsgType kType = MsgType::kChannelCreate;
  static constexpr const char* kName = "channel_create";
  std::string name;
  std::string format;
  std::vector<uint64_t> shape;   // fixed-shape frames; empty with max_frame_bytes
  uint64_t max_frame_bytes = 0;  // variable-size frames of at most this many bytes; 0: fixed
  uint32_t slots = 0;            // 0: 8 when created, any when it exists
  uint8_t policy = 0;            // 0: block when created, any when it exists; else ChannelPolicy
  int64_t reader_timeout_ms = 0;
  uint8_t flags = 0;             // kCreateExistOk
  uint32_t mode = kDefaultMode;
  static auto Fields(auto& m) {
    return std::tuple{wire::Str(m.name),          wire::Str(m.format),
                      wire::Shape(m.shape),       wire::Int(m.max_frame_bytes),
                      wire::Int(m.slots),         wire::Int(m.policy),
                      wire::Int(m.reader_timeout_ms), wire::Int(m.flags),
                      wire::Int(m.mode)};
  }
  bool operator==(const ChannelCreate&) const = default;
};
struct ChannelStat {
  static constexpr MsgType kType = MsgType::kChannelStat;
  static constexpr const char* kName = "channel_stat";
  std::string name;
  static auto Fields(auto& m) { return std::tuple{wire::Str(m.name)}; }
  bool operator==(const ChannelStat&) const = default;
};
// Joins a channel. The reply carries the frames part: read-write for the writer, read-only for a
// reader. A reader then asks for its own page (ChannelPart kOwnPage). One writer at a time: a
// second gets kTimeout at once (clients retry until their own timeout).
struct ChannelAttach {
  static constexpr MsgType kType = MsgType::kChannelAttach;
  static constexpr const char* kName = "channel_attach";
  std::string name;
  ChannelRole role = ChannelRole::kReader;
  static auto Fields(auto& m) { return std::tuple{wire::Str(m.name), wire::Role(m.role)}; }
  bool operator==(const ChannelAttach&) const = default;
};
struct ChannelPart {
  static constexpr MsgType kType = MsgType::kChannelPart;
  static constexpr const char* kName = "channel_part";
  uint64_t channel_id = 0;
  ChannelPartKind kind = ChannelPartKind::kOwnPage;
  uint32_t index = 0;       // the reader
  uint64_t generation = 0;  // of that reader's attachment
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.channel_id), wire::PartKind(m.kind), wire::Int(m.index),
                      wire::Int(m.generation)};
  }
  bool operator==(const ChannelPart&) const = default;
};
// Leaves: the writer ends its stream (readers get end of stream), a reader frees its place.
struct ChannelDetach {
  static constexpr MsgType kType = MsgType::kChannelDetach;
  static constexpr const char* kName = "channel_detach";
  uint64_t channel_id = 0;
  ChannelRole role = ChannelRole::kReader;
  uint32_t index = 0;
  uint64_t generation = 0;
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.channel_id), wire::Role(m.role), wire::Int(m.index),
                      wire::Int(m.generation)};
  }
  bool operator==(const ChannelDetach&) const = default;
};
// The writer removes a reader (ChannelEvictReason): it gets kEvicted from then on.
enum class ChannelEvictReason : uint8_t { kTimeout = 1, kBadState = 2 };
struct ChannelEvict {
  static constexpr MsgType kType = MsgType::kChannelEvict;
  static constexpr const char* kName = "channel_evict";
  uint64_t channel_id = 0;
  uint32_t index = 0;
  uint64_t generation = 0;
  ChannelEvictReason reason = ChannelEvictReason::kTimeout;
  static auto Fields(auto& m) {
    return std::tuple{
        wire::Int(m.channel_id), wire::Int(m.index), wire::Int(m.generation),
        wire::OneOf<ChannelEvictReason::kTimeout, ChannelEvictReason::kBadState>(m.reason)};
  }
  bool operator==(const ChannelEvict&) const = default;
};
struct ChannelRemove {
  static constexpr MsgType kType = MsgType::kChannelRemove;
  static constexpr const char* kName = "channel_remove";
  std::string name;
  static auto Fields(auto& m) { return std::tuple{wire::Str(m.name)}; }
  bool operator==(const ChannelRemove&) const = default;
};
struct ChannelList {
  static constexpr MsgType kType = MsgType::kChannelList;
  static constexpr const char* kName = "channel_list";
  static auto Fields(auto&) { return std::tuple{}; }
  bool operator==(const ChannelList&) const = default;
};

// --- Replies (daemon -> client) ---
struct HelloOk {
  static constexpr MsgType kType = MsgType::kHelloOk;
  static constexpr const char* kName = "hello_ok";
  uint32_t version = kVersion;
  uint32_t server_pid = 0;
  uint32_t max_message = kDefaultMaxMessage;
  std::string server_version;
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.version), wire::Int(m.server_pid), wire::Int(m.max_message),
                      wire::Str(m.server_version)};
  }
  bool operator==(const HelloOk&) const = default;
};
struct Pong {
  static constexpr MsgType kType = MsgType::kPong;
  static constexpr const char* kName = "pong";
  static auto Fields(auto&) { return std::tuple{}; }
  bool operator==(const Pong&) const = default;
};
struct CreateOk {
  static constexpr MsgType kType = MsgType::kCreateOk;
  static constexpr const char* kName = "create_ok";
  SegmentInfo info;
  static auto Fields(auto& m) { return std::tuple{wire::Nested(m.info)}; }
  bool operator==(const CreateOk&) const = default;
};
// When the header carries kFlagFd, one descriptor for segment info.id rides with this message:
// read-only for a read lease, read-write for a write lease. The daemon sends each (segment, mode)
// descriptor once per connection; later leases reuse the client's mapping.
struct AcquireOk {
  static constexpr MsgType kType = MsgType::kAcquireOk;
  static constexpr const char* kName = "acquire_ok";
  uint64_t lease_id = 0;
  LeaseMode mode = LeaseMode::kRead;
  uint8_t exclusive = 0;
  SegmentInfo info;
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.lease_id), wire::Mode(m.mode), wire::Flag(m.exclusive),
                      wire::Nested(m.info)};
  }
  bool operator==(const AcquireOk&) const = default;
};
struct ReleaseOk {
  static constexpr MsgType kType = MsgType::kReleaseOk;
  static constexpr const char* kName = "release_ok";
  static auto Fields(auto&) { return std::tuple{}; }
  bool operator==(const ReleaseOk&) const = default;
};
struct RemoveOk {
  static constexpr MsgType kType = MsgType::kRemoveOk;
  static constexpr const char* kName = "remove_ok";
  static auto Fields(auto&) { return std::tuple{}; }
  bool operator==(const RemoveOk&) const = default;
};
struct StatOk {
  static constexpr MsgType kType = MsgType::kStatOk;
  static constexpr const char* kName = "stat_ok";
  SegmentInfo info;
  static auto Fields(auto& m) { return std::tuple{wire::Nested(m.info)}; }
  bool operator==(const StatOk&) const = default;
};
struct ListOk {
  static constexpr MsgType kType = MsgType::kListOk;
  static constexpr const char* kName = "list_ok";
  std::vector<SegmentInfo> segments;
  static auto Fields(auto& m) { return std::tuple{wire::List(m.segments)}; }
  bool operator==(const ListOk&) const = default;
};
struct ChmodOk {
  static constexpr MsgType kType = MsgType::kChmodOk;
  static constexpr const char* kName = "chmod_ok";
  SegmentInfo info;
  static auto Fields(auto& m) { return std::tuple{wire::Nested(m.info)}; }
  bool operator==(const ChmodOk&) const = default;
};
// One lease a client holds, for Stats.
struct HeldLease {
  std::string segment;
  LeaseMode mode = LeaseMode::kRead;
  uint8_t exclusive = 0;
  static auto Fields(auto& m) {
    return std::tuple{wire::Str(m.segment), wire::Mode(m.mode), wire::Flag(m.exclusive)};
  }
  bool operator==(const HeldLease&) const = default;
};
// One connected client, as the kernel identified it.
struct ClientInfo {
  uint64_t conn_id = 0;
  uint32_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string process;
  uint32_t waiting = 0;  // lease requests queued
  std::vector<HeldLease> leases;
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.conn_id), wire::Int(m.pid),     wire::Int(m.uid),
                      wire::Int(m.gid),     wire::Str(m.process), wire::Int(m.waiting),
                      wire::List(m.leases)};
  }
  bool operator==(const ClientInfo&) const = default;
};
struct StatsOk {
  static constexpr MsgType kType = MsgType::kStatsOk;
  static constexpr const char* kName = "stats_ok";
  uint32_t segments = 0;   // named and removed-but-leased
  uint64_t bytes = 0;      // in all segments
  uint64_t max_bytes = 0;  // the daemon's total byte limit
  uint32_t leases = 0;
  uint32_t connections = 0;
  uint64_t uptime_ms = 0;
  std::vector<ClientInfo> clients;  // the clients the asker may see: all for administrators
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.segments), wire::Int(m.bytes),       wire::Int(m.max_bytes),
                      wire::Int(m.leases),   wire::Int(m.connections), wire::Int(m.uptime_ms),
                      wire::List(m.clients)};
  }
  bool operator==(const StatsOk&) const = default;
};
// One entry per ReclaimLease, in request order: status kOk with the lease's new id, or why not.
struct ReclaimResult {
  uint64_t old_lease_id = 0;
  uint64_t new_lease_id = 0;  // 0 unless status is kOk
  Errc status = Errc::kOk;
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.old_lease_id), wire::Int(m.new_lease_id), wire::Int(m.status)};
  }
  bool operator==(const ReclaimResult&) const = default;
};
inline constexpr size_t kReclaimResultBytes = wire::kMinBytesOf<ReclaimResult>;
struct ReclaimOk {
  static constexpr MsgType kType = MsgType::kReclaimOk;
  static constexpr const char* kName = "reclaim_ok";
  std::vector<ReclaimResult> leases;
  std::vector<ReclaimMapping> mappings;  // those accepted; the client drops the others
  static auto Fields(auto& m) { return std::tuple{wire::List(m.leases), wire::List(m.mappings)}; }
  bool operator==(const ReclaimOk&) const = default;
};
struct SegmentGone {
  static constexpr MsgType kType = MsgType::kSegmentGone;
  static constexpr const char* kName = "segment_gone";
  uint64_t segment_id = 0;
  static auto Fields(auto& m) { return std::tuple{wire::Int(m.segment_id)}; }
  bool operator==(const SegmentGone&) const = default;
};
struct ChannelOk {
  static constexpr MsgType kType = MsgType::kChannelOk;
  static constexpr const char* kName = "channel_ok";
  ChannelInfo info;
  uint8_t created = 0;  // ChannelCreate: 1 when this request made it
  static auto Fields(auto& m) { return std::tuple{wire::Nested(m.info), wire::Flag(m.created)}; }
  bool operator==(const ChannelOk&) const = default;
};
// With kFlagFd: the frames part (read-only for a reader).
struct ChannelAttachOk {
  static constexpr MsgType kType = MsgType::kChannelAttachOk;
  static constexpr const char* kName = "channel_attach_ok";
  ChannelInfo info;
  uint32_t index = 0;       // a reader's place (0..63); 0 for the writer
  uint64_t generation = 0;  // of this attachment (a reader's, or the writer generation)
  static auto Fields(auto& m) {
    return std::tuple{wire::Nested(m.info), wire::Int(m.index), wire::Int(m.generation)};
  }
  bool operator==(const ChannelAttachOk&) const = default;
};
// With kFlagFd: the page asked for.
struct ChannelPartOk {
  static constexpr MsgType kType = MsgType::kChannelPartOk;
  static constexpr const char* kName = "channel_part_ok";
  uint32_t index = 0;
  uint64_t generation = 0;
  static auto Fields(auto& m) { return std::tuple{wire::Int(m.index), wire::Int(m.generation)}; }
  bool operator==(const ChannelPartOk&) const = default;
};
struct ChannelDone {
  static constexpr MsgType kType = MsgType::kChannelDone;
  static constexpr const char* kName = "channel_done";
  static auto Fields(auto&) { return std::tuple{}; }
  bool operator==(const ChannelDone&) const = default;
};
struct ChannelListOk {
  static constexpr MsgType kType = MsgType::kChannelListOk;
  static constexpr const char* kName = "channel_list_ok";
  std::vector<ChannelInfo> channels;
  static auto Fields(auto& m) { return std::tuple{wire::List(m.channels)}; }
  bool operator==(const ChannelListOk&) const = default;
};
struct ErrorReply {
  static constexpr MsgType kType = MsgType::kError;
  static constexpr const char* kName = "error";
  Errc code = Errc::kInternal;
  std::string message;
  static auto Fields(auto& m) {
    return std::tuple{wire::Int(m.code), wire::Text<kMaxErrorText>(m.message)};
  }
  bool operator==(const ErrorReply&) const = default;
};

// The lists of messages: each alternative's kType is its wire type. Requests never have the reply
// bit, replies always do, and no type is listed twice (codec.cpp checks).
using Request =
    std::variant<Hello, Ping, Create, Acquire, Release, Remove, Stat, List, Chmod, Stats, Reclaim,
                 Cancel, ChannelCreate, ChannelStat, ChannelAttach, ChannelPart, ChannelDetach,
                 ChannelEvict, ChannelRemove, ChannelList>;
using Reply = std::variant<HelloOk, Pong, CreateOk, AcquireOk, ReleaseOk, RemoveOk, StatOk, ListOk,
                           ChmodOk, StatsOk, SegmentGone, ErrorReply, ReclaimOk, ChannelOk,
                           ChannelAttachOk, ChannelPartOk, ChannelDone, ChannelListOk>;

}  // namespace shmlease::proto
