// The CLI's commands. Each connects once, does one thing, prints its result and returns; every
// failure is a throw, which RunCommand() (exit_policy.hpp) turns into the exit status.
#pragma once

#include <cstdint>
#include <string>

namespace shmlease::cli {

// Everything the command line sets (main.cpp binds each to its option).
struct Options {
  std::string socket;
  bool json = false;
  std::string name;
  std::string size;   // create: as typed, parsed with ParseSize
  std::string shape;  // create: as typed, parsed with ParseShape
  std::string dtype;
  bool exist_ok = false;
  std::string huge;  // create: "" (the daemon's default), yes, best-effort or no
  bool exclusive = false;
  int64_t timeout_ms = -1;
  std::string mode;       // create, chmod: octal permission bits as typed
  double interval_s = 1;  // top
  int64_t count = -1;     // top: refreshes before exiting; -1 = until interrupted
};

void Ping(const Options& o);
void List(const Options& o);
void StatCommand(const Options& o);
void CreateCommand(const Options& o);
void RemoveCommand(const Options& o);
void CatCommand(const Options& o);
void PutCommand(const Options& o);
void ChmodCommand(const Options& o);
void StatsCommand(const Options& o);
// A live view: the stats and the segment table, redrawn in place on a terminal.
void TopCommand(const Options& o);
// Prometheus text exposition format (version 0.0.4).
void MetricsCommand(const Options& o);

}  // namespace shmlease::cli
