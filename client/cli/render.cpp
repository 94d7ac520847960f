#include "render.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <ctime>

#include "shmlease/format.hpp"
#include "table.hpp"

namespace shmlease::cli {

std::string ShapeText(const std::vector<uint64_t>& shape) {
  if (shape.empty()) return "-";
  std::string out;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += 'x';
    out += std::to_string(shape[i]);
  }
  return out;
}

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

Json StatsJson(const DaemonStats& st) {
  Json clients = Json::array();
  for (const auto& c : st.clients) {
    Json leases = Json::array();
    for (const auto& l : c.leases) {
      leases.push_back({{"segment", l.segment},
                        {"mode", l.mode == Mode::kWrite ? "write" : "read"},
                        {"exclusive", l.exclusive != 0}});
    }
    clients.push_back({{"connection", c.conn_id},
                       {"pid", c.pid},
                       {"uid", c.uid},
                       {"gid", c.gid},
                       {"process", c.process},
                       {"waiting", c.waiting},
                       {"leases", leases}});
  }
  return Json{{"segments", st.segments},
              {"bytes", st.bytes},
              {"max_bytes", st.max_bytes},
              {"leases", st.leases},
              {"connections", st.connections},
              {"uptime_ms", st.uptime_ms},
              {"clients", clients}};
}

std::string StatsText(const DaemonStats& st) {
  std::string out =
      fmt::format("segments: {}   bytes: {} of {}   leases: {}   connections: {}   up: {} s\n\n",
                  st.segments, FormatSize(st.bytes), FormatSize(st.max_bytes), st.leases,
                  st.connections, st.uptime_ms / 1000);
  Table table({{Align::kRight, 8},
               {Align::kRight, 6},
               {Align::kRight, 6},
               {Align::kLeft, 16},
               {Align::kRight, 7},
               {Align::kLeft, 0}},
              {.separator = " "});
  table.AddRow({"PID", "UID", "GID", "PROCESS", "WAITING", "LEASES"});
  for (const auto& c : st.clients) {
    std::string held;
    for (const auto& l : c.leases) {
      held += fmt::format("{}{}:{}{}", held.empty() ? "" : " ", l.segment,
                          l.mode == Mode::kWrite ? "w" : "r", l.exclusive ? "!" : "");
    }
    table.AddRow({std::to_string(c.pid), std::to_string(c.uid), std::to_string(c.gid), c.process,
                  std::to_string(c.waiting), held.empty() ? "-" : held});
  }
  return out + table.Render();
}

}  // namespace shmlease::cli
