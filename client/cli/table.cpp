#include "table.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <utility>

namespace shmlease::cli {

Table::Table(std::vector<Column> columns, TableStyle style)
    : columns_(std::move(columns)), style_(style) {}

void Table::AddRow(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }

std::string Table::Render() const {
  std::vector<size_t> width;
  for (const Column& c : columns_) width.push_back(c.width);
  if (style_.fit) {
    // Measured in bytes, as `ls` always has (segment names are ASCII).
    for (const auto& row : rows_) {
      for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) out += style_.separator;
      if (i + 1 == row.size() && !style_.pad_last) {
        out += row[i];
      } else if (columns_[i].align == Align::kRight) {
        out += fmt::format("{:>{}}", row[i], width[i]);
      } else {
        out += fmt::format("{:<{}}", row[i], width[i]);
      }
    }
    out += "\n";
  }
  return out;
}

}  // namespace shmlease::cli
