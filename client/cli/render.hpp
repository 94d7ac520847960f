// How the CLI shows what the library returns: segments and daemon stats as text and as JSON.
// Pure: values in, strings out.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "output.hpp"
#include "shmlease/client.hpp"

namespace shmlease::cli {

// "1080x1920x3", or "-" for none.
std::string ShapeText(const std::vector<uint64_t>& shape);

// True when the segment is backed by pages larger than this system's normal page.
bool IsHuge(const SegmentInfo& info);

// "exclusive,waiting=2,huge=2MiB", or "-" for none.
std::string FlagsText(const SegmentInfo& info);

// "2024-06-01T12:00:00.123456789Z"; `local` gives local time with its UTC offset instead.
std::string TimeText(int64_t unix_ns, bool local);

Json InfoJson(const SegmentInfo& info);

Json StatsJson(const DaemonStats& st);

// The totals line, a blank line and the table of clients (`stats`, and the top of `top`).
std::string StatsText(const DaemonStats& st);

}  // namespace shmlease::cli
