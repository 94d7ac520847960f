#include "commands.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "exit_policy.hpp"
#include "output.hpp"
#include "render.hpp"
#include "shmlease/channel.hpp"
#include "shmlease/client.hpp"
#include "shmlease/errc.hpp"
#include "shmlease/fd_io.hpp"
#include "shmlease/format.hpp"
#include "table.hpp"

namespace shmlease::cli {
namespace {

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
      throw CliError(ExitStatus::kError, "io",
                     fmt::format("reading stdin: {}", std::strerror(errno)));
    }
    data.resize(at + static_cast<size_t>(n));
    if (n == 0 || data.size() > limit) return data;
  }
}

[[noreturn]] void InputTooLarge(const std::string& name, uint64_t segment_size,
                                const std::string& got) {
  throw CliError(ExitStatus::kNoSpace, "input_too_large",
                 fmt::format("input is longer than segment '{}' ({} bytes{}): nothing written",
                             name, segment_size, got));
}

}  // namespace

void Ping(const Options& o) {
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
}

namespace {

std::string PolicyText(ChannelPolicy p) { return p == ChannelPolicy::kLatest ? "latest" : "block"; }

Json ChannelJson(const ChannelInfo& c) {
  Json shape = Json::array();
  for (uint64_t d : c.shape) shape.push_back(d);
  return {{"name", c.name},
          {"format", c.format},
          {"shape", shape},
          {"variable", c.variable},
          {"frame_bytes", c.frame_bytes},
          {"slots", c.slots},
          {"policy", PolicyText(c.policy)},
          {"reader_timeout_ms", c.reader_timeout.count()},
          {"bytes", c.bytes},
          {"writer_pid", c.writer_pid},
          {"readers", c.readers},
          {"holders", c.holders},
          {"owner_uid", c.owner_uid},
          {"owner_gid", c.owner_gid},
          {"mode", fmt::format("{:04o}", c.mode)},
          {"created_unix_ns", c.created_unix_ns}};
}

std::string FramesText(const ChannelInfo& c) {
  return c.variable ? "up to " + FormatSize(c.frame_bytes)
                    : c.format + " " + ShapeText(c.shape) + " (" + FormatSize(c.frame_bytes) + ")";
}

// Whether a name the daemon says is no segment is a channel's (its message says so).
bool IsChannelName(const Error& e) {
  return e.errc() == Errc::kNotFound && std::string(e.what()).find("is a channel)") != std::string::npos;
}

void StatChannel(const Options& o, Client& client) {
  ChannelInfo c = Channel::Stat(client, o.name);
  if (o.json) {
    Json j = ChannelJson(c);
    j["kind"] = "channel";
    PrintOut(Dump(j) + "\n");
    return;
  }
  std::vector<std::pair<std::string, std::string>> lines = {
      {"channel", c.name},
      {"frames", FramesText(c)},
      {"slots", std::to_string(c.slots)},
      {"policy", PolicyText(c.policy) +
                     (c.reader_timeout.count() > 0
                          ? fmt::format(" (readers evicted after {} ms)", c.reader_timeout.count())
                          : "")},
      {"memory", fmt::format("{} ({} bytes)", FormatSize(c.bytes), c.bytes)},
      {"writer", c.writer_pid != 0 ? fmt::format("pid {}", c.writer_pid) : "none"},
      {"readers", std::to_string(c.readers)},
      {"holders", std::to_string(c.holders)},
      {"created", TimeText(c.created_unix_ns, true)},
      {"owner", fmt::format("uid {}, gid {}", c.owner_uid, c.owner_gid)},
      {"mode", fmt::format("{:04o}", c.mode)},
  };
  Table table({{Align::kLeft, 11}, {Align::kLeft}}, {});
  for (const auto& [key, value] : lines) table.AddRow({key + ":", value});
  PrintOut(table.Render());
}

}  // namespace

void List(const Options& o) {
  Client client(o.socket);
  std::vector<SegmentInfo> segments = client.List();
  std::sort(segments.begin(), segments.end(),
            [](const SegmentInfo& a, const SegmentInfo& b) { return a.name < b.name; });
  std::vector<ChannelInfo> channels = Channel::List(client);
  std::sort(channels.begin(), channels.end(),
            [](const ChannelInfo& a, const ChannelInfo& b) { return a.name < b.name; });
  if (o.json) {
    Json list = Json::array();
    for (const auto& s : segments) list.push_back(InfoJson(s));
    Json chans = Json::array();
    for (const auto& c : channels) chans.push_back(ChannelJson(c));
    PrintOut(Dump({{"segments", list}, {"channels", chans}}) + "\n");
    return;
  }
  // Numbers right-aligned, text left-aligned; the last column is not padded.
  constexpr Column kText{Align::kLeft}, kNumber{Align::kRight};
  Table table({kText, kNumber, kText, kText, kNumber, kNumber, kText},
              {.separator = "  ", .fit = true});
  table.AddRow({"NAME", "SIZE", "FORMAT", "SHAPE", "READERS", "WRITERS", "FLAGS"});
  for (const auto& s : segments) {
    table.AddRow({s.name, FormatSize(s.size), s.format.empty() ? "-" : s.format, ShapeText(s.shape),
                  std::to_string(s.readers), std::to_string(s.writers), FlagsText(s)});
  }
  PrintOut(table.Render());
  if (channels.empty()) return;
  Table chans({kText, kText, kNumber, kText, kNumber, kNumber}, {.separator = "  ", .fit = true});
  chans.AddRow({"CHANNEL", "FRAMES", "SLOTS", "POLICY", "WRITER", "READERS"});
  for (const auto& c : channels) {
    chans.AddRow({c.name, FramesText(c), std::to_string(c.slots), PolicyText(c.policy),
                  c.writer_pid != 0 ? std::to_string(c.writer_pid) : "-",
                  std::to_string(c.readers)});
  }
  PrintOut("\n" + chans.Render());
}

void StatCommand(const Options& o) {
  CheckName(o.name);
  Client client(o.socket);
  SegmentInfo s;
  try {
    s = client.Stat(o.name);
  } catch (const Error& e) {
    if (!IsChannelName(e)) throw;
    StatChannel(o, client);
    return;
  }
  if (o.json) {
    PrintOut(Dump(InfoJson(s)) + "\n");
    return;
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
  // "key:" in 11 columns, then the value.
  Table table({{Align::kLeft, 11}, {Align::kLeft}}, {});
  for (const auto& [key, value] : lines) table.AddRow({key + ":", value});
  PrintOut(table.Render());
}

void CreateCommand(const Options& o) {
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
      if (ReservedBytes(s) != s.size)
        pages += fmt::format(" ({} reserved)", FormatSize(ReservedBytes(s)));
    }
    PrintOut(
        fmt::format("{}: {} ({} bytes){}{}\n", s.name, FormatSize(s.size), s.size, typed, pages));
    if (s.huge_fallback != 0) {
      std::fprintf(stderr,
                   "shmlease: note: no huge pages available; '%s' uses normal %s pages (best "
                   "effort). shmleased's log says why.\n",
                   s.name.c_str(), FormatSize(s.page_size).c_str());
    }
  }
}

void RemoveCommand(const Options& o) {
  CheckName(o.name);
  Client client(o.socket);
  try {
    client.Remove(o.name);
  } catch (const Error& e) {
    if (!IsChannelName(e)) throw;
    Channel::Remove(client, o.name);  // a channel goes when its participants leave
  }
  if (o.json) PrintOut(Dump({{"removed", o.name}}) + "\n");
}

void CatCommand(const Options& o) {
  CheckName(o.name);
  Client client(o.socket);
  Lease lease = client.Acquire(o.name, Mode::kRead, LeaseOptionsOf(o));
  std::span<const std::byte> bytes = lease.data();
  if (!shmlease::WriteAll(STDOUT_FILENO, bytes.data(), bytes.size())) {
    // A reader that stopped early (`shmlease cat x | head -c 10`) is not an error.
    if (errno == EPIPE) return;
    throw CliError(ExitStatus::kError, "io",
                   fmt::format("writing to stdout: {}", std::strerror(errno)));
  }
  lease.Release();
}

void PutCommand(const Options& o) {
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
}

void ChmodCommand(const Options& o) {
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
}

void StatsCommand(const Options& o) {
  Client client(o.socket);
  DaemonStats st = client.Stats();
  PrintOut(o.json ? Dump(StatsJson(st)) + "\n" : StatsText(st));
}

void TopCommand(const Options& o) {
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
    Table table({{Align::kLeft, 24},
                 {Align::kRight, 10},
                 {Align::kRight, 6},
                 {Align::kRight, 7},
                 {Align::kRight, 7},
                 {Align::kRight, 5}},
                {.separator = " ", .pad_last = true});
    table.AddRow({"SEGMENT", "SIZE", "MODE", "READERS", "WRITERS", "WAIT"});
    for (const auto& seg : segments) {
      table.AddRow({seg.name, FormatSize(seg.size), fmt::format("{:04o}", seg.mode),
                    std::to_string(seg.readers), std::to_string(seg.writers),
                    std::to_string(seg.waiting)});
    }
    frame += table.Render();
    // Home and clear-to-end on a terminal; a plain separator when piped.
    PrintOut(tty ? "\x1b[H\x1b[2J" + frame : frame + "---\n");
    std::fflush(stdout);
  }
}

void MetricsCommand(const Options& o) {
  Client client(o.socket);
  DaemonStats st = client.Stats();
  std::vector<SegmentInfo> segments = client.List();
  std::string out;
  auto gauge = [&](const char* name, const char* help, auto value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, help, name, name, value);
  };
  gauge("shmlease_segments", "Segments held by the daemon, removed-but-leased included.",
        st.segments);
  gauge("shmlease_bytes", "Bytes in all segments.", st.bytes);
  gauge("shmlease_max_bytes", "The daemon's total byte limit.", st.max_bytes);
  gauge("shmlease_leases", "Leases held.", st.leases);
  gauge("shmlease_connections", "Client connections.", st.connections);
  gauge("shmlease_uptime_seconds", "Seconds since the daemon started.", st.uptime_ms / 1000.0);
  auto label = [](const std::string& name) {
    return name;
  };  // names are [A-Za-z0-9._-]: no escaping
  out += "# HELP shmlease_segment_bytes Size of a segment.\n# TYPE shmlease_segment_bytes gauge\n";
  for (const auto& seg : segments) {
    out += fmt::format("shmlease_segment_bytes{{segment=\"{}\"}} {}\n", label(seg.name), seg.size);
  }
  out +=
      "# HELP shmlease_segment_leases Leases held on a segment.\n"
      "# TYPE shmlease_segment_leases gauge\n";
  for (const auto& seg : segments) {
    out += fmt::format("shmlease_segment_leases{{segment=\"{}\",mode=\"read\"}} {}\n", seg.name,
                       seg.readers);
    out += fmt::format("shmlease_segment_leases{{segment=\"{}\",mode=\"write\"}} {}\n", seg.name,
                       seg.writers);
  }
  out +=
      "# HELP shmlease_segment_waiting Lease requests queued on a segment.\n"
      "# TYPE shmlease_segment_waiting gauge\n";
  for (const auto& seg : segments) {
    out += fmt::format("shmlease_segment_waiting{{segment=\"{}\"}} {}\n", seg.name, seg.waiting);
  }
  PrintOut(out);
}

}  // namespace shmlease::cli
