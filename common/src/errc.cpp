#include "shmlease/errc.hpp"

#include <cerrno>
#include <string>

#include "shmlease/errc_table.hpp"

namespace shmlease {
namespace {

using C = std::errc;
using X = ExitStatus;
constexpr std::errc kNone = kNoCondition;

// A row's from_errno: up to three errnos.
constexpr std::array<int, 3> Errnos(int a = 0, int b = 0, int c = 0) { return {a, b, c}; }

// Every code, once: code, name, message, condition, errno, errnos the shm backend maps to it,
// Python class, CLI exit status. Row i is code i (checked below): a code added to errc.hpp gets
// its row here, and nowhere else.
constexpr ErrcInfo kErrcTable[] = {
    {Errc::kOk, "ok", "success", kNone, 0, Errnos(), "Error", X::kOk},
    {Errc::kBadMessage, "bad_message", "malformed message", kNone, 0, Errnos(), "Error", X::kError},
    {Errc::kVersionMismatch, "version_mismatch", "protocol version mismatch", kNone, 0, Errnos(),
     "Error", X::kError},
    {Errc::kUnknownType, "unknown_type", "unknown message type", kNone, 0, Errnos(), "Error",
     X::kError},
    {Errc::kInvalidName, "invalid_name", "invalid segment name", C::invalid_argument, EINVAL,
     Errnos(), "InvalidArgumentError", X::kInvalid},
    {Errc::kInvalidArgument, "invalid_argument", "invalid argument", C::invalid_argument, EINVAL,
     Errnos(), "InvalidArgumentError", X::kInvalid},
    {Errc::kNotFound, "not_found", "no such segment", C::no_such_file_or_directory, ENOENT,
     Errnos(), "NotFoundError", X::kNotFound},
    {Errc::kAlreadyExists, "already_exists", "segment already exists", C::file_exists, EEXIST,
     Errnos(EEXIST), "ExistsError", X::kExists},
    {Errc::kPermissionDenied, "permission_denied", "permission denied", C::permission_denied,
     EACCES, Errnos(EACCES, EPERM), "PermissionDeniedError", X::kPermission},
    {Errc::kTimeout, "timeout", "timed out", C::timed_out, ETIMEDOUT, Errnos(), "LeaseTimeoutError",
     X::kTimeout},
    {Errc::kNoSpace, "no_space", "no space left for shared memory", C::no_space_on_device, ENOSPC,
     Errnos(ENOSPC, ENOMEM, EFBIG), "Error", X::kNoSpace},
    {Errc::kLimitSegments, "limit_segments", "segment count limit reached", kNone, 0, Errnos(),
     "Error", X::kNoSpace},
    {Errc::kLimitBytes, "limit_bytes", "total byte limit reached", kNone, 0, Errnos(), "Error",
     X::kNoSpace},
    {Errc::kLimitSegmentSize, "limit_segment_size", "segment size limit exceeded", kNone, 0,
     Errnos(), "Error", X::kNoSpace},
    {Errc::kLimitConnections, "limit_connections", "connection limit reached", kNone, 0, Errnos(),
     "Error", X::kNoSpace},
    {Errc::kLimitLeases, "limit_leases", "lease limit per connection reached", kNone, 0, Errnos(),
     "Error", X::kNoSpace},
    {Errc::kMessageTooLarge, "message_too_large", "message too large", kNone, 0, Errnos(), "Error",
     X::kNoSpace},
    {Errc::kNotHeld, "not_held", "lease not held by this connection", kNone, 0, Errnos(), "Error",
     X::kError},
    {Errc::kInternal, "internal", "internal daemon error", kNone, 0, Errnos(), "Error", X::kError},
    {Errc::kDaemonUnavailable, "daemon_unavailable", "shmleased is not running", kNone,
     ECONNREFUSED, Errnos(), "DaemonUnavailableError", X::kDaemon},
    {Errc::kConnectionLost, "connection_lost", "connection to shmleased lost", kNone, ECONNRESET,
     Errnos(), "ConnectionLostError", X::kDaemon},
    {Errc::kShuttingDown, "shutting_down", "shmleased is shutting down", kNone, 0, Errnos(),
     "ConnectionLostError", X::kDaemon},
    {Errc::kNotHelloed, "not_helloed", "request before hello", kNone, 0, Errnos(), "Error",
     X::kError},
    {Errc::kMapFailed, "map_failed", "mapping shared memory failed", kNone, 0, Errnos(), "Error",
     X::kError},
    {Errc::kQuotaBytes, "quota_bytes", "per-user byte quota reached", kNone, 0, Errnos(), "Error",
     X::kNoSpace},
    {Errc::kQuotaSegments, "quota_segments", "per-user segment quota reached", kNone, 0, Errnos(),
     "Error", X::kNoSpace},
    {Errc::kEndOfStream, "end_of_stream", "end of stream: the channel's writer is gone", kNone, 0,
     Errnos(), "EndOfStreamError", X::kError},
    // A withdrawn lease wait: no Python builtin means it, so the base class; the CLI counts it as
    // a lease not granted in time.
    {Errc::kCancelled, "cancelled", "lease request cancelled", C::operation_canceled, ECANCELED,
     Errnos(), "Error", X::kTimeout},
    {Errc::kEvicted, "evicted", "the channel's writer removed this reader", kNone, 0, Errnos(),
     "EvictedError", X::kError},
};

constexpr bool RowsAreInNumberOrder() {
  for (size_t i = 0; i < std::size(kErrcTable); ++i) {
    if (static_cast<size_t>(kErrcTable[i].code) != i) return false;
  }
  return true;
}
static_assert(RowsAreInNumberOrder(), "kErrcTable: row i must be the code numbered i");

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "shmlease"; }
  std::string message(int value) const override {
    const ErrcInfo* e = FindErrcInfo(static_cast<uint32_t>(value));
    return e ? std::string(e->message) : "unknown shmlease error " + std::to_string(value);
  }
  std::error_condition default_error_condition(int value) const noexcept override {
    const ErrcInfo* e = FindErrcInfo(static_cast<uint32_t>(value));
    if (e == nullptr || e->condition == kNoCondition) return {value, *this};
    return e->condition;
  }
};

}  // namespace

std::span<const ErrcInfo> ErrcTable() noexcept { return kErrcTable; }

const ErrcInfo* FindErrcInfo(uint32_t value) noexcept {
  return value < std::size(kErrcTable) ? &kErrcTable[value] : nullptr;
}

Errc ErrcFromErrno(int err) noexcept {
  if (err == 0) return Errc::kInternal;
  for (const ErrcInfo& e : kErrcTable) {
    for (int from : e.from_errno) {
      if (from == err) return e.code;
    }
  }
  return Errc::kInternal;
}

ExitStatus ExitStatusFor(Errc code) noexcept {
  const ErrcInfo* e = FindErrcInfo(code);
  return e ? e->exit_status : ExitStatus::kError;
}

const std::error_category& ErrorCategory() noexcept {
  static const Category category;
  return category;
}

std::string_view ErrcName(Errc e) noexcept {
  const ErrcInfo* entry = FindErrcInfo(e);
  return entry ? entry->name : "unknown";
}

bool IsKnownErrc(uint32_t value) noexcept { return FindErrcInfo(value) != nullptr; }

}  // namespace shmlease
