// Everything shmlease says about one error code, in one row per code: the name and message of
// the public error category, the standard condition it compares equal to, the errno it stands for,
// the Python class the extension raises and the CLI's exit status. Internal: not installed; the
// category (errc.cpp), the Python module, the CLI and the daemon's shm backend all look up here.
#pragma once

#include <array>
#include <span>
#include <string_view>
#include <system_error>

#include "shmlease/errc.hpp"

namespace shmlease {

// The CLI's exit statuses. Published in `shmlease --help` and docs/CLI.md: never renumber.
enum class ExitStatus : int {
  kOk = 0,
  kError = 1,       // anything not listed below
  kUsage = 2,       // the command line itself is wrong (CLI11's parse errors)
  kNotFound = 3,    // no segment of that name
  kExists = 4,      // a segment of that name exists already
  kPermission = 5,  // permission denied
  kTimeout = 6,     // a lease was not granted in time (or its wait was withdrawn)
  kDaemon = 7,      // shmleased not running, connection lost, or shutting down
  kNoSpace = 8,     // no space, a daemon limit reached, or input larger than the segment
  kInvalid = 9,     // invalid segment name, size, shape, format or other argument
};

// A row's `condition` when the code compares equal to no std::errc (only to itself).
inline constexpr std::errc kNoCondition{};

struct ErrcInfo {
  Errc code;
  std::string_view name;     // ErrcName(): stable snake_case, used by --json and the logs
  std::string_view message;  // the category's message()
  std::errc condition;       // default_error_condition(), or kNoCondition
  int posix_errno;           // the errno the code stands for (Python's OSError.errno); 0 for none
  // System errnos that the daemon's shm backend reports as this code; 0 pads. Every other errno
  // there is kInternal.
  std::array<int, 3> from_errno;
  std::string_view python_class;  // the shmlease.* exception: "Error" is the base class
  ExitStatus exit_status;         // the CLI's exit status for this failure
};

// Every code, in the order of their numbers.
std::span<const ErrcInfo> ErrcTable() noexcept;

// The row of `value`, or nullptr for a number this build does not know.
const ErrcInfo* FindErrcInfo(uint32_t value) noexcept;
inline const ErrcInfo* FindErrcInfo(Errc code) noexcept {
  return FindErrcInfo(static_cast<uint32_t>(code));
}

// The code the shm backend reports for a failed system call's errno: kInternal unless a row
// lists it in from_errno.
Errc ErrcFromErrno(int err) noexcept;

// The CLI's exit status for `code`; kError for a number this build does not know.
ExitStatus ExitStatusFor(Errc code) noexcept;

}  // namespace shmlease
