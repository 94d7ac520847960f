// shmlease: the command line for shmleased, built on libshmlease.
//
// Every command connects once, does one thing and exits. Every failure ends in Run()'s catch
// blocks, which pick the exit status from the error: scripts rely on those numbers (ExitCode,
// shown in --help and docs/CLI.md), so a number keeps its meaning once published.
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <thread>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "shmlease/client.hpp"
#include "shmlease/errc.hpp"
#include "shmlease/format.hpp"

namespace shmlease::cli {
namespace {

using Json = nlohmann::json;

// Exit statuses. Published in --help and docs/CLI.md: never renumber.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,       // anything not listed below
  kExitUsage = 2,       // the command line itself is wrong (CLI11's parse errors)
  kExitNotFound = 3,    // no segment of that name
  kExitExists = 4,      // a segment of that name exists already
  kExitPermission = 5,  // permission denied
  kExitTimeout = 6,     // a lease was not granted in time
  kExitDaemon = 7,      // shmleased not running, connection lost, or shutting down
  kExitNoSpace = 8,     // no space, a daemon limit reached, or input larger than the segment
  kExitInvalid = 9,     // invalid segment name, size, shape, format or other argument
};

constexpr const char* kFooter = R"(Exit status:
  0  success
  1  other error
  2  usage error (bad command line)
  3  segment not found
  4  segment already exists
  5  permission denied
  6  timeout waiting for a lease (or the wait was cancelled)
  7  shmleased not running, or connection lost
  8  no space, a daemon limit or quota reached, or input larger than the segment
  9  invalid name or argument
With --json, results are JSON on stdout, and errors are also a JSON object on stdout:
  {"error": "<name>", "code": <exit status>, "errc": <shmlease error number>, "message": "..."}
The socket is --socket, else $SHMLEASE_SOCKET, else $XDG_RUNTIME_DIR/shmlease/shmlease.sock
(non-root), else /run/shmlease/shmlease.sock.)";

// A failure found by the CLI itself rather than reported by the library.
class CliError : public std::runtime_error {
 public:
  CliError(int exit_code, std::string name, const std::string& message)
      : std::runtime_error(message), exit_code_(exit_code), name_(std::move(name)) {}
  int exit_code() const { return exit_code_; }
  const std::string& name() const { return name_; }

 private:
  int exit_code_;
  std::string name_;
};

CliError Usage(const std::string& message) { return {kExitUsage, "usage", message}; }

int ExitCodeFor(Errc code) {
  switch (code) {
    case Errc::kOk:
      return kExitOk;
    case Errc::kNotFound:
      return kExitNotFound;
    case Errc::kAlreadyExists:
      return kExitExists;
    case Errc::kPermissionDenied:
      return kExitPermission;
    case Errc::kTimeout:
    case Errc::kCancelled:  // the lease was not granted: its wait was withdrawn
      return kExitTimeout;
    case Errc::kDaemonUnavailable:
    case Errc::kConnectionLost:
    case Errc::kShuttingDown:
      return kExitDaemon;
    case Errc::kNoSpace:
    case Errc::kLimitSegments:
    case Errc::kLimitBytes:
    case Errc::kLimitSegmentSize:
    case Errc::kLimitConnections:
    case Errc::kLimitLeases:
    case Errc::kMessageTooLarge:
    case Errc::kQuotaBytes:
    case Errc::kQuotaSegments:
      return kExitNoSpace;
    case Errc::kInvalidName:
    case Errc::kInvalidArgument:
      return kExitInvalid;
    default:
      return kExitError;
  }
}

std::string VersionText() {
#ifdef SHMLEASE_VERSION
  return fmt::format("shmlease {} (protocol {})", SHMLEASE_VERSION, kProtocolVersion);
#else
  return fmt::format("shmlease (protocol {})", kProtocolVersion);
#endif
}

// Names and messages may carry bytes a user typed that are not UTF-8: replace, never throw.
std::string Dump(const Json& j) { return j.dump(2, ' ', false, Json::error_handler_t::replace); }

// Writes all of `bytes` to `fd`. Returns false with errno set on failure.
bool WriteAll(int fd, const void* bytes, size_t size) {
  const auto* p = static_cast<const char*>(bytes);
  while (size > 0) {
    ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void PrintOut(const std::string& text) { std::fwrite(text.data(), 1, text.size(), stdout); }
void PrintErr(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

std::string ShapeText(const std::vector<uint64_t>& shape) {
  if (shape.empty()) return "-";
  std::string out;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += 'x';
    out += std::to_string(shape[i]);
  }
  return out;
}

// True when the segment is backed by pages larger than this system's normal page.
bool IsHuge(const SegmentInfo& info) {
  return info.page_size > static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::string FlagsText(const SegmentInfo& info) {
  std::vector<std::string> flags;
  if (info.exclusive != 0) flags.emplace_back("exclusive");
  if (info.removed != 0) flags.emplace_back("removed");
  if (info.waiting != 0) flags.push_back(fmt::format("waiting={}", info.waiting));
  if (IsHuge(info)) flags.push_back("huge=" + FormatSize(info.page_size));
  if (info.huge_fallback != 0) flags.emplace_back("huge-fallback");
  if (flags.empty()) return "-";
  std::string out;
  for (const auto& f : flags) out += (out.empty() ? "" : ",") + f;
  return out;
}

// "2024-06-01T12:00:00.123456789Z"; `local` gives local time with its UTC offset instead.
std::string TimeText(int64_t unix_ns, bool local) {
  int64_t seconds = unix_ns / 1000000000;
  int64_t nanos = unix_ns % 1000000000;
  if (nanos < 0) {
    nanos += 1000000000;
    seconds -= 1;
  }
  std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if ((local ? localtime_r(&t, &tm) : gmtime_r(&t, &tm)) == nullptr) {
    return std::to_string(unix_ns) + " ns";
  }
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!local) return fmt::format("{}.{:09}Z", date, nanos);
  char zone[16];
  std::strftime(zone, sizeof(zone), "%z", &tm);
  return fmt::format("{}.{:03} {}", date, nanos / 1000000, zone);
}

Json InfoJson(const SegmentInfo& info) {
  return Json{
      {"id", info.id},
      {"name", info.name},
      {"size", info.size},
      {"format", info.format},
      {"shape", info.shape},
      {"created_unix_ns", info.created_unix_ns},
      {"created", TimeText(info.created_unix_ns, false)},
      {"creator_pid", info.creator_pid},
      {"creator_uid", info.creator_uid},
      {"readers", info.readers},
      {"writers", info.writers},
      {"exclusive", info.exclusive != 0},
      {"waiting", info.waiting},
      {"removed", info.removed != 0},
      {"page_size", info.page_size},
      {"huge_fallback", info.huge_fallback != 0},
      {"owner_uid", info.owner_uid},
      {"owner_gid", info.owner_gid},
      {"mode", fmt::format("{:04o}", info.mode)},
      {"reserved_bytes", ReservedBytes(info)},
  };
}

struct Options {
  std::string socket;
  bool json = false;
  std::string name;
  std::string size;   // create: as typed, parsed with ParseSize
  std::string shape;  // create: as typed, parsed with ParseShape
  std::string dtype;
  bool exist_ok = false;
  std::string huge;  // create: "" (the daemon's default), yes, best-effort or no
  bool exclusive = false;
  int64_t timeout_ms = -1;
  std::string mode;        // create, chmod: octal permission bits as typed
  double interval_s = 1;   // top
  int64_t count = -1;      // top: refreshes before exiting; -1 = until interrupted
};

uint32_t ParseMode(const std::string& text) {
  uint32_t mode = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), mode, 8);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || mode > 0777) {
    throw Error(Errc::kInvalidArgument,
                fmt::format("invalid mode '{}': octal permission bits such as 0600 or 0640", text));
  }
  return mode;
}

void CheckName(const std::string& name) {
  if (!IsValidName(name)) {
    throw Error(Errc::kInvalidName,
                fmt::format("invalid segment name '{}': 1 to {} characters of A-Z a-z 0-9 . _ -, "
                            "starting with a letter or digit",
                            name, kMaxNameLength));
  }
}

LeaseOptions LeaseOptionsOf(const Options& o) {
  if (o.timeout_ms < -1) {
    throw Error(
        Errc::kInvalidArgument,
        fmt::format("invalid --timeout {}: milliseconds, or -1 to wait forever", o.timeout_ms));
  }
  return {.exclusive = o.exclusive, .timeout = std::chrono::milliseconds(o.timeout_ms)};
}

// --- Commands ----------------------------------------------------------------------------------

int Ping(const Options& o) {
  Client client(o.socket);
  auto start = std::chrono::steady_clock::now();
  client.Ping();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  if (o.json) {
    PrintOut(Dump({{"ok", true},
                   {"socket", client.socket_path()},
                   {"server_pid", client.server_pid()},
                   {"round_trip_us", us}}) +
             "\n");
  } else {
    PrintOut(fmt::format("pong from shmleased (pid {}) on {} in {} us\n", client.server_pid(),
                         client.socket_path(), us));
  }
  return kExitOk;
}

int List(const Options& o) {
  Client client(o.socket);
  std::vector<SegmentInfo> segments = client.List();
  std::sort(segments.begin(), segments.end(),
            [](const SegmentInfo& a, const SegmentInfo& b) { return a.name < b.name; });
  if (o.json) {
    Json list = Json::array();
    for (const auto& s : segments) list.push_back(InfoJson(s));
    PrintOut(Dump({{"segments", list}}) + "\n");
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"NAME", "SIZE", "FORMAT", "SHAPE", "READERS", "WRITERS", "FLAGS"});
  for (const auto& s : segments) {
    rows.push_back({s.name, FormatSize(s.size), s.format.empty() ? "-" : s.format,
                    ShapeText(s.shape), std::to_string(s.readers), std::to_string(s.writers),
                    FlagsText(s)});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  // Numbers right-aligned, text left-aligned; the last column is not padded.
  const bool right[] = {false, true, false, false, true, true, false};
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += "  ";
      if (i + 1 == row.size()) {
        line += row[i];
      } else if (right[i]) {
        line += fmt::format("{:>{}}", row[i], width[i]);
      } else {
        line += fmt::format("{:<{}}", row[i], width[i]);
      }
    }
    out += line + "\n";
  }
  PrintOut(out);
  return kExitOk;
}

int StatCommand(const Options& o) {
  CheckName(o.name);
  Client client(o.socket);
  SegmentInfo s = client.Stat(o.name);
  if (o.json) {
    PrintOut(Dump(InfoJson(s)) + "\n");
    return kExitOk;
  }
  std::vector<std::pair<std::string, std::string>> lines = {
      {"name", s.name},
      {"id", std::to_string(s.id)},
      {"size", fmt::format("{} ({} bytes)", FormatSize(s.size), s.size)},
      {"format", s.format.empty() ? "- (raw bytes)" : s.format},
      {"shape", ShapeText(s.shape)},
      {"created", TimeText(s.created_unix_ns, true)},
      {"creator", fmt::format("pid {}, uid {}", s.creator_pid, s.creator_uid)},
      {"readers", std::to_string(s.readers)},
      {"writers", std::to_string(s.writers)},
      {"exclusive", s.exclusive != 0 ? "yes" : "no"},
      {"waiting", std::to_string(s.waiting)},
      {"removed", s.removed != 0 ? "yes" : "no"},
      {"page size", FormatSize(s.page_size) + (IsHuge(s) ? " (huge pages)" : "")},
      {"owner", fmt::format("uid {}, gid {}", s.owner_uid, s.owner_gid)},
      {"mode", fmt::format("{:04o}", s.mode)},
  };
  if (ReservedBytes(s) != s.size) {
    lines.push_back({"reserved", fmt::format("{} ({} bytes, whole pages)",
                                             FormatSize(ReservedBytes(s)), ReservedBytes(s))});
  }
  if (s.huge_fallback != 0) {
    lines.push_back({"fallback", "huge pages asked for (best effort), none available"});
  }
  std::string out;
  for (const auto& [key, value] : lines) {
    out += fmt::format("{:<11}{}\n", key + ":", value);
  }
  PrintOut(out);
  return kExitOk;
}

int CreateCommand(const Options& o) {
  CheckName(o.name);
  CreateOptions create;
  create.exist_ok = o.exist_ok;
  if (!o.mode.empty()) create.mode = ParseMode(o.mode);
  if (o.huge == "yes") {
    create.huge = HugePages::kYes;
  } else if (o.huge == "best-effort") {
    create.huge = HugePages::kBestEffort;
  } else if (o.huge == "no") {
    create.huge = HugePages::kNo;
  } else if (!o.huge.empty()) {
    throw Error(Errc::kInvalidArgument,
                fmt::format("invalid --huge={}: yes, best-effort or no", o.huge));
  }
  if (o.size.empty() && o.shape.empty()) {
    throw Usage("create needs a SIZE (like 64MiB), or --shape (with --dtype)");
  }
  if (!o.size.empty()) {
    std::optional<uint64_t> size = ParseSize(o.size);
    if (!size || *size == 0) {
      throw Error(Errc::kInvalidArgument,
                  fmt::format("invalid size '{}': a positive byte count like 4096, 64MiB, 1.5GiB "
                              "or 10MB",
                              o.size));
    }
    create.size = *size;
  }
  if (!o.dtype.empty()) {
    std::optional<std::string> format = FormatFromTypeName(o.dtype);
    if (!format) {
      throw Error(Errc::kInvalidArgument,
                  fmt::format("invalid --dtype '{}': a numpy name (int8 .. uint64, float16, "
                              "float32, float64, bool), its code (i1 .. u8, f2, f4, f8, b1) or "
                              "one struct format of b B h H i I l L q Q e f d ?",
                              o.dtype));
    }
    create.format = *format;
  }
  if (!o.shape.empty()) {
    std::optional<std::vector<uint64_t>> shape = ParseShape(o.shape);
    if (!shape) {
      throw Error(Errc::kInvalidArgument,
                  fmt::format("invalid --shape '{}': up to {} dimensions like 1080,1920,3", o.shape,
                              kMaxDims));
    }
    std::optional<uint64_t> bytes = ShapeBytes(*shape, *FormatItemSize(create.format));
    if (!bytes) {
      throw Error(
          Errc::kInvalidArgument,
          fmt::format("invalid --shape '{}': a dimension is zero or the size overflows", o.shape));
    }
    if (create.size != 0 && create.size != *bytes) {
      throw Error(
          Errc::kInvalidArgument,
          fmt::format("size {} does not match --shape {} of '{}' items ({} bytes)", create.size,
                      o.shape, create.format.empty() ? "B" : create.format, *bytes));
    }
    create.shape = *shape;
  }
  Client client(o.socket);
  SegmentInfo s = client.Create(o.name, create);
  if (o.json) {
    PrintOut(Dump(InfoJson(s)) + "\n");
  } else {
    std::string typed;
    if (!s.format.empty() || !s.shape.empty()) {
      typed = fmt::format(", format {}, shape {}", s.format.empty() ? "B" : s.format,
                          ShapeText(s.shape));
    }
    std::string pages;
    if (IsHuge(s)) {
      pages = fmt::format(", {} huge pages", FormatSize(s.page_size));
      if (ReservedBytes(s) != s.size) pages += fmt::format(" ({} reserved)", FormatSize(ReservedBytes(s)));
    }
    PrintOut(fmt::format("{}: {} ({} bytes){}{}\n", s.name, FormatSize(s.size), s.size, typed, pages));
    if (s.huge_fallback != 0) {
      std::fprintf(stderr,
                   "shmlease: note: no huge pages available; '%s' uses normal %s pages (best "
                   "effort). shmleased's log says why.\n",
                   s.name.c_str(), FormatSize(s.page_size).c_str());
    }
  }
  return kExitOk;
}

int RemoveCommand(const Options& o) {
  CheckName(o.name);
  Client client(o.socket);
  client.Remove(o.name);
  if (o.json) PrintOut(Dump({{"removed", o.name}}) + "\n");
  return kExitOk;
}

int CatCommand(const Options& o) {
  CheckName(o.name);
  Client client(o.socket);
  Lease lease = client.Acquire(o.name, Mode::kRead, LeaseOptionsOf(o));
  std::span<const std::byte> bytes = lease.data();
  if (!WriteAll(STDOUT_FILENO, bytes.data(), bytes.size())) {
    // A reader that stopped early (`shmlease cat x | head -c 10`) is not an error.
    if (errno == EPIPE) return kExitOk;
    throw CliError(kExitError, "io", fmt::format("writing to stdout: {}", std::strerror(errno)));
  }
  lease.Release();
  return kExitOk;
}

// Reads stdin until EOF, or until it holds more than `limit` bytes (then stops: the input is
// refused whole, so nothing beyond the limit is ever buffered).
std::vector<std::byte> ReadInput(uint64_t limit) {
  std::vector<std::byte> data;
  struct stat st {};
  if (::fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode)) {
    off_t at = ::lseek(STDIN_FILENO, 0, SEEK_CUR);
    if (at >= 0 && st.st_size > at) {
      data.reserve(static_cast<size_t>(std::min<uint64_t>(limit + 1, st.st_size - at)));
    }
  }
  constexpr size_t kChunk = 1 << 20;
  for (;;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, limit + 1 - data.size()));
    size_t at = data.size();
    data.resize(at + want);
    ssize_t n = ::read(STDIN_FILENO, data.data() + at, want);
    if (n < 0) {
      data.resize(at);
      if (errno == EINTR) continue;
      throw CliError(kExitError, "io", fmt::format("reading stdin: {}", std::strerror(errno)));
    }
    data.resize(at + static_cast<size_t>(n));
    if (n == 0 || data.size() > limit) return data;
  }
}

[[noreturn]] void InputTooLarge(const std::string& name, uint64_t segment_size,
                                const std::string& got) {
  throw CliError(kExitNoSpace, "input_too_large",
                 fmt::format("input is longer than segment '{}' ({} bytes{}): nothing written",
                             name, segment_size, got));
}

int PutCommand(const Options& o) {
  CheckName(o.name);
  Client client(o.socket);
  uint64_t segment_size = client.Stat(o.name).size;
  // Refuse a regular file that is too long before reading any of it.
  struct stat st {};
  if (::fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode)) {
    off_t at = ::lseek(STDIN_FILENO, 0, SEEK_CUR);
    if (at >= 0 && st.st_size > at && static_cast<uint64_t>(st.st_size - at) > segment_size) {
      InputTooLarge(o.name, segment_size, fmt::format(", input {}", st.st_size - at));
    }
  }
  // The whole input is read before the lease is taken: input too long is refused with the
  // segment untouched, and the write lease is held only for the copy.
  std::vector<std::byte> input = ReadInput(segment_size);
  if (input.size() > segment_size) InputTooLarge(o.name, segment_size, "");
  Lease lease = client.Acquire(o.name, Mode::kWrite, LeaseOptionsOf(o));
  // The name may have been removed and taken by a smaller segment since the Stat.
  if (input.size() > lease.size()) InputTooLarge(o.name, lease.size(), "");
  std::span<std::byte> target = lease.writable_data();
  if (!input.empty()) std::memcpy(target.data(), input.data(), input.size());
  uint64_t written_size = lease.size();
  lease.Release();
  if (o.json) {
    PrintOut(
        Dump({{"name", o.name}, {"bytes_written", input.size()}, {"segment_size", written_size}}) +
        "\n");
  }
  PrintErr(fmt::format("wrote {} bytes to '{}' (segment size {} bytes)\n", input.size(), o.name,
                       written_size));
  return kExitOk;
}

// --- Errors ------------------------------------------------------------------------------------

int Fail(bool json, int exit_code, std::string_view name, std::optional<uint32_t> errc,
         const std::string& message, const std::string& hint = {}) {
  std::fflush(stdout);
  PrintErr(fmt::format("shmlease: {}\n{}", message, hint));
  if (json) {
    Json j{{"error", name}, {"code", exit_code}, {"message", message}};
    if (errc) j["errc"] = *errc;
    PrintOut(Dump(j) + "\n");
    std::fflush(stdout);
  }
  return exit_code;
}

int FailWith(bool json, const Error& e) {
  Errc code = e.errc();
  std::string hint;
  if (ExitCodeFor(code) == kExitDaemon) {
    hint = "shmlease: start shmleased, or point --socket or $SHMLEASE_SOCKET at a running one\n";
  }
  return Fail(json, ExitCodeFor(code), ErrcName(code), static_cast<uint32_t>(code), e.what(),
              hint);
}

int ChmodCommand(const Options& o) {
  CheckName(o.name);
  uint32_t mode = ParseMode(o.mode);
  Client client(o.socket);
  SegmentInfo info = client.Chmod(o.name, mode);
  if (o.json) {
    PrintOut(Dump(InfoJson(info)) + "\n");
  } else {
    PrintOut(fmt::format("{} is now mode {:04o} (owner uid {}, gid {})\n", info.name, info.mode,
                         info.owner_uid, info.owner_gid));
  }
  return kExitOk;
}

Json StatsJson(const DaemonStats& st) {
  Json clients = Json::array();
  for (const auto& c : st.clients) {
    Json leases = Json::array();
    for (const auto& l : c.leases) {
      leases.push_back({{"segment", l.segment},
                        {"mode", l.mode == Mode::kWrite ? "write" : "read"},
                        {"exclusive", l.exclusive != 0}});
    }
    clients.push_back({{"connection", c.conn_id}, {"pid", c.pid}, {"uid", c.uid}, {"gid", c.gid},
                       {"process", c.process}, {"waiting", c.waiting}, {"leases", leases}});
  }
  return Json{{"segments", st.segments},   {"bytes", st.bytes},
              {"max_bytes", st.max_bytes}, {"leases", st.leases},
              {"connections", st.connections}, {"uptime_ms", st.uptime_ms},
              {"clients", clients}};
}

std::string StatsText(const DaemonStats& st) {
  std::string out = fmt::format(
      "segments: {}   bytes: {} of {}   leases: {}   connections: {}   up: {} s\n\n", st.segments,
      FormatSize(st.bytes), FormatSize(st.max_bytes), st.leases, st.connections,
      st.uptime_ms / 1000);
  out += fmt::format("{:>8} {:>6} {:>6} {:<16} {:>7} {}\n", "PID", "UID", "GID", "PROCESS", "WAITING",
                     "LEASES");
  for (const auto& c : st.clients) {
    std::string held;
    for (const auto& l : c.leases) {
      held += fmt::format("{}{}:{}{}", held.empty() ? "" : " ", l.segment,
                          l.mode == Mode::kWrite ? "w" : "r", l.exclusive ? "!" : "");
    }
    out += fmt::format("{:>8} {:>6} {:>6} {:<16} {:>7} {}\n", c.pid, c.uid, c.gid, c.process,
                       c.waiting, held.empty() ? "-" : held);
  }
  return out;
}

int StatsCommand(const Options& o) {
  Client client(o.socket);
  DaemonStats st = client.Stats();
  PrintOut(o.json ? Dump(StatsJson(st)) + "\n" : StatsText(st));
  return kExitOk;
}

// A live view: the stats and the segment table, redrawn in place on a terminal.
int TopCommand(const Options& o) {
  if (o.interval_s <= 0) throw Usage("--interval must be above 0 seconds");
  Client client(o.socket);
  bool tty = ::isatty(STDOUT_FILENO) == 1;
  for (int64_t i = 0; o.count < 0 || i < o.count; ++i) {
    if (i > 0) {
      std::this_thread::sleep_for(std::chrono::duration<double>(o.interval_s));
    }
    DaemonStats st = client.Stats();
    std::vector<SegmentInfo> segments = client.List();
    std::string frame = StatsText(st) + "\n";
    frame += fmt::format("{:<24} {:>10} {:>6} {:>7} {:>7} {:>5}\n", "SEGMENT", "SIZE", "MODE",
                         "READERS", "WRITERS", "WAIT");
    for (const auto& seg : segments) {
      frame += fmt::format("{:<24} {:>10} {:>6} {:>7} {:>7} {:>5}\n", seg.name, FormatSize(seg.size),
                           fmt::format("{:04o}", seg.mode), seg.readers, seg.writers, seg.waiting);
    }
    // Home and clear-to-end on a terminal; a plain separator when piped.
    PrintOut(tty ? "\x1b[H\x1b[2J" + frame : frame + "---\n");
    std::fflush(stdout);
  }
  return kExitOk;
}

// Prometheus text exposition format (version 0.0.4).
int MetricsCommand(const Options& o) {
  Client client(o.socket);
  DaemonStats st = client.Stats();
  std::vector<SegmentInfo> segments = client.List();
  std::string out;
  auto gauge = [&](const char* name, const char* help, auto value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, help, name, name, value);
  };
  gauge("shmlease_segments", "Segments held by the daemon, removed-but-leased included.", st.segments);
  gauge("shmlease_bytes", "Bytes in all segments.", st.bytes);
  gauge("shmlease_max_bytes", "The daemon's total byte limit.", st.max_bytes);
  gauge("shmlease_leases", "Leases held.", st.leases);
  gauge("shmlease_connections", "Client connections.", st.connections);
  gauge("shmlease_uptime_seconds", "Seconds since the daemon started.", st.uptime_ms / 1000.0);
  auto label = [](const std::string& name) { return name; };  // names are [A-Za-z0-9._-]: no escaping
  out += "# HELP shmlease_segment_bytes Size of a segment.\n# TYPE shmlease_segment_bytes gauge\n";
  for (const auto& seg : segments) {
    out += fmt::format("shmlease_segment_bytes{{segment=\"{}\"}} {}\n", label(seg.name), seg.size);
  }
  out += "# HELP shmlease_segment_leases Leases held on a segment.\n"
         "# TYPE shmlease_segment_leases gauge\n";
  for (const auto& seg : segments) {
    out += fmt::format("shmlease_segment_leases{{segment=\"{}\",mode=\"read\"}} {}\n", seg.name,
                       seg.readers);
    out += fmt::format("shmlease_segment_leases{{segment=\"{}\",mode=\"write\"}} {}\n", seg.name,
                       seg.writers);
  }
  out += "# HELP shmlease_segment_waiting Lease requests queued on a segment.\n"
         "# TYPE shmlease_segment_waiting gauge\n";
  for (const auto& seg : segments) {
    out += fmt::format("shmlease_segment_waiting{{segment=\"{}\"}} {}\n", seg.name, seg.waiting);
  }
  PrintOut(out);
  return kExitOk;
}

int Run(int argc, char** argv) {
  CLI::App app{"shmlease: create, inspect, read and write the shared-memory segments of shmleased",
               "shmlease"};
  app.footer(kFooter);
  app.set_version_flag("--version", VersionText());
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the subcommand
  // An option given twice takes its last value, as in most Unix tools (and subcommands inherit it).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  Options o;
  CLI::Option* json_flag =
      app.add_flag("--json", o.json, "Machine-readable output: JSON on stdout, errors included");
  app.add_option("--socket", o.socket, "The daemon's socket (default: see below)")
      ->type_name("PATH");

  CLI::App* ping = app.add_subcommand("ping", "Check that shmleased answers");
  CLI::App* ls = app.add_subcommand("ls", "List every segment");
  ls->alias("list");
  CLI::App* stat = app.add_subcommand("stat", "Describe one segment");
  stat->add_option("NAME", o.name, "Segment name")->required();

  CLI::App* create = app.add_subcommand(
      "create", "Create a segment: raw bytes of SIZE, or items of --dtype in --shape");
  create->add_option("NAME", o.name, "Segment name: [A-Za-z0-9][A-Za-z0-9._-]{0,127}")->required();
  create->add_option("SIZE", o.size, "Size: 4096, 64MiB, 1.5GiB (powers of 1024) or 10MB (1000)");
  create->add_option("--shape", o.shape, "Dimensions, up to 8: 1080,1920,3 or 1080x1920x3")
      ->type_name("DIMS");
  create
      ->add_option("--dtype", o.dtype,
                   "Item type: int8 .. uint64, float16/32/64, bool, their numpy codes (f4, u1, "
                   "i8, ...) or a struct format b B h H i I l L q Q e f d ? (default uint8)")
      ->type_name("FORMAT");
  create->add_flag("--exist-ok", o.exist_ok,
                   "Succeed when the segment exists already with this size, dtype and shape");
  create->add_option("--mode", o.mode, "Permission bits, octal: 4 read, 2 write for owner, group, "
                                        "others (default 0600)")
      ->type_name("MODE");

  CLI::App* chmod = app.add_subcommand("chmod", "Set a segment's permission bits (owner or admin)");
  chmod->add_option("NAME", o.name, "Segment name")->required();
  chmod->add_option("MODE", o.mode, "Octal permission bits, e.g. 0640")->required();

  CLI::App* stats = app.add_subcommand(
      "stats", "The daemon's totals and its clients: pid, uid, process, what each holds");
  CLI::App* top = app.add_subcommand("top", "A live view of stats and segments, refreshed in place");
  top->add_option("--interval", o.interval_s, "Seconds between refreshes (default 1)");
  top->add_option("--count", o.count, "Refreshes before exiting (default: until interrupted)");
  CLI::App* metrics = app.add_subcommand("metrics", "The daemon's state in Prometheus text format");

  create
      ->add_flag("--huge{yes}", o.huge,
                 "Huge pages: --huge (or --huge=yes) fails when the host has none free; "
                 "--huge=best-effort falls back to normal pages; --huge=no opts out of the "
                 "daemon's huge-threshold. Default: the daemon decides")
      ->type_name("WHEN");
  create->add_flag("--huge-best-effort{best-effort}", o.huge, "Same as --huge=best-effort");

  CLI::App* rm = app.add_subcommand("rm", "Remove a segment (its memory goes with its last lease)");
  rm->alias("remove");
  rm->add_option("NAME", o.name, "Segment name")->required();

  CLI::App* cat = app.add_subcommand("cat", "Write a segment's bytes to stdout (read lease)");
  CLI::App* put = app.add_subcommand(
      "put", "Copy stdin into the start of a segment (write lease); refuses input longer than it");
  for (CLI::App* sub : {cat, put}) {
    sub->add_option("NAME", o.name, "Segment name")->required();
    sub->add_flag("--exclusive", o.exclusive, "Take the lease exclusively");
    sub->add_option("--timeout", o.timeout_ms,
                    "Milliseconds to wait for the lease: 0 fails at once, -1 waits forever")
        ->type_name("MS");
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      return app.exit(e);  // --help, --version
    }
    return Fail(json_flag->count() > 0, kExitUsage, "usage", std::nullopt, e.what(),
                "Run 'shmlease --help' for more information.\n");
  }

  try {
    int status = kExitOk;
    if (app.got_subcommand(ping)) status = Ping(o);
    if (app.got_subcommand(ls)) status = List(o);
    if (app.got_subcommand(stat)) status = StatCommand(o);
    if (app.got_subcommand(create)) status = CreateCommand(o);
    if (app.got_subcommand(rm)) status = RemoveCommand(o);
    if (app.got_subcommand(cat)) status = CatCommand(o);
    if (app.got_subcommand(put)) status = PutCommand(o);
    if (app.got_subcommand(chmod)) status = ChmodCommand(o);
    if (app.got_subcommand(stats)) status = StatsCommand(o);
    if (app.got_subcommand(top)) status = TopCommand(o);
    if (app.got_subcommand(metrics)) status = MetricsCommand(o);
    if (std::fflush(stdout) != 0 || std::ferror(stdout) != 0) {
      if (errno == EPIPE) return status;
      return Fail(false, kExitError, "io", std::nullopt,
                  fmt::format("writing to stdout: {}", std::strerror(errno)));
    }
    return status;
  } catch (const Error& e) {
    return FailWith(o.json, e);
  } catch (const CliError& e) {
    return Fail(o.json, e.exit_code(), e.name(), std::nullopt, e.what(),
                e.exit_code() == kExitUsage ? "Run 'shmlease --help' for more information.\n" : "");
  } catch (const std::system_error& e) {
    if (e.code().category() == ErrorCategory()) {
      return FailWith(o.json, Error(static_cast<Errc>(e.code().value()), e.what()));
    }
    return Fail(o.json, kExitError, "system", std::nullopt, e.what());
  } catch (const std::bad_alloc&) {
    return Fail(o.json, kExitError, "out_of_memory", std::nullopt, "out of memory");
  } catch (const std::exception& e) {
    return Fail(o.json, kExitError, "internal", std::nullopt, e.what());
  }
}

}  // namespace
}  // namespace shmlease::cli

int main(int argc, char** argv) {
  // A closed stdout or daemon socket must be an error we report, not a silent death.
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return shmlease::cli::Run(argc, argv);
  } catch (...) {
    // Only reachable if reporting an error failed itself (e.g. out of memory while formatting).
    std::fputs("shmlease: unexpected failure\n", stderr);
    return shmlease::cli::kExitError;
  }
}
