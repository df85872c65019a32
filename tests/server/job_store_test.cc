// OUT/job.db: what it keeps survives a reopen, a database of another job is refused, and
// the runtime parameters it replays move only settable fields.
#include "server/job_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>

#include "server/runtime_parameters.h"

namespace cohort::server {
namespace {

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-store-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(JobStoreTest, ChangesAndEnrollmentSurviveAReopen) {
  {
    auto store = JobStore::Open(dir_ / "job.db", "mnist");
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->AddParameterChange("training_config.learning_rate", 0.05, "alice", 3).ok());
    absl::StatusOr<int64_t> dropped = (*store)->AddParameterChange("federation.min_clients", 9, "alice", 4);
    ASSERT_TRUE(dropped.ok());
    ASSERT_TRUE((*store)->AddParameterChange("training_config.learning_rate", 0.07, "bob", 5).ok());
    ASSERT_TRUE((*store)->DropParameterChanges({*dropped}).ok());
    ASSERT_TRUE((*store)->SetParticipant("hospital-b", "enrolled", 6).ok());
    ASSERT_TRUE((*store)->SetParticipant("hospital-b", "revoked", 7).ok());
    ASSERT_TRUE((*store)->RecordRound(1, 1, "ab").ok());
  }
  auto store = JobStore::Open(dir_ / "job.db", "mnist");
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::vector<JobStore::ParameterChangeRow>> changes = (*store)->ParameterChanges();
  ASSERT_TRUE(changes.ok());
  ASSERT_EQ(changes->size(), 2u);
  EXPECT_EQ((*changes)[0].value, 0.05);
  EXPECT_EQ((*changes)[1].value, 0.07);  // in the order they were made
  absl::StatusOr<std::vector<JobStore::ParticipantRow>> participants = (*store)->Participants();
  ASSERT_TRUE(participants.ok());
  ASSERT_EQ(participants->size(), 1u);
  EXPECT_EQ((*participants)[0].state, "revoked");
  EXPECT_EQ(*(*store)->LastRound(), 1u);
}

TEST_F(JobStoreTest, ADatabaseOfAnotherJobIsRefused) {
  ASSERT_TRUE(JobStore::Open(dir_ / "job.db", "mnist").ok());
  absl::StatusOr<std::unique_ptr<JobStore>> other = JobStore::Open(dir_ / "job.db", "cifar");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(other.status().message().find("belongs to job \"mnist\""), std::string::npos) << other.status();
}

TEST_F(JobStoreTest, AFileThatIsNotADatabaseIsRefused) {
  std::ofstream(dir_ / "job.db") << "not sqlite at all, just some text that is long enough to have a header";
  EXPECT_FALSE(JobStore::Open(dir_ / "job.db", "mnist").ok());
}

TEST(RuntimeParameters, OnlySettableKeysMoveAndEachIsInTheConfiguration) {
  core::JobConfig config;
  config.privacy.mechanism = "client_dp";
  config.privacy.target_epsilon = 3;
  const nlohmann::json json = core::ToJson(config);
  for (const core::SettableParameter& p : core::SettableParameters()) {
    const std::string key(p.key);
    EXPECT_FALSE(ParameterValueOf(config, key).is_null()) << key << " is in the table but not in the config";
    EXPECT_EQ(*ResolveSettableKey(config, key), key);
  }
  absl::StatusOr<core::JobConfig> changed = WithChanges(config, std::vector<ParameterValue>{
                                                                    {"training_config.learning_rate", 0.5},
                                                                    {"federation.max_weight_share", 1.0},
                                                                    {"privacy.clip_norm", 2.0}});
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_EQ(changed->training.learning_rate, 0.5);
  EXPECT_EQ(changed->federation.max_weight_share, 1.0);
  EXPECT_EQ(changed->privacy.clip_norm, 2.0);
  EXPECT_EQ(WithChanges(config, std::vector<ParameterValue>{{"federation.chunk_bytes", 8192}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  const absl::StatusOr<std::string> fixed = ResolveSettableKey(config, "threads");
  EXPECT_NE(fixed.status().message().find("training_config.threads is fixed"), std::string::npos) << fixed.status();
  EXPECT_EQ(*ResolveSettableKey(config, "max_weight_share"), "federation.max_weight_share");
}

}  // namespace
}  // namespace cohort::server
