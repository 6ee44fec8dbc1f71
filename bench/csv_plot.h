// PlotCsv: draws columns of a per-second CSV file (a header row, then one
// row per second, the second in column 1) as lines in a PNG through
// gnuplot (Debian's gnuplot-nox), for the load tools' --png.
#pragma once

#include <string>
#include <vector>

namespace cachet::bench {

struct PlotLine {
  int column = 2;     // 1-based column of the CSV
  std::string title;  // the key's label
  bool right_axis = false;
};

struct PlotSpec {
  std::string left_label, right_label;
  bool left_log = false;         // a log scale on the left axis
  bool right_from_zero = false;  // the right axis starts at 0
  std::vector<PlotLine> lines;
};

// False, with gnuplot's output or a hint in `*why`, if the plot was not made.
bool PlotCsv(const std::string& csv, const std::string& png, const PlotSpec& spec, std::string* why);

}  // namespace cachet::bench
