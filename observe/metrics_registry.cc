#include "observe/metrics_registry.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <type_traits>

namespace cohort::observe {
namespace {

// A name or a label set fixed in code that breaks the format: a bug, not an input error.
[[noreturn]] void Misuse(const std::string& what) {
  std::fprintf(stderr, "observe::Registry: %s\n", what.c_str());
  std::abort();
}

bool ValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

std::string EscapeHelp(const std::string& help) {
  std::string out;
  for (const char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// {a="x",b="y"} for the family's label names and a series' values, plus an optional
// extra label (a histogram bucket's "le").
std::string LabelSet(const std::vector<std::string>& names, const std::vector<std::string>& values,
                     const std::string& extra_name = "", const std::string& extra_value = "") {
  if (names.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    out += names[i] + "=\"" + EscapeLabelValue(values[i]) + "\"";
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out += ',';
    out += extra_name + "=\"" + EscapeLabelValue(extra_value) + "\"";
  }
  return out + "}";
}

void Header(std::string& out, const std::string& name, const std::string& help, const char* type) {
  out += "# HELP " + name + " " + EscapeHelp(help) + "\n";
  out += "# TYPE " + name + " " + type + "\n";
}

void AddDouble(std::atomic<double>& target, double by) { target.fetch_add(by, std::memory_order_relaxed); }

}  // namespace

std::string FormatSampleValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  const std::to_chars_result r = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, r.ptr);
}

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Counter::Increment(double by) {
  // A counter that went down would read as a process restart to Prometheus' rate().
  if (!(by >= 0)) return;
  AddDouble(value_, by);
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1])) {
      Misuse("histogram bounds must be finite and strictly increasing");
    }
  }
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;  // le: the bound includes its value
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  AddDouble(sum_, value);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.bounds = bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  // Read as one: the +Inf bucket is the count, so a scrape never sees them disagree.
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> DurationBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200};
}

template <typename Series>
Series& Family<Series>::WithLabels(const std::vector<std::string>& label_values) {
  if (label_values.size() != label_names_.size()) {
    Misuse(name_ + ": expected " + std::to_string(label_names_.size()) + " label value(s), got " +
           std::to_string(label_values.size()));
  }
  std::lock_guard lock(mu_);
  std::unique_ptr<Series>& series = series_[label_values];
  if (!series) {
    if constexpr (std::is_same_v<Series, Histogram>) {
      series = std::make_unique<Histogram>(bounds_);
    } else {
      series = std::make_unique<Series>();
    }
  }
  return *series;
}

template <>
void Family<Counter>::Render(std::string& out) const {
  Header(out, name_, help_, "counter");
  std::lock_guard lock(mu_);
  for (const auto& [values, series] : series_) {
    out += name_ + LabelSet(label_names_, values) + " " + FormatSampleValue(series->value()) + "\n";
  }
}

template <>
void Family<Gauge>::Render(std::string& out) const {
  Header(out, name_, help_, "gauge");
  std::lock_guard lock(mu_);
  for (const auto& [values, series] : series_) {
    out += name_ + LabelSet(label_names_, values) + " " + FormatSampleValue(series->value()) + "\n";
  }
}

template <>
void Family<Histogram>::Render(std::string& out) const {
  Header(out, name_, help_, "histogram");
  std::lock_guard lock(mu_);
  for (const auto& [values, series] : series_) {
    const Histogram::Snapshot s = series->Read();
    for (size_t i = 0; i < s.bounds.size(); ++i) {
      out += name_ + "_bucket" + LabelSet(label_names_, values, "le", FormatSampleValue(s.bounds[i])) + " " +
             std::to_string(s.cumulative[i]) + "\n";
    }
    out += name_ + "_bucket" + LabelSet(label_names_, values, "le", "+Inf") + " " + std::to_string(s.count) + "\n";
    out += name_ + "_sum" + LabelSet(label_names_, values) + " " + FormatSampleValue(s.sum) + "\n";
    out += name_ + "_count" + LabelSet(label_names_, values) + " " + std::to_string(s.count) + "\n";
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

void Registry::CheckNew(const std::string& name, const std::vector<std::string>& label_names, MetricType type) {
  if (!ValidName(name, /*allow_colon=*/true)) Misuse("invalid metric name \"" + name + "\"");
  if (type == MetricType::kCounter && !name.ends_with("_total")) {
    Misuse("counter \"" + name + "\" must end in _total");
  }
  std::set<std::string> seen;
  for (const std::string& label : label_names) {
    if (!ValidName(label, /*allow_colon=*/false) || label.starts_with("__") ||
        (type == MetricType::kHistogram && label == "le") || !seen.insert(label).second) {
      Misuse(name + ": invalid or repeated label name \"" + label + "\"");
    }
  }
  for (const Entry& entry : order_) {
    const std::string& existing =
        entry.type == MetricType::kCounter ? static_cast<const Family<Counter>*>(entry.family)->name()
        : entry.type == MetricType::kGauge ? static_cast<const Family<Gauge>*>(entry.family)->name()
                                           : static_cast<const Family<Histogram>*>(entry.family)->name();
    if (existing == name) Misuse("metric \"" + name + "\" registered twice");
  }
}

Family<Counter>& Registry::AddCounter(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  CheckNew(name, label_names, MetricType::kCounter);
  counters_.push_back(std::unique_ptr<Family<Counter>>(new Family<Counter>(name, help, std::move(label_names), {})));
  order_.push_back({MetricType::kCounter, counters_.back().get()});
  return *counters_.back();
}

Family<Gauge>& Registry::AddGauge(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  CheckNew(name, label_names, MetricType::kGauge);
  gauges_.push_back(std::unique_ptr<Family<Gauge>>(new Family<Gauge>(name, help, std::move(label_names), {})));
  order_.push_back({MetricType::kGauge, gauges_.back().get()});
  return *gauges_.back();
}

Family<Histogram>& Registry::AddHistogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                                          std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  CheckNew(name, label_names, MetricType::kHistogram);
  Histogram check(bounds);  // aborts on bad bounds now, not at the first series
  histograms_.push_back(
      std::unique_ptr<Family<Histogram>>(new Family<Histogram>(name, help, std::move(label_names), std::move(bounds))));
  order_.push_back({MetricType::kHistogram, histograms_.back().get()});
  return *histograms_.back();
}

std::string Registry::Render() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const Entry& entry : order_) {
    switch (entry.type) {
      case MetricType::kCounter: static_cast<const Family<Counter>*>(entry.family)->Render(out); break;
      case MetricType::kGauge: static_cast<const Family<Gauge>*>(entry.family)->Render(out); break;
      case MetricType::kHistogram: static_cast<const Family<Histogram>*>(entry.family)->Render(out); break;
    }
  }
  return out;
}

}  // namespace cohort::observe
