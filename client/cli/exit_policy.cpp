#include "exit_policy.hpp"

#include <fmt/core.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <optional>
#include <string_view>
#include <system_error>

#include "output.hpp"
#include "shmlease/client.hpp"

namespace shmlease::cli {
namespace {

constexpr const char* kUsageHint = "Run 'shmlease --help' for more information.\n";

int Fail(bool json, ExitStatus status, std::string_view name, std::optional<uint32_t> errc,
         const std::string& message, const std::string& hint = {}) {
  std::fflush(stdout);
  PrintErr(fmt::format("shmlease: {}\n{}", message, hint));
  int code = static_cast<int>(status);
  if (json) {
    Json j{{"error", name}, {"code", code}, {"message", message}};
    if (errc) j["errc"] = *errc;
    PrintOut(Dump(j) + "\n");
    std::fflush(stdout);
  }
  return code;
}

int FailWith(bool json, const Error& e) {
  Errc code = e.errc();
  ExitStatus status = ExitStatusFor(code);
  std::string hint;
  if (status == ExitStatus::kDaemon) {
    hint = "shmlease: start shmleased, or point --socket or $SHMLEASE_SOCKET at a running one\n";
  }
  return Fail(json, status, ErrcName(code), static_cast<uint32_t>(code), e.what(), hint);
}

}  // namespace

CliError Usage(const std::string& message) { return {ExitStatus::kUsage, "usage", message}; }

int FailUsage(bool json, const std::string& message) {
  return Fail(json, ExitStatus::kUsage, "usage", std::nullopt, message, kUsageHint);
}

int RunCommand(bool json, const std::function<void()>& command) {
  try {
    command();
    if (std::fflush(stdout) != 0 || std::ferror(stdout) != 0) {
      if (errno == EPIPE) return static_cast<int>(ExitStatus::kOk);
      return Fail(false, ExitStatus::kError, "io", std::nullopt,
                  fmt::format("writing to stdout: {}", std::strerror(errno)));
    }
    return static_cast<int>(ExitStatus::kOk);
  } catch (const Error& e) {
    return FailWith(json, e);
  } catch (const CliError& e) {
    return Fail(json, e.status(), e.name(), std::nullopt, e.what(),
                e.status() == ExitStatus::kUsage ? kUsageHint : "");
  } catch (const std::system_error& e) {
    if (e.code().category() == ErrorCategory()) {
      return FailWith(json, Error(static_cast<Errc>(e.code().value()), e.what()));
    }
    return Fail(json, ExitStatus::kError, "system", std::nullopt, e.what());
  } catch (const std::bad_alloc&) {
    return Fail(json, ExitStatus::kError, "out_of_memory", std::nullopt, "out of memory");
  } catch (const std::exception& e) {
    return Fail(json, ExitStatus::kError, "internal", std::nullopt, e.what());
  }
}

}  // namespace shmlease::cli
