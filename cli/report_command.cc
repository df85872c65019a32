// `cohort report`: a finished (or running) job's record as one self-contained HTML file,
// plus its curves as SVG files.
//
//   cohort report RUN_DIR [--out FILE.html] [--audit-log LOG]
//
// The HTML is the live dashboard's page (web/dashboard.html) with its stylesheets, the
// charting library and its script inlined and the data set as window.COHORT_DATA, so it
// opens from file:// with no network. Beside it, STEM-accuracy.svg, STEM-loss.svg and
// STEM-round_time.svg (STEM: the HTML file's name without .html), drawn here as polylines
// (cli/svg_plot.h). Default --out: RUN_DIR/report/report.html.
//
// Exit codes: 0 written, 1 a file could not be written, 2 bad input (no run directory,
// a malformed summary or audit log).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "cli/commands.h"
#include "cli/report_data.h"
#include "cli/svg_plot.h"
#include "observe/web_assets.h"
#include "storage/atomic_write.h"

namespace cohort::cli {
namespace {

struct ReportFlags {
  std::string run_dir;
  std::string out;
  std::string audit_log;
};

// The page with every <link rel="stylesheet" href=X> and <script src=X></script> replaced
// by X's contents, and the data set before the first script. Internal when the page names
// a file the binary does not hold: a build without web/ cannot write a report.
absl::StatusOr<std::string> InlinePage(const nlohmann::json& state) {
  const std::optional<observe::WebAsset> page = observe::FindWebAsset("dashboard.html");
  if (!page) return absl::InternalError("this cohort binary was built without web/dashboard.html");
  std::string html(page->bytes);
  auto inline_tag = [&](const std::string& open, const std::string& close, const char* element) -> absl::Status {
    for (std::size_t at = html.find(open); at != std::string::npos; at = html.find(open, at)) {
      const std::size_t name_start = at + open.size();
      const std::size_t name_end = html.find('"', name_start);
      const std::size_t tag_end = name_end == std::string::npos ? name_end : html.find(close, name_end);
      if (tag_end == std::string::npos) return absl::InternalError("web/dashboard.html: an unterminated tag");
      const std::string name = html.substr(name_start, name_end - name_start);
      const std::optional<observe::WebAsset> asset = observe::FindWebAsset(name);
      if (!asset) return absl::InternalError(absl::StrCat("web/dashboard.html names ", name, ", not in the binary"));
      // An inlined file must not end its own element early.
      if (asset->bytes.find(absl::StrCat("</", element)) != std::string_view::npos) {
        return absl::InternalError(absl::StrCat(name, " contains </", element, " and cannot be inlined"));
      }
      const std::string inlined =
          std::string("<") + element + ">\n" + std::string(asset->bytes) + "\n</" + element + ">";
      html.replace(at, tag_end + close.size() - at, inlined);
      at += inlined.size();
    }
    return absl::OkStatus();
  };
  if (absl::Status s = inline_tag("<link rel=\"stylesheet\" href=\"", ">", "style"); !s.ok()) return s;
  if (absl::Status s = inline_tag("<script src=\"", "></script>", "script"); !s.ok()) return s;
  // JSON has '<' only inside strings, where \u003c means the same: no "</script>" or "<!--"
  // in the data can end the element. dump's ensure_ascii escapes U+2028 and U+2029 too.
  const std::string data = absl::StrReplaceAll(state.dump(-1, ' ', /*ensure_ascii=*/true,
                                                          nlohmann::json::error_handler_t::replace),
                                               {{"<", "\\u003c"}});
  const std::size_t first_script = html.find("<script>");
  if (first_script == std::string::npos) return absl::InternalError("web/dashboard.html has no script");
  html.insert(first_script, absl::StrCat("<script>window.COHORT_DATA = ", data, ";</script>\n"));
  return html;
}

std::optional<double> Metric(const nlohmann::json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

constexpr const char* kPalette[] = {"#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
                                    "#ca8a04", "#db2777", "#4b5563", "#65a30d", "#7c3aed", "#0d9488"};

// The page's three charts as static plots: accuracy and loss (global, weighted over the
// sites, and each site's held-out split) and round time (total and each phase recorded).
std::vector<std::pair<std::string, LinePlot>> Plots(const nlohmann::json& state) {
  const nlohmann::json& rounds = state["summary_rounds"];
  std::vector<double> x;
  std::vector<std::string> sites;
  for (const nlohmann::json& r : rounds) {
    x.push_back(Metric(r, "round").value_or(static_cast<double>(x.size() + 1)));
    for (const nlohmann::json& c : r.value("clients", nlohmann::json::array())) {
      if (c.is_object() && c.contains("site") && c["site"].is_string() &&
          std::find(sites.begin(), sites.end(), c["site"].get<std::string>()) == sites.end()) {
        sites.push_back(c["site"].get<std::string>());
      }
    }
  }
  std::sort(sites.begin(), sites.end());
  auto series = [&](std::string name, std::string color, auto value, bool dashed = false) {
    PlotSeries s{std::move(name), std::move(color), {}, dashed};
    for (const nlohmann::json& r : rounds) s.y.push_back(value(r));
    return s;
  };
  auto round_metric = [](const char* key) { return [key](const nlohmann::json& r) { return Metric(r, key); }; };
  auto site_metric = [](const std::string& site, const char* key) {
    return [site, key](const nlohmann::json& r) -> std::optional<double> {
      for (const nlohmann::json& c : r.value("clients", nlohmann::json::array())) {
        if (c.is_object() && c.value("site", std::string()) == site) return Metric(c, key);
      }
      return std::nullopt;
    };
  };
  auto curves = [&](const char* title, const char* y_label, const char* global_key, const char* global_name,
                    const char* weighted_key, const char* weighted_name, const char* site_key, const char* site_name) {
    LinePlot plot{title, "round", y_label, x, {}};
    PlotSeries global = series(global_name, "#111827", round_metric(global_key));
    if (std::any_of(global.y.begin(), global.y.end(), [](const auto& y) { return y.has_value(); })) {
      plot.series.push_back(std::move(global));
    }
    plot.series.push_back(series(weighted_name, "#6b7280", round_metric(weighted_key)));
    for (std::size_t i = 0; i < sites.size(); ++i) {
      plot.series.push_back(series(absl::StrCat(sites[i], " ", site_name), kPalette[i % std::size(kPalette)],
                                   site_metric(sites[i], site_key), /*dashed=*/true));
    }
    return plot;
  };
  LinePlot time{"Round time", "round", "seconds", x, {}};
  time.series.push_back(series("round", "#111827", [](const nlohmann::json& r) {
    std::optional<double> s = Metric(r, "elapsed_seconds");
    return s ? s : Metric(r, "wall_seconds");
  }));
  const char* phase_colors[] = {"#9ca3af", "#2563eb", "#f59e0b", "#16a34a", "#9333ea", "#dc2626"};
  const char* phases[] = {"waiting", "training", "upload", "fold", "evaluation", "checkpoint"};
  for (std::size_t i = 0; i < std::size(phases); ++i) {
    PlotSeries s = series(phases[i], phase_colors[i], [phase = phases[i]](const nlohmann::json& r) {
      const auto it = r.find("phase_seconds");
      return it != r.end() && it->is_object() ? Metric(*it, phase) : std::nullopt;
    });
    if (std::any_of(s.y.begin(), s.y.end(), [](const auto& y) { return y.has_value(); })) {
      time.series.push_back(std::move(s));
    }
  }
  return {{"accuracy", curves("Accuracy per round", "accuracy", "test_accuracy", "global test accuracy",
                              "client_eval_accuracy", "client eval accuracy (weighted)", "eval_accuracy",
                              "eval accuracy")},
          {"loss", curves("Loss per round", "loss", "test_loss", "global test loss", "train_loss",
                          "train loss (weighted)", "eval_loss", "eval loss")},
          {"round_time", std::move(time)}};
}

int RunReport(const ReportFlags& flags) {
  absl::StatusOr<nlohmann::json> state = LoadReportState({flags.run_dir, flags.audit_log});
  if (!state.ok()) {
    spdlog::error("cohort report: {}", std::string(state.status().message()));
    return 2;
  }
  absl::StatusOr<std::string> html = InlinePage(*state);
  if (!html.ok()) {
    spdlog::error("cohort report: {}", std::string(html.status().message()));
    return 1;
  }
  const std::filesystem::path out =
      flags.out.empty() ? std::filesystem::path(flags.run_dir) / "report" / "report.html"
                        : std::filesystem::path(flags.out);
  std::error_code ec;
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path(), ec);
  if (absl::Status s = storage::WriteFileAtomically(out, *html); !s.ok()) {
    spdlog::error("cohort report: {}", std::string(s.message()));
    return 1;
  }
  std::printf("report: %s (%zu rounds)\n", out.c_str(), (*state)["summary_rounds"].size());
  for (const auto& [name, plot] : Plots(*state)) {
    const std::filesystem::path svg = out.parent_path() / absl::StrCat(out.stem().string(), "-", name, ".svg");
    if (absl::Status s = storage::WriteFileAtomically(svg, RenderLinePlotSvg(plot)); !s.ok()) {
      spdlog::error("cohort report: {}", std::string(s.message()));
      return 1;
    }
    std::printf("plot:   %s\n", svg.c_str());
  }
  return 0;
}

}  // namespace

void AddReportCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ReportFlags>();
  CLI::App* cmd = app.add_subcommand(
      "report", "Write a job's record (summary.json and audit log) as one self-contained HTML file and SVG plots");
  cmd->add_option("RUN_DIR", flags->run_dir, "The job's output directory (--out of cohort run or cohort server)")
      ->required();
  cmd->add_option("--out", flags->out, "The HTML file (default RUN_DIR/report/report.html); the SVGs go beside it");
  cmd->add_option("--audit-log", flags->audit_log, "The job's audit log (default RUN_DIR/audit.log)");
  cmd->callback([flags, exit_code] { *exit_code = RunReport(*flags); });
}

}  // namespace cohort::cli
