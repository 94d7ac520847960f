// shmleased: the shmlease daemon. Every setting is a flag and a config-file key (config.cpp);
// none is required. Flags win over the file.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <exception>
#include <filesystem>

#include "config.hpp"
#include "daemon.hpp"
#include "huge_pages.hpp"
#include "keeper.hpp"

int main(int argc, char** argv) {
  shmlease::server::Config parsed;
  std::map<std::string, std::string> flags;
  std::string config_file;
  CLI::App app{"shmleased: owns named shared-memory segments and leases them to clients"};
  app.set_version_flag("--version", SHMLEASE_VERSION);
  app.add_option("--config", config_file,
                 std::string("TOML config file whose keys are the settings below (default: ") +
                     shmlease::server::kDefaultConfigFile + " if it exists)");
  shmlease::server::AddFlags(app, parsed, flags);
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("shmleased");
  spdlog::set_default_logger(logger);
  // Under systemd the journal adds its own timestamps.
  spdlog::set_pattern(std::getenv("JOURNAL_STREAM") ? "%l %v" : "%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");

  // Without --config the default file is read when it exists, at start and on every SIGHUP.
  shmlease::server::ConfigSource source{config_file, flags};
  if (config_file.empty()) {
    source = {shmlease::server::kDefaultConfigFile, flags, true};
    if (std::filesystem::exists(source.file)) config_file = source.file;
  }
  shmlease::server::Config config;
  std::string error;
  if (!shmlease::server::BuildConfig(config_file, flags, config, error)) {
    spdlog::error("bad configuration: {}", error);
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  if (!config_file.empty()) spdlog::info("configuration read from {}", config_file);
  if (!config.huge_dir.empty() && !shmlease::server::InspectHugeDir(config.huge_dir, error)) {
    spdlog::error("bad configuration: {}", error);
    return 2;
  }
  // Before anything is created: the keeper holds what the daemon stores and restarts it.
  if (shmlease::server::ShouldStartKeeper(config)) return shmlease::server::RunKeeper(argv);
  try {
    shmlease::server::Daemon daemon(config, source);
    if (!daemon.Listen(error)) {
      spdlog::error("{}", error);
      return 1;
    }
    return daemon.Run();
  } catch (const std::exception& e) {
    // Nothing should reach here: the loop catches client faults. This is a daemon bug.
    spdlog::critical("shmleased failed: {}", e.what());
    return 70;
  }
}
