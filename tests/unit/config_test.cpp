#include "config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

namespace shmlease::server {
namespace {

TEST(ConfigText, AppliesSettings) {
  Config config;
  std::string error;
  ASSERT_TRUE(LoadConfigText("max-segments = 7\nmax-total-bytes = \"2GiB\"\nsocket-mode = 0o640\n",
                             "test.toml", {}, config, error))
      << error;
  EXPECT_EQ(config.max_segments, 7u);
  EXPECT_EQ(config.max_total_bytes, 2ull << 30);
  EXPECT_EQ(config.socket_mode, 0640u);
}

TEST(ConfigText, RefusalNamesSourceAndLine) {
  Config config;
  std::string error;
  EXPECT_FALSE(
      LoadConfigText("max-segments = 1\nno-such-setting = 2\n", "test.toml", {}, config, error));
  EXPECT_EQ(error.rfind("test.toml:2: ", 0), 0u) << error;
}

// Found by fuzz_config: a non-ASCII letter inside a bare key drives toml++ 3.3.0 to
// __builtin_unreachable in its whitespace classifier (marzer/tomlplusplus#190, #295) when it is
// built with UBSan. The daemon must still refuse the file with a parse error.
TEST(ConfigText, NonAsciiInsideABareKeyIsAParseError) {
  Config config;
  std::string error;
  EXPECT_FALSE(LoadConfigText("log\xD0\x93level = \"debug\"\n", "test.toml", {}, config, error));
  EXPECT_EQ(error.rfind("test.toml:1: ", 0), 0u) << error;
  EXPECT_EQ(config.log_level, "info");
}

// Found by fuzz_config: toml++ 3.3.0 converted an out-of-range float to an integer before checking
// it (undefined behaviour). Whole floats in range still count as integers.
TEST(ConfigText, FloatsOutOfIntegerRangeAreTheWrongType) {
  for (const char* text :
       {"max-segments = 6.55e38\n", "max-segments = -1e300\n", "admins = [0, 1e19]\n",
        "max-segments = inf\n", "max-segments = nan\n", "max-segments = 1.5\n"}) {
    Config config;
    std::string error;
    EXPECT_FALSE(LoadConfigText(text, "test.toml", {}, config, error)) << text;
    EXPECT_NE(error.find("wrong type"), std::string::npos) << text << ": " << error;
  }
  Config config;
  std::string error;
  ASSERT_TRUE(LoadConfigText("max-segments = 100.0\nadmins = [0.0, 1000]\n", "test.toml", {},
                             config, error))
      << error;
  EXPECT_EQ(config.max_segments, 100u);
  EXPECT_EQ(config.admins, (std::vector<uint64_t>{0, 1000}));
}

// A grace period longer than a steady-clock timer can count (292 years) overflowed when the timer
// was set after a restart, which then fired at once.
TEST(ConfigText, ReclaimGraceBeyondWhatATimerHoldsIsRefused) {
  Config config;
  std::string error;
  ASSERT_TRUE(LoadConfigText("socket = \"/tmp/x.sock\"\nreclaim-grace-ms = 9223372036854775807\n",
                             "test.toml", {}, config, error))
      << error;
  EXPECT_FALSE(Finalize(config, error));
  EXPECT_NE(error.find("reclaim-grace-ms"), std::string::npos) << error;
  config.reclaim_grace_ms = kLongestTimerMs;
  EXPECT_TRUE(Finalize(config, error)) << error;
}

TEST(ConfigText, DeadlinesBeyondWhatATimerHoldsAreRefused) {
  for (const char* name : {"hello-timeout-ms", "frame-timeout-ms"}) {
    Config config;
    std::string error;
    ASSERT_TRUE(LoadConfigText(std::string("socket = \"/tmp/x.sock\"\n") + name +
                                   " = 9223372036854775807\n",
                               "test.toml", {}, config, error))
        << error;
    EXPECT_FALSE(Finalize(config, error));
    EXPECT_NE(error.find(name), std::string::npos) << error;
  }
  Config defaults;
  EXPECT_EQ(defaults.hello_timeout_ms, 5000u);
  EXPECT_EQ(defaults.frame_timeout_ms, 10000u);
  EXPECT_LT(defaults.max_connections_per_uid, defaults.max_connections);
}

// Sets an environment variable for one scope (nullptr: unset), then puts back what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? ::setenv(name, value, 1) : ::unsetenv(name);
  }
  ~ScopedEnv() { old_ ? ::setenv(name_, old_->c_str(), 1) : ::unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// docs/RESTART.md: the flag, else systemd's StateDirectory=, else one directory per prefix under
// $XDG_RUNTIME_DIR, else none; "none" asks for none.
TEST(ConfigStateDir, DefaultAndNone) {
  auto finalized = [](const std::string& flag) {
    Config config;
    config.socket = "/tmp/x.sock";
    config.shm_prefix = "shmlease-abc";
    config.state_dir = flag;
    std::string error;
    EXPECT_TRUE(Finalize(config, error)) << error;
    return config.state_dir;
  };
  {
    ScopedEnv systemd("STATE_DIRECTORY", "/var/lib/shmlease:/var/lib/other");
    ScopedEnv run("XDG_RUNTIME_DIR", "/run/user/1000");
    EXPECT_EQ(finalized(""), "/var/lib/shmlease");
    EXPECT_EQ(finalized("/srv/state"), "/srv/state");
    EXPECT_EQ(finalized("none"), "");
  }
  {
    ScopedEnv systemd("STATE_DIRECTORY", nullptr);
    ScopedEnv run("XDG_RUNTIME_DIR", "/run/user/1000");
    EXPECT_EQ(finalized(""), "/run/user/1000/shmlease/state-shmlease-abc");
    EXPECT_EQ(finalized("none"), "");
  }
  {
    ScopedEnv systemd("STATE_DIRECTORY", nullptr);
    ScopedEnv run("XDG_RUNTIME_DIR", "relative");  // not a runtime directory: ignored
    EXPECT_EQ(finalized(""), "");
  }
}

TEST(ConfigText, WaiterLimitsAreSettingsOfAtLeastOne) {
  Config config;
  EXPECT_EQ(config.max_waiters_per_connection, 65536u);
  EXPECT_EQ(config.max_waiters_per_uid, 262144u) << "room for issue 14's 200,000 waits";
  std::string error;
  ASSERT_TRUE(LoadConfigText("max-waiters-per-connection = 3\nmax-waiters-per-uid = 5\n",
                             "test.toml", {}, config, error))
      << error;
  EXPECT_EQ(config.max_waiters_per_connection, 3u);
  EXPECT_EQ(config.max_waiters_per_uid, 5u);
  config.socket = "shmleased-test.sock";
  EXPECT_TRUE(Finalize(config, error)) << error;
  config.max_waiters_per_uid = 0;
  EXPECT_FALSE(Finalize(config, error));
  EXPECT_NE(error.find("max-waiters-per-uid"), std::string::npos) << error;
}

}  // namespace
}  // namespace shmlease::server
