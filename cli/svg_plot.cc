#include "cli/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cohort::cli {
namespace {

constexpr double kWidth = 720, kHeight = 420;
constexpr double kLeft = 70, kRight = 200, kTop = 40, kBottom = 60;  // margins; the legend sits right

std::string Escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // XML 1.0 forbids most control characters even escaped.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n') out += c;
    }
  }
  return out;
}

// About `target` round steps (1, 2 or 5 times a power of ten) covering [lo, hi].
double NiceStep(double lo, double hi, int target) {
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * magnitude >= raw) return m * magnitude;
  }
  return 10 * magnitude;
}

std::string Tick(double v) { return absl::StrFormat("%g", std::abs(v) < 1e-12 ? 0.0 : v); }

}  // namespace

std::string RenderLinePlotSvg(const LinePlot& plot) {
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  for (const double x : plot.x) x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x);
  double y_lo = std::numeric_limits<double>::infinity(), y_hi = -y_lo;
  for (const PlotSeries& s : plot.series) {
    for (const std::optional<double>& y : s.y) {
      if (y && std::isfinite(*y)) y_lo = std::min(y_lo, *y), y_hi = std::max(y_hi, *y);
    }
  }
  if (!std::isfinite(x_lo)) x_lo = 0, x_hi = 1;
  if (!std::isfinite(y_lo)) y_lo = 0, y_hi = 1;
  if (x_hi - x_lo < 1) x_lo -= 0.5, x_hi += 0.5;  // one round: still a readable axis
  if (y_hi - y_lo < 1e-9) y_lo -= 0.5, y_hi += 0.5;
  const double y_step = NiceStep(y_lo, y_hi, 5);
  y_lo = std::floor(y_lo / y_step) * y_step;
  y_hi = std::ceil(y_hi / y_step) * y_step;
  const double x_step = std::max(1.0, NiceStep(x_lo, x_hi, 8));

  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  auto px = [&](double x) { return kLeft + (x - x_lo) / (x_hi - x_lo) * plot_w; };
  auto py = [&](double y) { return kTop + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h; };

  std::string svg = absl::StrFormat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
      "font-family=\"DejaVu Sans, sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n"
      "<text x=\"%g\" y=\"24\" font-size=\"16\" font-weight=\"bold\">%s</text>\n",
      kWidth, kHeight, kWidth, kHeight, kLeft, Escape(plot.title));
  // Grid and ticks.
  for (double y = y_lo; y <= y_hi + y_step / 2; y += y_step) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%g\" y1=\"%.2f\" x2=\"%g\" y2=\"%.2f\" stroke=\"#e5e7eb\"/>"
                          "<text x=\"%g\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n",
                          kLeft, py(y), kLeft + plot_w, py(y), kLeft - 6, py(y) + 4, Tick(y));
  }
  for (double x = std::ceil(x_lo / x_step) * x_step; x <= x_hi + 1e-9; x += x_step) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.2f\" y1=\"%g\" x2=\"%.2f\" y2=\"%g\" stroke=\"#e5e7eb\"/>"
                          "<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\">%s</text>\n",
                          px(x), kTop, px(x), kTop + plot_h, px(x), kTop + plot_h + 18, Tick(x));
  }
  absl::StrAppendFormat(&svg,
                        "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#6b7280\"/>\n"
                        "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n"
                        "<text transform=\"translate(16 %g) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
                        kLeft, kTop, plot_w, plot_h, kLeft + plot_w / 2, kHeight - 16, Escape(plot.x_label),
                        kTop + plot_h / 2, Escape(plot.y_label));

  // Series: circles at the points, polylines through consecutive ones.
  double legend_y = kTop + 8;
  for (const PlotSeries& s : plot.series) {
    const std::string color = Escape(s.color);
    const std::string dash = s.dashed ? " stroke-dasharray=\"6 4\"" : "";
    absl::StrAppendFormat(&svg, "<g class=\"series\" data-name=\"%s\">\n", Escape(s.name));
    std::string run;
    auto flush = [&] {
      if (!run.empty()) {
        absl::StrAppendFormat(&svg, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"%s\"/>\n",
                              color, dash, run);
      }
      run.clear();
    };
    for (std::size_t i = 0; i < plot.x.size() && i < s.y.size(); ++i) {
      if (!s.y[i] || !std::isfinite(*s.y[i])) {
        flush();
        continue;
      }
      absl::StrAppendFormat(&run, "%s%.2f,%.2f", run.empty() ? "" : " ", px(plot.x[i]), py(*s.y[i]));
      absl::StrAppendFormat(&svg, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\"/>\n", px(plot.x[i]),
                            py(*s.y[i]), color);
    }
    flush();
    svg += "</g>\n";
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"2\"%s/>"
                          "<text x=\"%g\" y=\"%g\">%s</text>\n",
                          kLeft + plot_w + 12, legend_y, kLeft + plot_w + 36, legend_y, color, dash,
                          kLeft + plot_w + 42, legend_y + 4, Escape(s.name));
    legend_y += 18;
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace cohort::cli
