#include "csv_plot.h"

#include <cstdio>

namespace cachet::bench {

bool PlotCsv(const std::string& csv, const std::string& png, const PlotSpec& spec, std::string* why) {
  std::string script = "set terminal png size 1000,500; set output '" + png +
                       "'; set datafile separator ','; set key autotitle columnhead; set xlabel 'second'; "
                       "set ylabel '" +
                       spec.left_label + "'; set ytics nomirror; ";
  if (!spec.right_label.empty()) script += "set y2label '" + spec.right_label + "'; set y2tics; ";
  if (spec.left_log) script += "set logscale y; ";
  if (spec.right_from_zero) script += "set y2range [0:*]; ";
  script += "plot ";
  for (size_t i = 0; i < spec.lines.size(); ++i) {
    const PlotLine& line = spec.lines[i];
    script += (i == 0 ? "'" + csv + "'" : std::string(", ''")) + " using 1:" + std::to_string(line.column) +
              (line.right_axis ? " axes x1y2" : "") + " with lines title '" + line.title + "'";
  }
  const std::string command = "gnuplot -e \"" + script + "\" 2>&1";
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) {
    *why = "cannot run gnuplot";
    return false;
  }
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  const int status = pclose(p);
  if (status != 0) {
    *why = out.empty() ? "gnuplot failed (is it installed? apt-get install gnuplot-nox)" : out;
    return false;
  }
  return true;
}

}  // namespace cachet::bench
