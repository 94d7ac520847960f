// shmleased: the shmlease daemon. Every setting is a flag (see config.cpp); none is required.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <exception>

#include "config.hpp"
#include "daemon.hpp"
#include "huge_pages.hpp"

int main(int argc, char** argv) {
  shmlease::server::Config config;
  CLI::App app{"shmleased: owns named shared-memory segments and leases them to clients"};
  app.set_version_flag("--version", SHMLEASE_VERSION);
  shmlease::server::AddFlags(app, config);
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("shmleased");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(config.log_level));

  std::string error;
  if (!shmlease::server::Finalize(config, error)) {
    spdlog::error("bad configuration: {}", error);
    return 2;
  }
  if (!config.huge_dir.empty() && !shmlease::server::InspectHugeDir(config.huge_dir, error)) {
    spdlog::error("bad configuration: {}", error);
    return 2;
  }
  try {
    shmlease::server::Daemon daemon(config);
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
