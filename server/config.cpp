#include "config.hpp"

#include <spdlog/common.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <optional>
#include <utility>
#include <toml++/toml.h>

#include "shm_backend.hpp"
#include "shmlease/format.hpp"
#include "shmlease/protocol.hpp"
#include "shmlease/socket_path.hpp"

namespace shmlease::server {
namespace {

using K = SettingKind;
constexpr Reload kLive = Reload::kLive;
constexpr Reload kRestart = Reload::kRestart;

// Every setting, once: name (flag and config key), kind, help, reload, target.
const SettingSpec kSettingTable[] = {
    {"socket", K::kString,
     "Unix socket path (default: $SHMLEASE_SOCKET, else $XDG_RUNTIME_DIR/shmlease/shmlease.sock "
     "for non-root, else /run/shmlease/shmlease.sock)",
     kRestart, &Config::socket},
    {"shm-prefix", K::kString,
     "prefix of this daemon's names in /dev/shm (default: derived from the socket path)", kRestart,
     &Config::shm_prefix},
    {"socket-mode", K::kOctal, "permission bits of the socket file", kRestart, nullptr,
     &Config::socket_mode},
    {"log-level", K::kLogLevel, "trace, debug, info, warn, error, critical or off", kLive,
     &Config::log_level},
    {"max-segments", K::kCount, "most segments and channels at once", kLive, nullptr, &Config::max_segments},
    {"max-total-bytes", K::kSize,
     "most bytes in all segments and channels (0: half the free space of /dev/shm at start)", kLive, nullptr,
     &Config::max_total_bytes},
    {"max-segment-size", K::kSize, "largest segment (0: max-total-bytes)", kLive, nullptr,
     &Config::max_segment_size},
    {"max-connections", K::kCount, "most client connections at once", kLive, nullptr,
     &Config::max_connections},
    {"max-connections-per-uid", K::kCount,
     "most connections of one uid at once; admins are exempt (0: no per-uid limit)", kLive,
     nullptr, &Config::max_connections_per_uid},
    {"max-leases-per-connection", K::kCount,
     "most leases one connection may hold, its waiting requests counted", kLive, nullptr,
     &Config::max_leases_per_connection},
    {"max-waiters-per-connection", K::kCount, "most lease requests one connection may have waiting",
     kLive, nullptr, &Config::max_waiters_per_connection},
    {"max-waiters-per-uid", K::kCount,
     "most lease requests all connections of one uid may have waiting", kLive, nullptr,
     &Config::max_waiters_per_uid},
    {"max-message-size", K::kSize, "largest request body accepted", kRestart, nullptr,
     &Config::max_message_size},
    {"max-pending-reply-bytes", K::kSize,
     "replies queued for a client that does not read before it is disconnected", kLive, nullptr,
     &Config::max_pending_reply_bytes},
    {"hello-timeout-ms", K::kCount,
     "a connection that has not sent its Hello this long after it connected is closed (0: never)",
     kLive, nullptr, &Config::hello_timeout_ms},
    {"frame-timeout-ms", K::kCount,
     "a request whose first bytes arrived this long ago but not its last is closed (0: never); an "
     "idle connection between requests is never cut",
     kLive, nullptr, &Config::frame_timeout_ms},
    {"admins", K::kUidList,
     "uids that pass every access check, comma-separated (default: root and the daemon's uid)",
     kLive, nullptr, nullptr, &Config::admins},
    {"quota-bytes", K::kSize, "per uid: most bytes in segments and channels it owns (0: no quota)", kLive,
     nullptr, &Config::quota_bytes},
    {"quota-segments", K::kCount, "per uid: most segments and channels it owns (0: no quota)", kLive, nullptr,
     &Config::quota_segments},
    {"state-dir", K::kString,
     "directory of the durable state: segments then survive a restart or crash of the daemon; "
     "it must be owned by the daemon's uid and not writable by others (docs/RESTART.md; default "
     "$STATE_DIRECTORY under systemd, else $XDG_RUNTIME_DIR/shmlease/state-<shm prefix> when "
     "that is set; none: segments are freed when the daemon stops)",
     kRestart, &Config::state_dir},
    {"reclaim-grace-ms", K::kCount,
     "after a restart, how long a removed segment waits for a client to reclaim a lease on it "
     "before it is freed",
     kLive, nullptr, &Config::reclaim_grace_ms},
    {"huge-threshold", K::kSize,
     "segments of at least this size get huge pages by default, best effort (falling back to "
     "normal pages); 0: only when a client asks",
     kLive, nullptr, &Config::huge_threshold},
    {"huge-dir", K::kString,
     "a directory on hugetlbfs or on a tmpfs mounted with huge=always, used for huge-page "
     "segments when a MFD_HUGETLB memfd cannot be had (\"\": none)",
     kRestart, &Config::huge_dir},
    {"backing", K::kString,
     "what normal-page segments are: \"sealed\" (memfds no client can resize, nothing in "
     "/dev/shm; the default) or \"named\" (POSIX shm objects in /dev/shm under random names: a "
     "write lease could then resize its segment; docs/RESTART.md)",
     kRestart, &Config::backing},
    {"keeper", K::kString,
     "\"auto\": with a state dir and no service manager (no $NOTIFY_SOCKET), shmleased first "
     "starts a keeper process that holds the segments' descriptors and restarts the daemon when "
     "it dies (docs/RESTART.md); \"no\": never",
     kRestart, &Config::keeper},
};

bool ParseCount(const std::string& value, uint64_t& out) {
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  return ec == std::errc() && end == value.data() + value.size() && !value.empty();
}

const SettingSpec* FindSetting(std::string_view name) {
  for (const SettingSpec& spec : kSettingTable) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

// A TOML integer, or a float holding a whole number in range (4096.0). Not node.value<int64_t>():
// toml++ 3.3.0 casts a float to int64_t before checking that it fits (undefined behaviour for
// 1e300; found by fuzz_config).
std::optional<int64_t> TomlInteger(const toml::node& node) {
  if (const auto* i = node.as_integer()) return i->get();
  if (const auto* f = node.as_floating_point()) {
    double d = f->get();
    if (std::isfinite(d) && std::trunc(d) == d && d >= -9223372036854775808.0 &&
        d < 9223372036854775808.0) {
      return static_cast<int64_t>(d);
    }
  }
  return std::nullopt;
}

// A TOML value as the text a flag would carry: strings as they are, integers in decimal (octal
// settings take TOML's 0o660 as that number), arrays of integers comma-separated.
bool TomlToText(const SettingSpec& spec, const toml::node& node, std::string& text) {
  if (auto s = node.value<std::string>()) {
    text = *s;
    return true;
  }
  if (auto i = TomlInteger(node)) {
    if (*i < 0) return false;
    if (spec.kind == K::kOctal) {
      char buf[24];
      std::snprintf(buf, sizeof(buf), "%llo", static_cast<unsigned long long>(*i));
      text = buf;
    } else {
      text = std::to_string(*i);
    }
    return true;
  }
  if (const toml::array* array = node.as_array(); array && spec.kind == K::kUidList) {
    text.clear();
    for (const toml::node& item : *array) {
      auto i = TomlInteger(item);
      if (!i || *i < 0) return false;
      text += (text.empty() ? "" : ",") + std::to_string(*i);
    }
    return true;
  }
  return false;
}

}  // namespace

std::span<const SettingSpec> Settings() { return kSettingTable; }

bool ApplySetting(const SettingSpec& spec, const std::string& value, Config& config,
                  std::string& error) {
  switch (spec.kind) {
    case K::kString:
      config.*spec.text = value;
      return true;
    case K::kLogLevel:
      if (spdlog::level::from_str(value) == spdlog::level::off && value != "off") {
        error = "unknown log level '" + value + "'";
        return false;
      }
      config.*spec.text = value;
      return true;
    case K::kSize: {
      auto size = ParseSize(value);
      if (!size) {
        error = "'" + value + "' is not a size (e.g. 4096, 64MiB, 2GiB)";
        return false;
      }
      config.*spec.number = *size;
      return true;
    }
    case K::kCount:
      if (!ParseCount(value, config.*spec.number)) {
        error = "'" + value + "' is not a whole number";
        return false;
      }
      return true;
    case K::kOctal: {
      uint64_t mode = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), mode, 8);
      if (ec != std::errc() || end != value.data() + value.size() || mode > 0777) {
        error = "'" + value + "' is not an octal mode such as 0660";
        return false;
      }
      config.*spec.number = mode;
      return true;
    }
    case K::kUidList: {
      std::vector<uint64_t> uids;
      size_t start = 0;
      while (start <= value.size() && !value.empty()) {
        size_t comma = value.find(',', start);
        std::string item = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        uint64_t uid = 0;
        if (!ParseCount(item, uid) || uid > 0xFFFFFFFEu) {
          error = "'" + value + "' is not a comma-separated list of uids";
          return false;
        }
        uids.push_back(uid);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      config.*spec.list = std::move(uids);
      return true;
    }
  }
  return false;
}

std::string ShowSetting(const SettingSpec& spec, const Config& config) {
  switch (spec.kind) {
    case K::kString:
    case K::kLogLevel:
      return config.*spec.text;
    case K::kOctal: {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "0%03o", static_cast<unsigned>(config.*spec.number));
      return buf;
    }
    case K::kSize:
    case K::kCount:
      return std::to_string(config.*spec.number);
    case K::kUidList: {
      std::string out;
      for (uint64_t uid : config.*spec.list) out += (out.empty() ? "" : ",") + std::to_string(uid);
      return out;
    }
  }
  return {};
}

void AddFlags(CLI::App& app, Config& config, std::map<std::string, std::string>& given) {
  for (const SettingSpec& spec : Settings()) {
    std::string flag = std::string("--") + spec.name;
    app.add_option_function<std::string>(
           flag,
           [&config, &spec, &given](const std::string& value) {
             std::string error;
             if (!ApplySetting(spec, value, config, error)) {
               throw CLI::ValidationError(std::string("--") + spec.name, error);
             }
             given[spec.name] = value;
           },
           std::string(spec.help) + (spec.reload == kLive ? " [reloads on SIGHUP]" : ""))
        ->default_str(ShowSetting(spec, config))
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
}

namespace {

// Applies a parsed TOML table; `source` names it in errors (a path, or what the text came from).
bool ApplyTable(const toml::table& table, const std::string& source,
                const std::set<std::string>& skip, Config& config, std::string& error) {
  for (const auto& [key, node] : table) {
    int line = static_cast<int>(node.source().begin.line);
    std::string where = source + ":" + std::to_string(line) + ": ";
    const SettingSpec* spec = FindSetting(key.str());
    if (spec == nullptr) {
      error = where + "unknown setting '" + std::string(key.str()) + "'";
      return false;
    }
    std::string text;
    if (!TomlToText(*spec, node, text)) {
      error = where + "'" + std::string(key.str()) + "' has a value of the wrong type";
      return false;
    }
    if (skip.count(spec->name) != 0) continue;  // the flag wins
    std::string reason;
    if (!ApplySetting(*spec, text, config, reason)) {
      error = where + std::string(key.str()) + ": " + reason;
      return false;
    }
  }
  return true;
}

}  // namespace

bool LoadConfigFile(const std::string& path, const std::set<std::string>& skip, Config& config,
                    std::string& error) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    // Also a file that cannot be opened: toml++ reports it as a parse error at line 0.
    error = path + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description());
    return false;
  }
  return ApplyTable(table, path, skip, config, error);
}

bool LoadConfigText(std::string_view text, const std::string& source,
                    const std::set<std::string>& skip, Config& config, std::string& error) {
  toml::table table;
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    error = source + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description());
    return false;
  }
  return ApplyTable(table, source, skip, config, error);
}

bool BuildConfig(const std::string& file, const std::map<std::string, std::string>& flags,
                 Config& config, std::string& error, uint64_t own_bytes) {
  config = Config{};
  std::set<std::string> given;
  for (const auto& [name, value] : flags) given.insert(name);
  if (!file.empty() && !LoadConfigFile(file, given, config, error)) return false;
  for (const auto& [name, value] : flags) {
    const SettingSpec* spec = FindSetting(name);
    std::string reason;
    if (spec == nullptr || !ApplySetting(*spec, value, config, reason)) {
      error = "--" + name + ": " + reason;
      return false;
    }
  }
  return Finalize(config, error, own_bytes);
}

bool Finalize(Config& config, std::string& error, uint64_t own_bytes) {
  config.socket = ResolveSocketPath(config.socket);
  if (config.socket.size() >= 108) {
    error = "socket path is " + std::to_string(config.socket.size()) +
            " bytes long; Unix sockets allow at most 107";
    return false;
  }
  if (config.shm_prefix.empty()) config.shm_prefix = DefaultShmPrefix(config.socket);
  if (!IsValidName(config.shm_prefix) || config.shm_prefix.size() > 64) {
    error = "shm prefix '" + config.shm_prefix + "' must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}";
    return false;
  }
  if (config.max_total_bytes == 0) {
    config.max_total_bytes =
        static_cast<uint64_t>(static_cast<double>(ShmFreeBytes() + own_bytes) * kTotalBytesFraction);
  }
  if (config.max_segment_size == 0 || config.max_segment_size > config.max_total_bytes) {
    config.max_segment_size = config.max_total_bytes;
  }
  if (config.max_message_size < 256 || config.max_message_size > proto::kClientMaxReply) {
    error = "max-message-size must be between 256 bytes and 64 MiB";
    return false;
  }
  if (config.max_connections == 0 || config.max_segments == 0 ||
      config.max_leases_per_connection == 0) {
    error = "max-connections, max-segments and max-leases-per-connection must be at least 1";
    return false;
  }
  if (config.max_waiters_per_connection == 0 || config.max_waiters_per_uid == 0) {
    error = "max-waiters-per-connection and max-waiters-per-uid must be at least 1 (a timeout of 0 "
            "already asks for a lease without waiting)";
    return false;
  }
  for (auto [name, value] : {std::pair{"reclaim-grace-ms", config.reclaim_grace_ms},
                              std::pair{"hello-timeout-ms", config.hello_timeout_ms},
                              std::pair{"frame-timeout-ms", config.frame_timeout_ms}}) {
    if (value > kLongestTimerMs) {
      error = std::string(name) + " must be at most " + std::to_string(kLongestTimerMs) +
              " (292 years, what a timer can count)";
      return false;
    }
  }
  if (config.backing != "sealed" && config.backing != "named") {
    error = "backing must be \"sealed\" or \"named\", not \"" + config.backing + "\"";
    return false;
  }
  if (config.keeper != "auto" && config.keeper != "no") {
    error = "keeper must be \"auto\" or \"no\", not \"" + config.keeper + "\"";
    return false;
  }
  if (config.admins.empty()) config.admins = {0, static_cast<uint64_t>(::geteuid())};
  if (config.state_dir.empty()) {
    config.state_dir = DefaultStateDir(config.shm_prefix);
  } else if (config.state_dir == kNoStateDir) {
    config.state_dir.clear();
  }
  return true;
}

std::string DefaultStateDir(const std::string& shm_prefix) {
  // Under systemd, StateDirectory= names it.
  if (const char* dir = std::getenv("STATE_DIRECTORY"); dir != nullptr && *dir != '\0') {
    std::string first = dir;
    return first.substr(0, first.find(':'));
  }
  // By hand: beside the default socket, in the user's runtime directory (a tmpfs like /dev/shm,
  // so the state lives exactly as long as the segments can).
  if (const char* run = std::getenv("XDG_RUNTIME_DIR"); run != nullptr && run[0] == '/') {
    return std::string(run) + "/shmlease/state-" + shm_prefix;
  }
  return "";
}

}  // namespace shmlease::server
