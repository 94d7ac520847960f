#include "config.hpp"

#include <spdlog/common.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>

#include "shm_backend.hpp"
#include "shmlease/format.hpp"
#include "shmlease/protocol.hpp"
#include "shmlease/socket_path.hpp"

namespace shmlease::server {
namespace {

constexpr SettingSpec kSettingTable[] = {
    {"socket", SettingKind::kString,
     "Unix socket path (default: $SHMLEASE_SOCKET, else $XDG_RUNTIME_DIR/shmlease/shmlease.sock "
     "for non-root, else /run/shmlease/shmlease.sock)",
     &Config::socket},
    {"shm-prefix", SettingKind::kString,
     "prefix of this daemon's names in /dev/shm (default: derived from the socket path)",
     &Config::shm_prefix},
    {"socket-mode", SettingKind::kOctal, "permission bits of the socket file", nullptr,
     &Config::socket_mode},
    {"log-level", SettingKind::kLogLevel, "trace, debug, info, warn, error, critical or off",
     &Config::log_level},
    {"max-segments", SettingKind::kCount, "most segments at once", nullptr, &Config::max_segments},
    {"max-total-bytes", SettingKind::kSize,
     "most bytes in all segments (0: half the free space of /dev/shm at start)", nullptr,
     &Config::max_total_bytes},
    {"max-segment-size", SettingKind::kSize, "largest segment (0: max-total-bytes)", nullptr,
     &Config::max_segment_size},
    {"max-connections", SettingKind::kCount, "most client connections at once", nullptr,
     &Config::max_connections},
    {"max-leases-per-connection", SettingKind::kCount, "most leases one connection may hold",
     nullptr, &Config::max_leases_per_connection},
    {"max-message-size", SettingKind::kSize, "largest request body accepted", nullptr,
     &Config::max_message_size},
    {"max-pending-reply-bytes", SettingKind::kSize,
     "replies queued for a client that does not read before it is disconnected", nullptr,
     &Config::max_pending_reply_bytes},
    {"huge-threshold", SettingKind::kSize,
     "segments of at least this size get huge pages by default, best effort (falling back to "
     "normal pages); 0: only when a client asks",
     nullptr, &Config::huge_threshold},
    {"huge-dir", SettingKind::kString,
     "a directory on hugetlbfs or on a tmpfs mounted with huge=always, used for huge-page "
     "segments when a MFD_HUGETLB memfd cannot be had (\"\": none)",
     &Config::huge_dir},
};

bool ParseCount(const std::string& value, uint64_t& out) {
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  return ec == std::errc() && end == value.data() + value.size() && !value.empty();
}

}  // namespace

std::span<const SettingSpec> Settings() { return kSettingTable; }

bool ApplySetting(const SettingSpec& spec, const std::string& value, Config& config,
                  std::string& error) {
  switch (spec.kind) {
    case SettingKind::kString:
      config.*spec.text = value;
      return true;
    case SettingKind::kLogLevel:
      if (spdlog::level::from_str(value) == spdlog::level::off && value != "off") {
        error = "unknown log level '" + value + "'";
        return false;
      }
      config.*spec.text = value;
      return true;
    case SettingKind::kSize: {
      auto size = ParseSize(value);
      if (!size) {
        error = "'" + value + "' is not a size (e.g. 4096, 64MiB, 2GiB)";
        return false;
      }
      config.*spec.number = *size;
      return true;
    }
    case SettingKind::kCount:
      if (!ParseCount(value, config.*spec.number)) {
        error = "'" + value + "' is not a whole number";
        return false;
      }
      return true;
    case SettingKind::kOctal: {
      uint64_t mode = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), mode, 8);
      if (ec != std::errc() || end != value.data() + value.size() || mode > 0777) {
        error = "'" + value + "' is not an octal mode such as 0660";
        return false;
      }
      config.*spec.number = mode;
      return true;
    }
  }
  return false;
}

std::string ShowSetting(const SettingSpec& spec, const Config& config) {
  switch (spec.kind) {
    case SettingKind::kString:
    case SettingKind::kLogLevel:
      return config.*spec.text;
    case SettingKind::kOctal: {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "0%03o", static_cast<unsigned>(config.*spec.number));
      return buf;
    }
    case SettingKind::kSize:
    case SettingKind::kCount:
      return std::to_string(config.*spec.number);
  }
  return {};
}

void AddFlags(CLI::App& app, Config& config) {
  for (const SettingSpec& spec : Settings()) {
    std::string flag = std::string("--") + spec.name;
    app.add_option_function<std::string>(
           flag,
           [&config, &spec](const std::string& value) {
             std::string error;
             if (!ApplySetting(spec, value, config, error)) {
               throw CLI::ValidationError(std::string("--") + spec.name, error);
             }
           },
           spec.help)
        ->default_str(ShowSetting(spec, config))
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
}

bool Finalize(Config& config, std::string& error) {
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
    config.max_total_bytes = static_cast<uint64_t>(static_cast<double>(ShmFreeBytes()) * kTotalBytesFraction);
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
  return true;
}

}  // namespace shmlease::server
