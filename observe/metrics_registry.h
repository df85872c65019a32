#pragma once
// A small metrics registry: counters, gauges and histograms, each a family of series told
// apart by their label values, rendered in the Prometheus text exposition format 0.0.4
// (docs/operability.md lists the families the server and the clients export).
//
// Thread-safe. A series is updated with atomics and never moves once made, so a hot path
// looks its series up once and keeps the reference; a family's mutex is taken only to
// find or make a series and to render. Names are fixed in code: a malformed or repeated
// name is a bug, and registering one aborts with the name.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cohort::observe {

// Only goes up (by a non-negative amount); resets when the process restarts.
class Counter {
 public:
  void Increment(double by = 1);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Goes up and down; Set replaces the value.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double by) { value_.fetch_add(by, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into cumulative buckets by upper bound (the "+Inf" bucket is
// implicit), with their sum and count.
class Histogram {
 public:
  // `bounds`: strictly increasing, finite upper bounds.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then one for +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // per bound, then +Inf; not cumulative
  std::atomic<double> sum_{0};
  std::atomic<uint64_t> count_{0};
};

// Default bounds for durations in seconds: 5 ms to about 20 minutes.
std::vector<double> DurationBuckets();

enum class MetricType { kCounter, kGauge, kHistogram };

// One metric family: a name, its help, its label names, and one series per distinct set
// of label values.
template <typename Series>
class Family {
 public:
  // The series for `label_values` (one per label name, in order), made at first use.
  // A wrong number of values is a bug and aborts.
  Series& WithLabels(const std::vector<std::string>& label_values);
  // The one series of a family without labels.
  Series& Get() { return WithLabels({}); }

  const std::string& name() const { return name_; }

 private:
  friend class Registry;
  Family(std::string name, std::string help, std::vector<std::string> label_names, std::vector<double> bounds)
      : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)),
        bounds_(std::move(bounds)) {}
  void Render(std::string& out) const;

  const std::string name_, help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Series>> series_;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Names follow Prometheus conventions ([a-zA-Z_:][a-zA-Z0-9_:]*; counters end in
  // "_total", units as suffixes: "_seconds", "_bytes"); label names [a-zA-Z_][a-zA-Z0-9_]*,
  // not starting with "__" and, for histograms, not "le". The family lives as long as
  // the registry.
  Family<Counter>& AddCounter(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help, std::vector<std::string> label_names = {});
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                                  std::vector<std::string> label_names = {});

  // Every family, in the order registered, in the text format 0.0.4 (Content-Type
  // kTextFormatContentType). A family with no series yet shows its HELP and TYPE only.
  std::string Render() const;

 private:
  void CheckNew(const std::string& name, const std::vector<std::string>& label_names, MetricType type);

  mutable std::mutex mu_;  // guards the lists, not the values
  struct Entry {
    MetricType type;
    const void* family;
  };
  std::vector<Entry> order_;
  std::vector<std::unique_ptr<Family<Counter>>> counters_;
  std::vector<std::unique_ptr<Family<Gauge>>> gauges_;
  std::vector<std::unique_ptr<Family<Histogram>>> histograms_;
};

inline constexpr const char* kTextFormatContentType = "text/plain; version=0.0.4; charset=utf-8";

// The text format's spelling of a sample value: shortest round-trip decimal, "+Inf",
// "-Inf", "NaN".
std::string FormatSampleValue(double value);
// A label value with \ " and newline escaped, as the format requires inside quotes.
std::string EscapeLabelValue(const std::string& value);

}  // namespace cohort::observe
