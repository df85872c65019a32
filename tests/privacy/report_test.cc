#include "privacy/report.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "privacy/rdp_accountant.h"

namespace cohort::privacy {
namespace {

const EpsilonQuery kMnist{256.0 / 60000, 1.1, 14063, 1e-5};

TEST(ReportTest, EpsilonTextGivesEpsilonAndTheBestOrder) {
  auto text = EpsilonReport(kMnist, /*json=*/false);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "epsilon = 2.5967 at delta = 1e-05 (best RDP order 8.1) for 14063 "
            "steps at sampling rate 0.00426667 and noise "
            "multiplier 1.1\n");
}

TEST(ReportTest, EpsilonJsonCarriesTheExactValues) {
  auto text = EpsilonReport(kMnist, /*json=*/true);
  ASSERT_TRUE(text.ok());
  ASSERT_EQ(text->back(), '\n');
  const auto json = nlohmann::json::parse(*text);
  EXPECT_EQ(json["epsilon"].get<double>(),
            ComputeEpsilon(256.0 / 60000, 1.1, 14063, 1e-5)->epsilon);
  EXPECT_EQ(json["best_order"].get<double>(), 8.1);
  EXPECT_EQ(json["delta"].get<double>(), 1e-5);
  EXPECT_EQ(json["steps"].get<int64_t>(), 14063);
  EXPECT_EQ(json["sampling_rate"].get<double>(), 256.0 / 60000);
  EXPECT_EQ(json["noise_multiplier"].get<double>(), 1.1);
}

TEST(ReportTest, NoiseJsonGivesASigmaThatMeetsTheTarget) {
  auto text = NoiseReport({3.0, 256.0 / 60000, 14063, 1e-5}, /*json=*/true);
  ASSERT_TRUE(text.ok()) << text.status();
  const auto json = nlohmann::json::parse(*text);
  const double sigma = json["noise_multiplier"].get<double>();
  EXPECT_GT(sigma, 0.9);
  EXPECT_LT(sigma, 1.1);
  EXPECT_LE(json["epsilon"].get<double>(), 3.0);
  EXPECT_EQ(json["epsilon"].get<double>(),
            ComputeEpsilon(256.0 / 60000, sigma, 14063, 1e-5)->epsilon);
  EXPECT_EQ(json["relative_tolerance"].get<double>(), kNoiseRelativeTolerance);
}

TEST(ReportTest, NoiseTextGivesTheMultiplierAndItsEpsilon) {
  auto text = NoiseReport({1.0, 0.01, 10000, 1e-5}, /*json=*/false);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->rfind("noise multiplier = 4.12", 0), 0u) << *text;
  EXPECT_NE(text->find("<= 1 at delta = 1e-05"), std::string::npos) << *text;
}

TEST(ReportTest, BadInputNamesTheFlag) {
  auto expect_invalid = [](const absl::StatusOr<std::string>& result,
                           const std::string& message) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(result.status().message()), message);
  };
  expect_invalid(EpsilonReport({0, 1.1, 10, 1e-5}, false),
                 "--sampling-rate: expected a number in (0, 1], got 0");
  expect_invalid(EpsilonReport({0.1, -1, 10, 1e-5}, false),
                 "--noise-multiplier: expected a number > 0, got -1");
  expect_invalid(EpsilonReport({0.1, 1, 0, 1e-5}, false),
                 "--steps: expected an integer >= 1, got 0");
  expect_invalid(EpsilonReport({0.1, 1, 10, 1.0}, false),
                 "--delta: expected a number in (0, 1), got 1");
  expect_invalid(NoiseReport({-1, 0.1, 10, 1e-5}, true),
                 "--target-epsilon: expected a number > 0, got -1");
}

TEST(ReportTest, AnUnreachableTargetIsOutOfRangeAndNamesTheFlag) {
  auto result = NoiseReport({1e-4, 1.0, 1000, 1e-5}, false);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(std::string(result.status().message()).rfind("--target-epsilon: 0.0001", 0),
            0u)
      << result.status();
}

}  // namespace
}  // namespace cohort::privacy
