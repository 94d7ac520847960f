// The CLI's output streams. Results go to stdout through stdio's buffer, which RunCommand()
// (exit_policy.hpp) flushes and checks once at the end; messages go to stderr at once.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace shmlease::cli {

using Json = nlohmann::json;

// Indented JSON text. Names and messages may carry bytes a user typed that are not UTF-8:
// replaced, never a throw.
std::string Dump(const Json& j);

void PrintOut(const std::string& text);
void PrintErr(const std::string& text);  // flushed: stderr may be a file or a pipe

}  // namespace shmlease::cli
