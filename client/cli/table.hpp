// The one table renderer of the CLI: `ls`, `stat`, `stats` and `top` print through it, and their
// output is published (docs/CLI.md, tests/integration/cli_test.cpp), so it must not change by a
// byte.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace shmlease::cli {

enum class Align { kLeft, kRight };

struct Column {
  Align align = Align::kLeft;
  size_t width = 0;  // at least this wide (fmt's width: a longer cell is never cut)
};

struct TableStyle {
  std::string_view separator;  // between two cells of a line
  bool fit = false;            // widen each column to its widest cell, else keep Column::width
  bool pad_last = false;       // pad the last column too (else it ends the line as it is)
};

// Rows of cells, the header (if any) being the first row added. Each row is one line.
class Table {
 public:
  Table(std::vector<Column> columns, TableStyle style);

  // `cells` has one cell per column.
  void AddRow(std::vector<std::string> cells);

  // Every row, each ended by "\n".
  std::string Render() const;

 private:
  std::vector<Column> columns_;
  TableStyle style_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace shmlease::cli
