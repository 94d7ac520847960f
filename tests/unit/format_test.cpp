#include "shmlease/format.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shmlease {
namespace {

using Dims = std::vector<uint64_t>;
constexpr uint64_t kMaxU64 = std::numeric_limits<uint64_t>::max();

// --- Names -------------------------------------------------------------------------------------

TEST(Name, Valid) {
  for (std::string_view name : {"a", "Z", "0", "frames", "Frames_01", "a.b", "a-b", "a_b",
                                "camera.left-1_raw", "9lives", "a..", "a--", "a__"}) {
    EXPECT_TRUE(IsValidName(name)) << name;
  }
}

TEST(Name, LengthLimitIs128) {
  EXPECT_EQ(kMaxNameLength, 128u);
  EXPECT_TRUE(IsValidName(std::string(128, 'a')));
  EXPECT_TRUE(IsValidName("x" + std::string(127, '.')));
  EXPECT_FALSE(IsValidName(std::string(129, 'a')));
  EXPECT_FALSE(IsValidName(std::string(10000, 'a')));
}

TEST(Name, Invalid) {
  using namespace std::string_view_literals;
  for (std::string_view name : {""sv,
                                "."sv,
                                ".."sv,
                                ".hidden"sv,
                                "-x"sv,
                                "_x"sv,
                                "/x"sv,
                                "a/b"sv,
                                "../etc"sv,
                                "a b"sv,
                                " a"sv,
                                "a "sv,
                                "a\tb"sv,
                                "a\n"sv,
                                "a:b"sv,
                                "a*"sv,
                                "a?"sv,
                                "a\\b"sv,
                                "a%b"sv,
                                "a+b"sv,
                                "a\0b"sv,
                                "\0"sv,
                                "caf\xC3\xA9"sv,
                                "\xC3\xA9t\xC3\xA9"sv,
                                "\xE2\x9C\x93"sv,
                                "a\x7F"sv,
                                "a\xFF"sv}) {
    EXPECT_FALSE(IsValidName(name)) << "'" << name << "' (" << name.size() << " bytes)";
  }
}

TEST(Name, EveryByteAtHeadAndTail) {
  for (int c = 0; c < 256; ++c) {
    char ch = static_cast<char>(c);
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    bool tail = alnum || c == '.' || c == '_' || c == '-';
    EXPECT_EQ(IsValidName(std::string(1, ch)), alnum) << "head byte " << c;
    EXPECT_EQ(IsValidName(std::string("a") + ch), tail) << "tail byte " << c;
  }
}

// --- Formats -----------------------------------------------------------------------------------

TEST(Format, ItemSizeOfEveryAllowedLetter) {
  struct Case {
    char letter;
    size_t size;
  };
  const Case cases[] = {{'b', 1},
                        {'B', 1},
                        {'?', 1},
                        {'h', 2},
                        {'H', 2},
                        {'e', 2},
                        {'i', 4},
                        {'I', 4},
                        {'f', 4},
                        {'l', sizeof(long)},
                        {'L', sizeof(unsigned long)},
                        {'q', 8},
                        {'Q', 8},
                        {'d', 8}};
  for (const Case& c : cases) {
    EXPECT_EQ(FormatItemSize(std::string(1, c.letter)), c.size) << c.letter;
  }
  EXPECT_EQ(FormatItemSize(""), 1u);  // raw bytes
}

TEST(Format, EveryOtherSingleByteIsRefused) {
  const std::string_view allowed = "bBhHiIlLqQefd?";
  for (int c = 0; c < 256; ++c) {
    char ch = static_cast<char>(c);
    if (allowed.find(ch) != std::string_view::npos) continue;
    EXPECT_EQ(FormatItemSize(std::string(1, ch)), std::nullopt) << "byte " << c;
  }
}

TEST(Format, MultiLetterAndPrefixedFormatsAreRefused) {
  using namespace std::string_view_literals;
  for (std::string_view format :
       {"<f"sv, ">f"sv, "=f"sv, "@f"sv, "!f"sv, "ff"sv, "2f"sv, "f "sv,   " f"sv,    "x"sv,
        "Z"sv,  "c"sv,  "s"sv,  "p"sv,  "P"sv,  "n"sv,  "N"sv,  "T{f}"sv, "float"sv, "B\0"sv}) {
    EXPECT_EQ(FormatItemSize(format), std::nullopt) << format;
  }
}

// --- Shapes ------------------------------------------------------------------------------------

TEST(Shape, BytesIsProductTimesItemSize) {
  EXPECT_EQ(ShapeBytes({1080, 1920, 3}, 1), 1080u * 1920 * 3);
  EXPECT_EQ(ShapeBytes({1080, 1920, 3}, 4), 1080u * 1920 * 3 * 4);
  EXPECT_EQ(ShapeBytes({7}, 8), 56u);
  EXPECT_EQ(ShapeBytes({1, 1, 1, 1, 1, 1, 1, 1}, 2), 2u);
  EXPECT_EQ(ShapeBytes({2, 2, 2, 2, 2, 2, 2, 2}, 1), 256u);
  EXPECT_EQ(ShapeBytes({kMaxU64}, 1), kMaxU64);
  EXPECT_EQ(ShapeBytes({1ull << 32, (1ull << 32) - 1}, 1), (1ull << 32) * ((1ull << 32) - 1));
}

TEST(Shape, OverflowIsRefused) {
  EXPECT_EQ(ShapeBytes({kMaxU64}, 2), std::nullopt);
  EXPECT_EQ(ShapeBytes({1ull << 32, 1ull << 32}, 1), std::nullopt);
  EXPECT_EQ(ShapeBytes({1ull << 62, 4}, 1), std::nullopt);
  EXPECT_EQ(ShapeBytes({1ull << 61}, 8), std::nullopt);
  EXPECT_EQ(ShapeBytes({1ull << 60}, 8), 1ull << 63);
  EXPECT_EQ(ShapeBytes({65536, 65536, 65536, 65536}, 1), std::nullopt);
  // Overflow that a wrapping product would hide: 2^64 * 3 wraps to a small number.
  EXPECT_EQ(ShapeBytes({1ull << 63, 2, 3}, 1), std::nullopt);
}

TEST(Shape, ZeroDimensionsAndTooManyDimensionsAreRefused) {
  EXPECT_EQ(ShapeBytes({}, 1), std::nullopt);
  EXPECT_EQ(ShapeBytes({0}, 1), std::nullopt);
  EXPECT_EQ(ShapeBytes({1080, 0, 3}, 4), std::nullopt);
  EXPECT_EQ(ShapeBytes({kMaxU64, 0}, 4), std::nullopt);
  EXPECT_EQ(ShapeBytes(Dims(9, 1), 1), std::nullopt);
  EXPECT_EQ(ShapeBytes(Dims(8, 1), 1), 1u);
  EXPECT_EQ(ShapeBytes({4}, 0), std::nullopt);
}

TEST(Shape, ParseCommaAndXSeparated) {
  EXPECT_EQ(ParseShape("1080,1920,3"), (Dims{1080, 1920, 3}));
  EXPECT_EQ(ParseShape("1080x1920x3"), (Dims{1080, 1920, 3}));
  EXPECT_EQ(ParseShape("1080X1920"), (Dims{1080, 1920}));
  EXPECT_EQ(ParseShape("(1080, 1920, 3)"), (Dims{1080, 1920, 3}));
  EXPECT_EQ(ParseShape("7"), (Dims{7}));
  EXPECT_EQ(ParseShape("1,2,3,4,5,6,7,8"), (Dims{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(ParseShape("18446744073709551615"), (Dims{kMaxU64}));
  // A zero dimension parses; ShapeBytes is where it is refused.
  EXPECT_EQ(ParseShape("0,3"), (Dims{0, 3}));
  EXPECT_EQ(ParseShape("0x10"), (Dims{0, 10}));  // "0 by 10", not hexadecimal
}

TEST(Shape, ParseRefusesMalformed) {
  for (std::string_view text : {"",
                                " ",
                                ",",
                                "x",
                                "1,",
                                ",1",
                                "1,,2",
                                "1xx2",
                                "a",
                                "1,a",
                                "1;2",
                                "-1,2",
                                "1.5,2",
                                "+3",
                                "1,2,3,4,5,6,7,8,9",
                                "18446744073709551616",
                                "99999999999999999999999",
                                "1e3",
                                "1 2",
                                "1080 1920 3",
                                "10 80,3",
                                "1(2)",
                                "()"}) {
    EXPECT_EQ(ParseShape(text), std::nullopt) << "'" << text << "'";
  }
}

// --- Sizes -------------------------------------------------------------------------------------

TEST(Size, PlainBytes) {
  EXPECT_EQ(ParseSize("4096"), 4096u);
  EXPECT_EQ(ParseSize("0"), 0u);
  EXPECT_EQ(ParseSize("1"), 1u);
  EXPECT_EQ(ParseSize("4096B"), 4096u);
  EXPECT_EQ(ParseSize("4096b"), 4096u);
  EXPECT_EQ(ParseSize("18446744073709551615"), kMaxU64);
  EXPECT_EQ(ParseSize("9007199254740993"), 9007199254740993ull);  // above double's precision
}

TEST(Size, BinarySuffixesArePowersOf1024) {
  EXPECT_EQ(ParseSize("64MiB"), 64ull << 20);
  EXPECT_EQ(ParseSize("1GiB"), 1ull << 30);
  EXPECT_EQ(ParseSize("1KiB"), 1024u);
  EXPECT_EQ(ParseSize("2TiB"), 2ull << 40);
  EXPECT_EQ(ParseSize("512k"), 512u * 1024);
  EXPECT_EQ(ParseSize("512K"), 512u * 1024);
  EXPECT_EQ(ParseSize("64M"), 64ull << 20);
  EXPECT_EQ(ParseSize("3G"), 3ull << 30);
  EXPECT_EQ(ParseSize("1T"), 1ull << 40);
  EXPECT_EQ(ParseSize("64mib"), 64ull << 20);
  EXPECT_EQ(ParseSize("64MIB"), 64ull << 20);
  EXPECT_EQ(ParseSize("64 MiB"), 64ull << 20);
}

TEST(Size, DecimalSuffixesArePowersOf1000) {
  EXPECT_EQ(ParseSize("10kB"), 10000u);
  EXPECT_EQ(ParseSize("10KB"), 10000u);
  EXPECT_EQ(ParseSize("5MB"), 5000000u);
  EXPECT_EQ(ParseSize("2GB"), 2000000000u);
  EXPECT_EQ(ParseSize("1TB"), 1000000000000u);
}

TEST(Size, Fractions) {
  EXPECT_EQ(ParseSize("1.5G"), 1610612736u);
  EXPECT_EQ(ParseSize("1.5GiB"), 1610612736u);
  EXPECT_EQ(ParseSize("1.5GB"), 1500000000u);
  EXPECT_EQ(ParseSize("0.5k"), 512u);
  EXPECT_EQ(ParseSize("2.25MiB"), 2359296u);
  // A fraction of a byte means nothing.
  EXPECT_EQ(ParseSize("1.5"), std::nullopt);
  EXPECT_EQ(ParseSize("1.5B"), std::nullopt);
}

TEST(Size, JunkIsRefused) {
  using namespace std::string_view_literals;
  for (std::string_view text :
       {""sv,      " "sv,      "abc"sv,     "MiB"sv,     "k"sv,      "."sv,    ".k"sv,
        "1..5G"sv, "1.2.3M"sv, "64MiBs"sv,  "64 MiB "sv, " 64MiB"sv, "64Mi"sv, "64iB"sv,
        "64EiB"sv, "64PB"sv,   "0x10"sv,    "1e9"sv,     "1e3k"sv,   "1,5G"sv, "inf"sv,
        "nan"sv,   "infk"sv,   "64MiB\n"sv, "4096\0"sv,  "1\0k"sv}) {
    EXPECT_EQ(ParseSize(text), std::nullopt) << "'" << text << "'";
  }
}

TEST(Size, NegativeIsRefused) {
  EXPECT_EQ(ParseSize("-1"), std::nullopt);
  EXPECT_EQ(ParseSize("-64MiB"), std::nullopt);
  EXPECT_EQ(ParseSize("-0"), std::nullopt);
  EXPECT_EQ(ParseSize("+64"), std::nullopt);
}

TEST(Size, OverflowIsRefused) {
  EXPECT_EQ(ParseSize("99999999999TiB"), std::nullopt);
  EXPECT_EQ(ParseSize("18446744073709551616"), std::nullopt);
  EXPECT_EQ(ParseSize("99999999999999999999999999"), std::nullopt);
  EXPECT_EQ(ParseSize("16777216TiB"), std::nullopt);  // exactly 2^64
  EXPECT_EQ(ParseSize("16777215TiB"), 16777215ull << 40);
  EXPECT_EQ(ParseSize("17179869184GiB"), std::nullopt);  // 2^34 GiB = 2^64
  EXPECT_EQ(ParseSize("18446744073709552TB"), std::nullopt);
  EXPECT_EQ(ParseSize(std::string(400, '9') + "MiB"), std::nullopt);
}

TEST(Size, FormatForHumans) {
  EXPECT_EQ(FormatSize(0), "0 B");
  EXPECT_EQ(FormatSize(1), "1 B");
  EXPECT_EQ(FormatSize(1023), "1023 B");
  EXPECT_EQ(FormatSize(1024), "1.0 KiB");
  EXPECT_EQ(FormatSize(1536), "1.5 KiB");
  EXPECT_EQ(FormatSize(64ull << 20), "64.0 MiB");
  EXPECT_EQ(FormatSize(1ull << 30), "1.0 GiB");
  EXPECT_EQ(FormatSize(1610612736), "1.5 GiB");
  EXPECT_EQ(FormatSize(3ull << 40), "3.0 TiB");
  EXPECT_EQ(FormatSize(1ull << 50), "1.0 PiB");
  EXPECT_EQ(FormatSize(kMaxU64), "16.0 EiB");
}

TEST(Size, FormatThenParseRoundTripsWholeUnits) {
  for (uint64_t bytes : {1ull << 10, 5ull << 20, 64ull << 20, 3ull << 30, 2ull << 40}) {
    std::string text = FormatSize(bytes);  // "64.0 MiB"
    EXPECT_EQ(ParseSize(text), bytes) << text;
  }
}

}  // namespace
}  // namespace shmlease

namespace shmlease {
namespace {

TEST(TypeName, NumpyNamesMapToNativeFormats) {
  const std::pair<const char*, const char*> kNames[] = {
      {"int8", "b"},    {"uint8", "B"},    {"int16", "h"},   {"uint16", "H"},
      {"int32", "i"},   {"uint32", "I"},   {"int64", "l"},   {"uint64", "L"},
      {"float16", "e"}, {"float32", "f"},  {"float64", "d"}, {"bool", "?"},
      {"i1", "b"},      {"u1", "B"},       {"i2", "h"},      {"u2", "H"},
      {"i4", "i"},      {"u4", "I"},       {"i8", "l"},      {"u8", "L"},
      {"f2", "e"},      {"f4", "f"},       {"f8", "d"},      {"b1", "?"},
      {"=f4", "f"},     {"|u1", "B"},      {"<f8", "d"},     {"f", "f"},
      {"@d", "d"},      {"q", "q"},        {"?", "?"},
  };
  for (const auto& [name, format] : kNames) {
    std::optional<std::string> got = FormatFromTypeName(name);
    ASSERT_TRUE(got.has_value()) << name;
    EXPECT_EQ(*got, format) << name;
    EXPECT_EQ(FormatItemSize(*got).value_or(0), FormatItemSize(format).value_or(99)) << name;
  }
}

TEST(TypeName, EverythingElseIsRefused) {
  for (const char* name : {"", "float", "Float32", "float128", "complex64", "c8", "int", "i3",
                           "u16", ">f4", "<<f4", "f4 ", " f4", "x", "@", "@@", "S1", "U4", "O",
                           "int8 "}) {
    EXPECT_FALSE(FormatFromTypeName(name).has_value()) << name;
  }
}

TEST(TypeName, FormatsHaveNamesForMessages) {
  EXPECT_EQ(FormatTypeName("f"), "float32");
  EXPECT_EQ(FormatTypeName(""), "uint8");  // raw bytes
  EXPECT_EQ(FormatTypeName("B"), "uint8");
  EXPECT_EQ(FormatTypeName("l"), "int64");
  EXPECT_EQ(FormatTypeName("q"), "int64 ('q')");  // two formats share the name: say which
  EXPECT_EQ(FormatTypeName("Q"), "uint64 ('Q')");
  EXPECT_EQ(FormatTypeName("?"), "bool");
  EXPECT_EQ(FormatTypeName("zz"), "'zz'");
  // Every name read back gives the format it came from (except where names are shared).
  for (const char* format : {"b", "B", "h", "H", "i", "I", "l", "L", "e", "f", "d", "?"}) {
    EXPECT_EQ(FormatFromTypeName(FormatTypeName(format)).value_or("-"), format) << format;
  }
}

}  // namespace
}  // namespace shmlease
