// libFuzzer target for the user-facing text rules (common/src/format.cpp): ParseSize, ParseShape,
// FormatItemSize, ShapeBytes, IsValidName and FormatSize, each given the whole input as text.
// Properties checked, besides ASan/UBSan:
//   - ParseSize ignores the case of its unit, reads back the decimal form of what it returned, and
//     reads FormatSize's rendering of any size below 1 PiB to within the rendering's rounding;
//   - ParseShape returns 1..8 dimensions that read back the same when written with ',' or 'x';
//     ShapeBytes of them (and of dimensions cut from the raw input) agrees with 128-bit
//     arithmetic: the exact product, or nullopt for an overflow or a zero dimension;
//   - FormatItemSize accepts only "" and the native letters, with their sizes;
//   - IsValidName agrees with the rule as written in format.hpp, checked here byte by byte.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmlease/format.hpp"

namespace {

[[noreturn]] void Fail(const char* what, std::string_view input) {
  std::fprintf(stderr, "fuzz_format: %s (input of %zu bytes)\n", what, input.size());
  std::abort();
}
#define FUZZ_CHECK(cond, input)      \
  do {                               \
    if (!(cond)) Fail(#cond, input); \
  } while (0)

std::string Cased(std::string_view s, bool upper) {
  std::string out(s);
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x80) c = static_cast<char>(upper ? std::toupper(u) : std::tolower(u));
  }
  return out;
}

// The product of `shape` and `itemsize`, or nullopt when it does not fit in 64 bits or a
// dimension is 0, computed in 128 bits as the reference for ShapeBytes.
std::optional<uint64_t> ReferenceShapeBytes(const std::vector<uint64_t>& shape, size_t itemsize) {
  if (shape.empty() || shape.size() > shmlease::kMaxDims || itemsize == 0) return std::nullopt;
  unsigned __int128 total = itemsize;
  for (uint64_t dim : shape) {
    if (dim == 0) return std::nullopt;
    total *= dim;
    if (total > UINT64_MAX) return std::nullopt;
  }
  return static_cast<uint64_t>(total);
}

void CheckShapeBytes(const std::vector<uint64_t>& shape, std::string_view input) {
  for (size_t itemsize : {size_t{1}, size_t{2}, size_t{4}, size_t{8}}) {
    FUZZ_CHECK(shmlease::ShapeBytes(shape, itemsize) == ReferenceShapeBytes(shape, itemsize),
               input);
  }
}

void CheckSize(std::string_view text) {
  std::optional<uint64_t> size = shmlease::ParseSize(text);
  FUZZ_CHECK(shmlease::ParseSize(Cased(text, true)) == size, text);
  FUZZ_CHECK(shmlease::ParseSize(Cased(text, false)) == size, text);
  if (!size) return;
  FUZZ_CHECK(!text.empty(), text);
  FUZZ_CHECK(shmlease::ParseSize(std::to_string(*size)) == size, text);
}

// FormatSize prints one decimal of the largest unit below 1024 of it: reading it back is off by at
// most half a tenth of that unit (plus one byte for the floor). Above 1 PiB it prints PiB/EiB,
// which ParseSize does not read (docs/RELIABILITY.md).
void CheckFormatSize(uint64_t bytes, std::string_view input) {
  std::string text = shmlease::FormatSize(bytes);
  FUZZ_CHECK(!text.empty() && text.size() < 32, input);
  if (bytes >= (uint64_t{1} << 50)) return;
  std::optional<uint64_t> back = shmlease::ParseSize(text);
  FUZZ_CHECK(back.has_value(), input);
  uint64_t unit = 1;
  while (unit < (uint64_t{1} << 40) && bytes >= unit * 1024) unit *= 1024;
  uint64_t diff = *back > bytes ? *back - bytes : bytes - *back;
  if (unit == 1) {
    FUZZ_CHECK(diff == 0, input);
  } else {
    FUZZ_CHECK(diff <= unit / 20 + 1, input);
  }
}

void CheckShape(std::string_view text) {
  auto shape = shmlease::ParseShape(text);
  if (!shape) return;
  FUZZ_CHECK(!shape->empty() && shape->size() <= shmlease::kMaxDims, text);
  std::string commas, crosses;
  for (size_t i = 0; i < shape->size(); ++i) {
    commas += (i ? "," : "") + std::to_string((*shape)[i]);
    crosses += (i ? "x" : "") + std::to_string((*shape)[i]);
  }
  FUZZ_CHECK(shmlease::ParseShape(commas) == shape, text);
  FUZZ_CHECK(shmlease::ParseShape(crosses) == shape, text);
  CheckShapeBytes(*shape, text);
}

void CheckItemSize(std::string_view text) {
  auto itemsize = shmlease::FormatItemSize(text);
  if (!itemsize) return;
  FUZZ_CHECK(text.size() <= 1, text);
  FUZZ_CHECK(text.empty() || std::strchr("bBhHiIlLqQefd?", text[0]) != nullptr, text);
  FUZZ_CHECK(*itemsize == 1 || *itemsize == 2 || *itemsize == 4 || *itemsize == 8, text);
}

void CheckName(std::string_view text) {
  auto head = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  bool expected = !text.empty() && text.size() <= shmlease::kMaxNameLength && head(text[0]);
  for (size_t i = 1; expected && i < text.size(); ++i) {
    char c = text[i];
    expected = head(c) || c == '.' || c == '_' || c == '-';
  }
  FUZZ_CHECK(shmlease::IsValidName(text) == expected, text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  CheckSize(text);
  CheckShape(text);
  CheckItemSize(text);
  CheckName(text);
  if (auto parsed = shmlease::ParseSize(text)) CheckFormatSize(*parsed, text);
  // The raw bytes as numbers: up to 9 little-endian u64 dimensions (one more than allowed), and
  // the first of them as a size to render.
  std::vector<uint64_t> dims;
  for (size_t at = 0; at + 8 <= size && dims.size() <= shmlease::kMaxDims; at += 8) {
    uint64_t v = 0;
    std::memcpy(&v, data + at, 8);
    dims.push_back(v);
  }
  if (!dims.empty()) {
    CheckShapeBytes(dims, text);
    CheckFormatSize(dims[0], text);
    CheckFormatSize(dims[0] >> (dims[0] & 63), text);
  }
  return 0;
}
