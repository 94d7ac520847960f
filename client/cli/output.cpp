#include "output.hpp"

#include <cstdio>

namespace shmlease::cli {

std::string Dump(const Json& j) { return j.dump(2, ' ', false, Json::error_handler_t::replace); }

void PrintOut(const std::string& text) { std::fwrite(text.data(), 1, text.size(), stdout); }

void PrintErr(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

}  // namespace shmlease::cli
