// shmlease: the command line for shmleased, built on libshmlease. This file is the wiring only:
// the options and subcommands (CLI11), bound to the commands of commands.hpp; how a run ends is
// exit_policy.hpp's, what it prints render.hpp's and table.hpp's.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "exit_policy.hpp"
#include "shmlease/client.hpp"
#include "shmlease/errc_table.hpp"

namespace shmlease::cli {
namespace {

// The exit statuses of ExitStatus (errc_table.hpp), as published: never renumber.
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

std::string VersionText() {
#ifdef SHMLEASE_VERSION
  return fmt::format("shmlease {} (protocol {})", SHMLEASE_VERSION, kProtocolVersion);
#else
  return fmt::format("shmlease (protocol {})", kProtocolVersion);
#endif
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
  CLI::App* ls = app.add_subcommand("ls", "List every segment, then every channel");
  ls->alias("list");
  CLI::App* stat = app.add_subcommand("stat", "Describe one segment or channel");
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
  create
      ->add_option("--mode", o.mode,
                   "Permission bits, octal: 4 read, 2 write for owner, group, "
                   "others (default 0600)")
      ->type_name("MODE");

  CLI::App* chmod = app.add_subcommand("chmod", "Set a segment's permission bits (owner or admin)");
  chmod->add_option("NAME", o.name, "Segment name")->required();
  chmod->add_option("MODE", o.mode, "Octal permission bits, e.g. 0640")->required();

  CLI::App* stats = app.add_subcommand(
      "stats", "The daemon's totals and its clients: pid, uid, process, what each holds");
  CLI::App* top =
      app.add_subcommand("top", "A live view of stats and segments, refreshed in place");
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

  CLI::App* rm = app.add_subcommand("rm", "Remove a segment or channel (its memory goes with its last lease or participant)");
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
    return FailUsage(json_flag->count() > 0, e.what());
  }

  return RunCommand(o.json, [&] {
    if (app.got_subcommand(ping)) Ping(o);
    if (app.got_subcommand(ls)) List(o);
    if (app.got_subcommand(stat)) StatCommand(o);
    if (app.got_subcommand(create)) CreateCommand(o);
    if (app.got_subcommand(rm)) RemoveCommand(o);
    if (app.got_subcommand(cat)) CatCommand(o);
    if (app.got_subcommand(put)) PutCommand(o);
    if (app.got_subcommand(chmod)) ChmodCommand(o);
    if (app.got_subcommand(stats)) StatsCommand(o);
    if (app.got_subcommand(top)) TopCommand(o);
    if (app.got_subcommand(metrics)) MetricsCommand(o);
  });
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
    return static_cast<int>(shmlease::ExitStatus::kError);
  }
}
