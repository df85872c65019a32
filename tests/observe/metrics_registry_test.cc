#include "observe/metrics_registry.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "tests/observe/prometheus_parser.h"

namespace cohort::observe {
namespace {

using testing::ParseWithPrometheusClient;
using testing::SampleValue;

TEST(MetricsRegistryTest, CountersGaugesAndHistogramsParseWithPrometheusClient) {
  Registry registry;
  Family<Counter>& rejected = registry.AddCounter("cohort_updates_rejected_total", "Updates refused", {"reason"});
  rejected.WithLabels({"data_loss"}).Increment();
  rejected.WithLabels({"data_loss"}).Increment(2);
  rejected.WithLabels({"invalid_argument"}).Increment();
  registry.AddGauge("cohort_test_accuracy", "Accuracy").Get().Set(0.8125);
  Family<Histogram>& phases =
      registry.AddHistogram("cohort_round_phase_seconds", "Phase durations", {0.5, 1, 10}, {"phase"});
  phases.WithLabels({"training"}).Observe(0.5);  // on a bound: counted in it ("le")
  phases.WithLabels({"training"}).Observe(3);
  phases.WithLabels({"training"}).Observe(100);

  absl::StatusOr<nlohmann::json> parsed = ParseWithPrometheusClient(registry.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << registry.Render();
  const nlohmann::json& f = *parsed;
  EXPECT_EQ(f["cohort_updates_rejected"]["type"], "counter");
  EXPECT_EQ(SampleValue(f, "cohort_updates_rejected", "cohort_updates_rejected_total", {{"reason", "data_loss"}}), 3);
  EXPECT_EQ(SampleValue(f, "cohort_updates_rejected", "cohort_updates_rejected_total", {{"reason", "invalid_argument"}}),
            1);
  EXPECT_EQ(f["cohort_test_accuracy"]["type"], "gauge");
  EXPECT_EQ(SampleValue(f, "cohort_test_accuracy", "cohort_test_accuracy"), 0.8125);
  EXPECT_EQ(f["cohort_round_phase_seconds"]["type"], "histogram");
  const auto bucket = [&](const char* le) {
    return SampleValue(f, "cohort_round_phase_seconds", "cohort_round_phase_seconds_bucket",
                       {{"phase", "training"}, {"le", le}});
  };
  EXPECT_EQ(bucket("0.5"), 1);
  EXPECT_EQ(bucket("1"), 1);
  EXPECT_EQ(bucket("10"), 2);
  EXPECT_EQ(bucket("+Inf"), 3);
  EXPECT_EQ(SampleValue(f, "cohort_round_phase_seconds", "cohort_round_phase_seconds_count", {{"phase", "training"}}), 3);
  EXPECT_EQ(SampleValue(f, "cohort_round_phase_seconds", "cohort_round_phase_seconds_sum", {{"phase", "training"}}),
            103.5);
}

TEST(MetricsRegistryTest, HostileLabelValuesAndHelpAreEscaped) {
  Registry registry;
  registry.AddGauge("cohort_epsilon_spent", "Line one\nline two \\ end", {"site"})
      .WithLabels({"evil\"} 1\n# TYPE x counter\\"})
      .Set(2.5);
  absl::StatusOr<nlohmann::json> parsed = ParseWithPrometheusClient(registry.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << registry.Render();
  EXPECT_EQ(parsed->size(), 1u) << parsed->dump();
  EXPECT_EQ((*parsed)["cohort_epsilon_spent"]["help"], "Line one\nline two \\ end");
  EXPECT_EQ(SampleValue(*parsed, "cohort_epsilon_spent", "cohort_epsilon_spent",
                        {{"site", "evil\"} 1\n# TYPE x counter\\"}}),
            2.5);
}

TEST(MetricsRegistryTest, SpecialValuesUseTheFormatsSpelling) {
  EXPECT_EQ(FormatSampleValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatSampleValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatSampleValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatSampleValue(3), "3");
  EXPECT_EQ(FormatSampleValue(0.1), "0.1");
  EXPECT_EQ(FormatSampleValue(1e300), "1e+300");
  Registry registry;
  registry.AddGauge("cohort_test_loss", "Loss").Get().Set(std::nan(""));
  absl::StatusOr<nlohmann::json> parsed = ParseWithPrometheusClient(registry.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ((*parsed)["cohort_test_loss"]["samples"][0][2], "nan");
}

TEST(MetricsRegistryTest, CounterNeverGoesDown) {
  Registry registry;
  Counter& c = registry.AddCounter("cohort_bytes_sent_total", "Bytes").Get();
  c.Increment(5);
  c.Increment(-3);
  c.Increment(std::nan(""));
  EXPECT_EQ(c.value(), 5);
}

TEST(MetricsRegistryTest, ConcurrentUpdatesAreNotLost) {
  Registry registry;
  Counter& counter = registry.AddCounter("cohort_updates_accepted_total", "n").Get();
  Histogram& histogram = registry.AddHistogram("cohort_x_seconds", "h", DurationBuckets()).Get();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        counter.Increment();
        histogram.Observe(0.5);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(counter.value(), 40000);
  const Histogram::Snapshot s = histogram.Read();
  EXPECT_EQ(s.count, 40000u);
  EXPECT_DOUBLE_EQ(s.sum, 20000);
}

TEST(MetricsRegistryTest, AFamilyWithoutSeriesStillDeclaresItself) {
  Registry registry;
  registry.AddCounter("cohort_rounds_retried_total", "Retries");
  absl::StatusOr<nlohmann::json> parsed = ParseWithPrometheusClient(registry.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ((*parsed)["cohort_rounds_retried"]["type"], "counter");
}

TEST(MetricsRegistryDeathTest, MalformedOrRepeatedNamesAbort) {
  EXPECT_DEATH({ Registry r; r.AddCounter("cohort_rounds", "no _total"); }, "must end in _total");
  EXPECT_DEATH({ Registry r; r.AddGauge("1bad", "x"); }, "invalid metric name");
  EXPECT_DEATH({ Registry r; r.AddHistogram("cohort_h", "x", {1}, {"le"}); }, "invalid or repeated label");
  EXPECT_DEATH(
      {
        Registry r;
        r.AddGauge("cohort_g", "x");
        r.AddGauge("cohort_g", "y");
      },
      "registered twice");
  EXPECT_DEATH({ Registry r; r.AddGauge("cohort_g", "x", {"site"}).Get(); }, "expected 1 label value");
}

}  // namespace
}  // namespace cohort::observe
