// How the CLI ends: every failure becomes one exit status and one message, on stderr and, with
// --json, as an object on stdout. Scripts rely on the statuses (ExitStatus in errc_table.hpp,
// shown in --help and docs/CLI.md), so a number keeps its meaning once published.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>

#include "shmlease/errc_table.hpp"

namespace shmlease::cli {

// A failure found by the CLI itself rather than reported by the library.
class CliError : public std::runtime_error {
 public:
  CliError(ExitStatus status, std::string name, const std::string& message)
      : std::runtime_error(message), status_(status), name_(std::move(name)) {}
  ExitStatus status() const { return status_; }
  const std::string& name() const { return name_; }

 private:
  ExitStatus status_;
  std::string name_;
};

// The command line asks for something impossible (exit status 2).
CliError Usage(const std::string& message);

// Runs a command and returns the process's exit status: 0 when it returned and stdout took all
// of its output (or the reader went away: EPIPE), else the status of what it threw (a
// shmlease::Error by its row in errc_table.hpp, a CliError by its own, anything else 1), after
// reporting it.
int RunCommand(bool json, const std::function<void()>& command);

// Reports a command line CLI11 could not parse; returns its exit status (2).
int FailUsage(bool json, const std::string& message);

}  // namespace shmlease::cli
