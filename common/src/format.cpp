#include "shmlease/format.hpp"

#include <bit>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <system_error>

namespace shmlease {
namespace {

// ASCII only, by value: std::isalnum depends on the process's locale (a Latin-1 locale would
// let bytes like 0xE9 through).
bool IsNameHead(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
bool IsNameTail(char c) { return IsNameHead(c) || c == '.' || c == '_' || c == '-'; }

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool IsValidName(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxNameLength || !IsNameHead(name[0])) return false;
  for (char c : name.substr(1)) {
    if (!IsNameTail(c)) return false;
  }
  return true;
}

std::optional<size_t> FormatItemSize(std::string_view format) noexcept {
  if (format.empty()) return 1;
  if (format.size() != 1) return std::nullopt;
  switch (format[0]) {
    case 'b':
    case 'B':
    case '?':
      return 1;
    case 'h':
    case 'H':
    case 'e':
      return 2;
    case 'i':
    case 'I':
    case 'f':
      return 4;
    case 'l':
    case 'L':
      return sizeof(long);
    case 'q':
    case 'Q':
    case 'd':
      return 8;
    default:
      return std::nullopt;
  }
}

namespace {

struct TypeName {
  std::string_view name;
  std::string_view code;  // numpy's kind + item size
  char format;
};
constexpr TypeName kTypeNames[] = {
    {"int8", "i1", 'b'},     {"uint8", "u1", 'B'},    {"int16", "i2", 'h'},
    {"uint16", "u2", 'H'},   {"int32", "i4", 'i'},    {"uint32", "u4", 'I'},
    {"int64", "i8", 'l'},    {"uint64", "u8", 'L'},   {"float16", "f2", 'e'},
    {"float32", "f4", 'f'},  {"float64", "f8", 'd'},  {"bool", "b1", '?'},
};
static_assert(sizeof(long) == 8, "int64 is 'l' only where long has 64 bits");

}  // namespace

std::optional<std::string> FormatFromTypeName(std::string_view name) {
  if (name.size() == 2 && name[0] == '@') name.remove_prefix(1);
  if (name.size() == 1) {
    if (!FormatItemSize(name)) return std::nullopt;
    return std::string(name);
  }
  for (const TypeName& t : kTypeNames) {
    if (name == t.name) return std::string(1, t.format);
  }
  // A byte-order prefix is accepted only when it means this machine's order.
  constexpr char kNative = std::endian::native == std::endian::little ? '<' : '>';
  if (name.size() == 3 && (name[0] == '=' || name[0] == '|' || name[0] == kNative)) {
    name.remove_prefix(1);
  }
  for (const TypeName& t : kTypeNames) {
    if (name == t.code) return std::string(1, t.format);
  }
  return std::nullopt;
}

std::string FormatTypeName(std::string_view format) {
  if (format.empty()) return "uint8";
  if (format == "q") return "int64 ('q')";
  if (format == "Q") return "uint64 ('Q')";
  for (const TypeName& t : kTypeNames) {
    if (format.size() == 1 && format[0] == t.format) return std::string(t.name);
  }
  return "'" + std::string(format) + "'";
}

std::optional<uint64_t> ShapeBytes(const std::vector<uint64_t>& shape, size_t itemsize) noexcept {
  if (shape.empty() || shape.size() > kMaxDims || itemsize == 0) return std::nullopt;
  uint64_t total = itemsize;
  for (uint64_t dim : shape) {
    if (dim == 0 || total > std::numeric_limits<uint64_t>::max() / dim) return std::nullopt;
    total *= dim;
  }
  return total;
}

std::optional<uint64_t> ParseSize(std::string_view text) noexcept {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
    ++i;
  }
  std::string_view number = text.substr(0, i);
  std::string_view suffix = text.substr(i);
  while (!suffix.empty() && suffix.front() == ' ') suffix.remove_prefix(1);
  if (number.empty() || number.find('.') != number.rfind('.') || number == ".") return std::nullopt;

  struct Unit {
    std::string_view name;
    uint64_t factor;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},           {"b", 1},           {"k", 1ull << 10},  {"kib", 1ull << 10},
      {"kb", 1000},      {"m", 1ull << 20},  {"mib", 1ull << 20}, {"mb", 1000000},
      {"g", 1ull << 30}, {"gib", 1ull << 30}, {"gb", 1000000000},
      {"t", 1ull << 40}, {"tib", 1ull << 40}, {"tb", 1000000000000},
  };
  uint64_t factor = 0;
  for (const auto& unit : kUnits) {
    if (EqualsNoCase(suffix, unit.name)) factor = unit.factor;
  }
  if (factor == 0) return std::nullopt;

  // std::from_chars, not sscanf/strtod: those read the decimal point of the process's locale
  // (a program that called setlocale(LC_ALL, "") in a German locale would read "1.5G" as 1G).
  const char* first = number.data();
  const char* last = number.data() + number.size();
  if (number.find('.') == std::string_view::npos) {
    // Whole numbers exactly, without a detour through double.
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(first, last, value);
    if (ec != std::errc() || end != last) return std::nullopt;
    if (value > std::numeric_limits<uint64_t>::max() / factor) return std::nullopt;
    return value * factor;
  }
  // A fractional byte count ("0.5" bytes) is meaningless.
  if (factor == 1) return std::nullopt;
  double value = 0;
  auto [end, ec] = std::from_chars(first, last, value);
  if (ec != std::errc() || end != last) return std::nullopt;
  double bytes = std::floor(value * static_cast<double>(factor));
  // 2^64 is exactly representable; anything at or above it does not fit.
  if (!std::isfinite(bytes) || bytes < 0 || bytes >= 18446744073709551616.0) return std::nullopt;
  return static_cast<uint64_t>(bytes);
}

std::optional<std::vector<uint64_t>> ParseShape(std::string_view text) noexcept {
  std::vector<uint64_t> dims;
  uint64_t current = 0;
  bool have_digit = false;
  bool number_ended = false;  // a space or parenthesis after digits: "1080 1920" is not 10801920
  for (size_t i = 0; i <= text.size(); ++i) {
    char c = i < text.size() ? text[i] : ',';
    if (std::isdigit(static_cast<unsigned char>(c))) {
      if (number_ended) return std::nullopt;
      uint64_t digit = static_cast<uint64_t>(c - '0');
      if (current > (std::numeric_limits<uint64_t>::max() - digit) / 10) return std::nullopt;
      current = current * 10 + digit;
      have_digit = true;
    } else if (c == ',' || c == 'x' || c == 'X') {
      if (!have_digit) return std::nullopt;
      dims.push_back(current);
      current = 0;
      have_digit = false;
      number_ended = false;
    } else if (c == ' ' || c == '(' || c == ')') {
      number_ended = have_digit;
    } else {
      return std::nullopt;
    }
  }
  if (dims.empty() || dims.size() > kMaxDims) return std::nullopt;
  return dims;
}

std::string FormatSize(uint64_t bytes) {
  static constexpr const char* kNames[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(kNames)) {
    value /= 1024.0;
    ++unit;
  }
  char out[32];
  if (unit == 0) {
    std::snprintf(out, sizeof(out), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(out, sizeof(out), "%.1f %s", value, kNames[unit]);
  }
  return out;
}

}  // namespace shmlease
