// Rules for what a user may name and describe: segment names, element formats, shapes and sizes.
// Pure functions, shared by the daemon (which enforces them) and the clients (which report early).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shmlease {

inline constexpr size_t kMaxNameLength = 128;
inline constexpr size_t kMaxDims = 8;

// A segment name: [A-Za-z0-9][A-Za-z0-9._-]{0,127}.
bool IsValidName(std::string_view name) noexcept;

// The item size of a PEP 3118 / struct format of one native item, one of "bBhHiIlLqQefd?".
// An empty format means raw bytes ("B"). Returns nullopt for anything else.
std::optional<size_t> FormatItemSize(std::string_view format) noexcept;

// The struct format of a numpy-style type name, as numpy.dtype(name).char gives it on this
// platform (native byte order): "int8" "uint8" "int16" "uint16" "int32" "uint32" "int64" "uint64"
// "float16" "float32" "float64" "bool", their numpy codes "i1" "u1" "i2" "u2" "i4" "u4" "i8" "u8"
// "f2" "f4" "f8" "b1" (optionally after '=', '|' or this machine's own order '<'/'>'), and the
// one-character formats themselves ("f", "@f", ...). int64 is 'l' and uint64 'L', as numpy has
// them on LP64 Linux. Returns nullopt for anything else (case matters: "Float32" is not a name).
std::optional<std::string> FormatFromTypeName(std::string_view name);

// The numpy-style name of a struct format for messages: "float32", "uint8" for "" (raw bytes),
// "int64 ('q')" where two formats share a name, "'x'" for a format this library does not know.
std::string FormatTypeName(std::string_view format);

// The byte count of `shape` items of `itemsize` bytes, or nullopt on overflow, on a zero
// dimension, or with more than kMaxDims dimensions.
std::optional<uint64_t> ShapeBytes(const std::vector<uint64_t>& shape, size_t itemsize) noexcept;

// Parses "4096", "64MiB", "1GiB", "1.5GB", "512k": binary suffixes (KiB, MiB, GiB, TiB, and the
// short K/M/G/T) are powers of 1024, decimal ones (kB, MB, GB, TB) powers of 1000.
std::optional<uint64_t> ParseSize(std::string_view text) noexcept;

// Parses "1080,1920,3" or "1080x1920x3" into dimensions; nullopt when malformed.
std::optional<std::vector<uint64_t>> ParseShape(std::string_view text) noexcept;

// "64.0 MiB" style rendering for humans.
std::string FormatSize(uint64_t bytes);

}  // namespace shmlease
