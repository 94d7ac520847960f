#include "shmlease/errc.hpp"

#include <string>

namespace shmlease {
namespace {

struct ErrcEntry {
  Errc code;
  std::string_view name;
  std::string_view message;
};

// One row per code; the order is by number.
constexpr ErrcEntry kErrcTable[] = {
    {Errc::kOk, "ok", "success"},
    {Errc::kBadMessage, "bad_message", "malformed message"},
    {Errc::kVersionMismatch, "version_mismatch", "protocol version mismatch"},
    {Errc::kUnknownType, "unknown_type", "unknown message type"},
    {Errc::kInvalidName, "invalid_name", "invalid segment name"},
    {Errc::kInvalidArgument, "invalid_argument", "invalid argument"},
    {Errc::kNotFound, "not_found", "no such segment"},
    {Errc::kAlreadyExists, "already_exists", "segment already exists"},
    {Errc::kPermissionDenied, "permission_denied", "permission denied"},
    {Errc::kTimeout, "timeout", "timed out"},
    {Errc::kNoSpace, "no_space", "no space left for shared memory"},
    {Errc::kLimitSegments, "limit_segments", "segment count limit reached"},
    {Errc::kLimitBytes, "limit_bytes", "total byte limit reached"},
    {Errc::kLimitSegmentSize, "limit_segment_size", "segment size limit exceeded"},
    {Errc::kLimitConnections, "limit_connections", "connection limit reached"},
    {Errc::kLimitLeases, "limit_leases", "lease limit per connection reached"},
    {Errc::kMessageTooLarge, "message_too_large", "message too large"},
    {Errc::kNotHeld, "not_held", "lease not held by this connection"},
    {Errc::kInternal, "internal", "internal daemon error"},
    {Errc::kDaemonUnavailable, "daemon_unavailable", "shmleased is not running"},
    {Errc::kConnectionLost, "connection_lost", "connection to shmleased lost"},
    {Errc::kShuttingDown, "shutting_down", "shmleased is shutting down"},
    {Errc::kNotHelloed, "not_helloed", "request before hello"},
    {Errc::kMapFailed, "map_failed", "mapping shared memory failed"},
    {Errc::kQuotaBytes, "quota_bytes", "per-user byte quota reached"},
    {Errc::kQuotaSegments, "quota_segments", "per-user segment quota reached"},
    {Errc::kEndOfStream, "end_of_stream", "end of stream: the channel's writer is gone"},
    {Errc::kCancelled, "cancelled", "lease request cancelled"},
};

const ErrcEntry* Find(uint32_t value) noexcept {
  for (const auto& e : kErrcTable) {
    if (static_cast<uint32_t>(e.code) == value) return &e;
  }
  return nullptr;
}

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "shmlease"; }
  std::string message(int value) const override {
    const ErrcEntry* e = Find(static_cast<uint32_t>(value));
    return e ? std::string(e->message) : "unknown shmlease error " + std::to_string(value);
  }
  std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<Errc>(value)) {
      case Errc::kNotFound:
        return std::errc::no_such_file_or_directory;
      case Errc::kAlreadyExists:
        return std::errc::file_exists;
      case Errc::kPermissionDenied:
        return std::errc::permission_denied;
      case Errc::kTimeout:
        return std::errc::timed_out;
      case Errc::kNoSpace:
        return std::errc::no_space_on_device;
      case Errc::kInvalidName:
      case Errc::kInvalidArgument:
        return std::errc::invalid_argument;
      case Errc::kCancelled:
        return std::errc::operation_canceled;
      default:
        return {value, *this};
    }
  }
};

}  // namespace

const std::error_category& ErrorCategory() noexcept {
  static const Category category;
  return category;
}

std::string_view ErrcName(Errc e) noexcept {
  const ErrcEntry* entry = Find(static_cast<uint32_t>(e));
  return entry ? entry->name : "unknown";
}

bool IsKnownErrc(uint32_t value) noexcept { return Find(value) != nullptr; }

}  // namespace shmlease
