#pragma once
// Line plots as standalone SVG files, for papers and tickets: the report's curves as
// static images that need no browser. Plain polylines on linear axes with ticks, a title
// and a legend; a missing value (a round a site skipped) breaks its line.

#include <optional>
#include <string>
#include <vector>

namespace cohort::cli {

struct PlotSeries {
  std::string name;
  std::string color;                   // an SVG color: "#2563eb"
  std::vector<std::optional<double>> y;  // one per x; nullopt where there is none
  bool dashed = false;
};

struct LinePlot {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<double> x;
  std::vector<PlotSeries> series;
};

// The SVG document. Each series is one <g class="series" data-name="NAME"> holding a
// <circle> per point it has and the <polyline>s between them; text is XML-escaped.
std::string RenderLinePlotSvg(const LinePlot& plot);

}  // namespace cohort::cli
