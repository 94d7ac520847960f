// shmleased's settings: every one declared once in kSettings (name, kind, help, target field),
// from which the command-line flags and their help are made. Defaults live in Config's members.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

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
  uint64_t max_connections_per_uid = 128;  // admins are exempt; 0 = no per-uid limit
  uint64_t max_leases_per_connection = 65536;  // held and waiting, together
  // Lease requests waiting at once. Per uid, so that many connections of one user cannot make the
  // daemon hold unbounded waits; the default lets one uid queue the 200,000 of issue 14's attack
  // (harmless since queues cost only their own work) and bounds it to ~100 MB.
  uint64_t max_waiters_per_connection = 65536;
  uint64_t max_waiters_per_uid = 262144;
  uint64_t max_message_size = 65536;
  uint64_t max_pending_reply_bytes = 4 << 20;  // a client that stops reading is cut off past this
  uint64_t hello_timeout_ms = 5000;   // a connection that has not said Hello by then is closed
  uint64_t frame_timeout_ms = 10000;  // a frame begun must be complete by then; 0 = no deadline
  std::vector<uint64_t> admins;  // uids that pass every access check; empty = root and our own uid
  uint64_t quota_bytes = 0;      // per uid, bytes in segments it owns; 0 = no quota
  uint64_t quota_segments = 0;   // per uid, segments it owns; 0 = no quota
  std::string state_dir;              // "" = DefaultStateDir(); "none" = no durable state
  uint64_t reclaim_grace_ms = 5000;   // after a restart: how long removed segments wait for holders
  uint64_t huge_threshold = 0;  // segments of at least this size get huge pages, best effort; 0 = off
  std::string huge_dir;         // "" = none: a hugetlbfs or huge=always tmpfs directory to use
                                // when a MFD_HUGETLB memfd cannot be had
  std::string backing = "sealed";  // "sealed": memfds no one can resize; "named": POSIX shm
  std::string keeper = "auto";     // "auto": keeper.hpp's rule; "no": never start a keeper
};

// The state-dir value that means no durable state: segments die with the daemon.
inline constexpr const char* kNoStateDir = "none";

// The default config file, read when it exists and no --config is given.
inline constexpr const char* kDefaultConfigFile = "/etc/shmlease/shmleased.toml";

// The longest time a steady-clock timer holds (its nanoseconds in an int64): about 292 years.
// A longer reclaim-grace-ms is refused; a longer lease timeout waits without limit.
inline constexpr int64_t kLongestTimerMs = 9223372036854;

// Fraction of /dev/shm's free space used as the default total byte limit.
inline constexpr double kTotalBytesFraction = 0.5;

enum class SettingKind { kString, kSize, kCount, kOctal, kLogLevel, kUidList };

// Whether SIGHUP applies a new value to a running daemon, or it takes a restart.
enum class Reload { kLive, kRestart };

struct SettingSpec {
  const char* name;  // flag name without dashes, and the config key
  SettingKind kind;
  const char* help;
  Reload reload;
  std::string Config::*text = nullptr;             // for kString / kLogLevel
  uint64_t Config::*number = nullptr;              // for kSize / kCount / kOctal
  std::vector<uint64_t> Config::*list = nullptr;   // for kUidList
};

std::span<const SettingSpec> Settings();

// Parses `value` for `spec` into `config`; false with `error` set when it does not parse.
bool ApplySetting(const SettingSpec& spec, const std::string& value, Config& config,
                  std::string& error);
// The current value of a setting, as text.
std::string ShowSetting(const SettingSpec& spec, const Config& config);

// Adds one flag per setting to `app`, writing into `config` and recording in `given` (by setting
// name) the values given on the command line, so that they can win over the config file.
void AddFlags(CLI::App& app, Config& config, std::map<std::string, std::string>& given);

// Reads a TOML config file whose keys are the setting names. Keys in `skip` (given as flags) are
// not applied. False with `error` naming the file, the line and the reason.
bool LoadConfigFile(const std::string& path, const std::set<std::string>& skip, Config& config,
                    std::string& error);
// The same for TOML text in memory (the config fuzzer's entry point); `source` stands for the path
// in errors.
bool LoadConfigText(std::string_view text, const std::string& source,
                    const std::set<std::string>& skip, Config& config, std::string& error);

// Builds the configuration from defaults, `file` (if not empty) and `flags` (which win).
// `own_bytes`: bytes of /dev/shm held by this daemon's segments, counted as free for the default
// byte limit (on reload).
bool BuildConfig(const std::string& file, const std::map<std::string, std::string>& flags,
                 Config& config, std::string& error, uint64_t own_bytes = 0);

// The state directory of a daemon given none: systemd's $STATE_DIRECTORY (its first entry), else
// $XDG_RUNTIME_DIR/shmlease/state-<shm prefix> (one per prefix, so that daemons on other sockets
// never share one), else "" (no durable state).
std::string DefaultStateDir(const std::string& shm_prefix);

// Fills the derived defaults (socket, prefix, byte limits) and checks cross-setting rules.
bool Finalize(Config& config, std::string& error, uint64_t own_bytes = 0);

}  // namespace shmlease::server
