// The "vertical" section of a job config (core/vertical_config.h) and job_type: strict
// parsing with errors that name the key, and a round trip through ToJson.
#include "core/vertical_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/job_config.h"

namespace cohort::core {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

json Section() {
  return json::parse(R"({
    "id_column": "patient_id", "label_party": "clinic", "epochs": 5, "eval_fraction": 0.25,
    "gradient_noise_std": 0.1, "party_timeout_s": 12.5, "chunk_bytes": 65536,
    "top_model": {"input_shape": [16], "num_classes": 2, "layers": [{"type": "linear", "out_features": 2}]},
    "parties": [
      {"name": "clinic", "bottom_model": {"input_shape": [15], "layers": [{"type": "linear", "out_features": 8}]},
       "data": {"dataset": "csv", "path": "a.csv"}},
      {"name": "lab", "bottom_model": {"input_shape": [1, 28, 14], "layers": []}}
    ]})");
}

std::string ErrorOf(const json& section) {
  absl::StatusOr<VerticalConfig> c = ParseVerticalConfig(section);
  EXPECT_FALSE(c.ok());
  return c.ok() ? "" : std::string(c.status().message());
}

TEST(VerticalConfig, ParsesEveryKey) {
  absl::StatusOr<VerticalConfig> c = ParseVerticalConfig(Section());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->id_column, "patient_id");
  EXPECT_EQ(c->label_party, "clinic");
  EXPECT_EQ(c->epochs, 5);
  EXPECT_DOUBLE_EQ(c->eval_fraction, 0.25);
  EXPECT_DOUBLE_EQ(c->gradient_noise_std, 0.1);
  EXPECT_DOUBLE_EQ(c->party_timeout_s, 12.5);
  EXPECT_EQ(c->chunk_bytes, 65536);
  ASSERT_EQ(c->parties.size(), 2u);
  EXPECT_EQ(c->parties[1].name, "lab");
  EXPECT_EQ(c->parties[1].bottom_model["input_shape"], json::parse("[1, 28, 14]"));
  EXPECT_EQ(c->parties[0].data["path"], "a.csv");
  EXPECT_TRUE(c->parties[1].data.empty());
  EXPECT_EQ(c->PartyIndex("lab"), 1);
  EXPECT_EQ(c->PartyIndex("bank"), -1);
}

TEST(VerticalConfig, RoundTripsThroughToJson) {
  absl::StatusOr<VerticalConfig> c = ParseVerticalConfig(Section());
  ASSERT_TRUE(c.ok());
  absl::StatusOr<VerticalConfig> again = ParseVerticalConfig(ToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ToJson(*again), ToJson(*c));
}

TEST(VerticalConfig, ErrorsNameTheKey) {
  json j = Section();
  j["parties"][1]["name"] = "lab/../x";
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.parties[1].name: expected 1 to 64 characters"));

  j = Section();
  j["parties"][1]["name"] = "clinic";
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.parties[1].name: party \"clinic\" is listed twice"));

  j = Section();
  j["parties"].erase(1);
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.parties: expected a list of 2 to 64 parties"));

  j = Section();
  j["label_party"] = "bank";
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.label_party: \"bank\" is not one of vertical.parties (clinic, lab)"));

  j = Section();
  j.erase("label_party");
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.label_party: missing"));

  j = Section();
  j["parties"][0]["bottom_model"].erase("input_shape");
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.parties[0].bottom_model.input_shape: missing"));

  j = Section();
  j["parties"][0]["bottom_model"]["input_shape"] = json::parse("[0]");
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.parties[0].bottom_model.input_shape: expected 1 to 8 integers"));

  j = Section();
  j["parties"][0]["bottom_model"] = "mlp";
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.parties[0].bottom_model: expected a JSON object"));

  j = Section();
  j.erase("top_model");
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.top_model: missing"));

  j = Section();
  j["parties"][0]["colour"] = "red";
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.parties[0].colour"));

  j = Section();
  j["epochs"] = 0;
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.epochs: expected an integer in [1, 100000], got 0"));

  j = Section();
  j["party_timeout_s"] = 0;
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.party_timeout_s: expected a number in (0"));

  j = Section();
  j["eval_fraction"] = 0.95;
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.eval_fraction"));

  j = Section();
  j["chunk_bytes"] = 100;
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.chunk_bytes"));

  j = Section();
  j["id_column"] = "";
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.id_column: expected a column name"));

  j = Section();
  j["shuffle"] = true;
  EXPECT_THAT(ErrorOf(j), HasSubstr("vertical.shuffle"));
}

TEST(JobType, DefaultsToHorizontalAndRefusesAVerticalSectionThere) {
  json job = {{"model_config", {{"input_shape", {4}}}}};
  absl::StatusOr<JobConfig> c = ParseJobConfig(job);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->job_type, "horizontal");
  EXPECT_EQ(ToJson(*c)["job_type"], "horizontal");
  EXPECT_FALSE(ToJson(*c).contains("vertical"));

  job["vertical"] = Section();
  c = ParseJobConfig(job);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("vertical: applies only with \"job_type\": \"vertical\""));

  c = ParseJobConfig(json{{"job_type", "diagonal"}, {"model_config", json::object()}});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("job_type: expected one of \"horizontal\", \"vertical\""));
}

TEST(JobType, AVerticalJobNeedsItsSectionButNoModelConfig) {
  absl::StatusOr<JobConfig> c = ParseJobConfig(json{{"job_type", "vertical"}});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("vertical: missing"));

  c = ParseJobConfig(json{{"job_type", "vertical"}, {"job", {{"name", "vfl"}}}, {"vertical", Section()}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->job_type, "vertical");
  EXPECT_EQ(c->vertical.label_party, "clinic");
  // The whole job round-trips, its vertical section included.
  absl::StatusOr<JobConfig> again = ParseJobConfig(ToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ToJson(*again), ToJson(*c));

  json bad = {{"job_type", "vertical"}, {"vertical", Section()}};
  bad["vertical"]["parties"][0]["name"] = "";
  c = ParseJobConfig(bad);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("vertical.parties[0].name"));
}

}  // namespace
}  // namespace cohort::core
