// Error codes shared by the wire protocol, the C++ client and the Python module.
//
// Every code is numbered explicitly and a number is never reused: a retired code keeps its number
// and its slot below. Codes travel on the wire as uint32 in Error replies (docs/PROTOCOL.md).
// Everything else about a code (name, message, condition, errno, Python class, CLI exit status)
// is its one row in common/src/errc.cpp.
#pragma once

#include <cstdint>
#include <string_view>
#include <system_error>

namespace shmlease {

enum class Errc : uint32_t {
  kOk = 0,
  kBadMessage = 1,          // malformed bytes, bad header, body that does not decode
  kVersionMismatch = 2,     // hello with a protocol version this peer does not speak
  kUnknownType = 3,         // a message type this peer does not know
  kInvalidName = 4,         // segment name outside [A-Za-z0-9][A-Za-z0-9._-]{0,127}
  kInvalidArgument = 5,     // bad size, format, shape, mode, timeout
  kNotFound = 6,            // no segment of that name
  kAlreadyExists = 7,       // create of a name that exists
  kPermissionDenied = 8,    // access refused
  kTimeout = 9,             // a lease wait ran out
  kNoSpace = 10,            // /dev/shm (or the backing store) cannot hold the segment
  kLimitSegments = 11,      // max segments reached
  kLimitBytes = 12,         // max total bytes reached
  kLimitSegmentSize = 13,   // segment larger than max segment size
  kLimitConnections = 14,   // max connections reached
  kLimitLeases = 15,        // max leases per connection reached
  kMessageTooLarge = 16,    // a length field above max message size
  kNotHeld = 17,            // release of a lease this connection does not hold
  kInternal = 18,           // a daemon-side failure that is not the client's fault
  kDaemonUnavailable = 19,  // client side: nobody answers on the socket
  kConnectionLost = 20,     // client side: the daemon closed the connection
  kShuttingDown = 21,       // the daemon is stopping
  kNotHelloed = 22,         // a request before the hello exchange
  kMapFailed = 23,          // client side: mmap of a passed descriptor failed
  kQuotaBytes = 24,         // the owner's per-uid byte quota is reached
  kQuotaSegments = 25,      // the owner's per-uid segment quota is reached
  kEndOfStream = 26,        // client side: a channel's writer has closed or died
  kCancelled = 27,          // a lease request withdrawn by its caller (Cancel, interrupted())
  kEvicted = 28,            // a channel reader removed by its writer (reader timeout, bad state)
};

// The category under which Errc values appear in std::error_code and shmlease::Error.
const std::error_category& ErrorCategory() noexcept;

inline std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), ErrorCategory()};
}

// A short stable identifier ("not_found"), used by the CLI's --json output and the logs.
std::string_view ErrcName(Errc e) noexcept;

// True when `value` is a code this build knows.
bool IsKnownErrc(uint32_t value) noexcept;

}  // namespace shmlease

template <>
struct std::is_error_code_enum<shmlease::Errc> : std::true_type {};
