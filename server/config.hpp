// shmleased's settings: every one declared once in kSettings (name, kind, help, target field),
// from which the command-line flags and their help are made. Defaults live in Config's members.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace CLI {
class App;
}

namespace shmlease::server {

struct Config {
  std::string socket;            // "" = ResolveSocketPath()
  std::string shm_prefix;        // "" = DefaultShmPrefix(socket)
  uint64_t socket_mode = 0660;
  std::string log_level = "info";
  uint64_t max_segments = 4096;
  uint64_t max_total_bytes = 0;   // 0 = total_bytes_fraction of /dev/shm's free space at start
  uint64_t max_segment_size = 0;  // 0 = max_total_bytes
  uint64_t max_connections = 1024;
  uint64_t max_leases_per_connection = 65536;
  uint64_t max_message_size = 65536;
  uint64_t max_pending_reply_bytes = 4 << 20;  // a client that stops reading is cut off past this
  uint64_t huge_threshold = 0;  // segments of at least this size get huge pages, best effort; 0 = off
  std::string huge_dir;         // "" = none: a hugetlbfs or huge=always tmpfs directory to use
                                // when a MFD_HUGETLB memfd cannot be had
};

// Fraction of /dev/shm's free space used as the default total byte limit.
inline constexpr double kTotalBytesFraction = 0.5;

enum class SettingKind { kString, kSize, kCount, kOctal, kLogLevel };

struct SettingSpec {
  const char* name;  // flag name without dashes, and the config key
  SettingKind kind;
  const char* help;
  std::string Config::*text = nullptr;  // for kString / kLogLevel
  uint64_t Config::*number = nullptr;   // for kSize / kCount / kOctal
};

std::span<const SettingSpec> Settings();

// Parses `value` for `spec` into `config`; false with `error` set when it does not parse.
bool ApplySetting(const SettingSpec& spec, const std::string& value, Config& config,
                  std::string& error);
// The current value of a setting, as text.
std::string ShowSetting(const SettingSpec& spec, const Config& config);

// Adds one flag per setting to `app`, writing into `config`.
void AddFlags(CLI::App& app, Config& config);

// Fills the derived defaults (socket, prefix, byte limits) and checks cross-setting rules.
bool Finalize(Config& config, std::string& error);

}  // namespace shmlease::server
