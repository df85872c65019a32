// A crash between a round's checkpoint and its record: the server resumed on the same
// --out completes the record, and every model version is published exactly once on the
// audit log (with the checkpoint's model hash), however many times it resumes.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <map>

#include "audit/entry.h"
#include "audit/reader.h"
#include "audit/writer.h"
#include "core/checkpoint.h"
#include "crypto/signing.h"
#include "storage/sha256.h"
#include "tests/server/served_job.h"

namespace cohort::server {
namespace {

class ExactlyOnceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-exactly-once-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    crypto::SigningKey key = crypto::SigningKey::Generate();
    public_key_ = key.public_key();
    auto writer = audit::Writer::Open(dir_ / "audit.log", std::move(key));
    ASSERT_TRUE(writer.ok()) << writer.status();
    audit_ = std::move(*writer);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  JobOptions Options() {
    JobOptions options;
    options.config = testing::SmallJob(/*rounds=*/2, /*per_round=*/1, /*min_clients=*/1, 30);
    options.config.name = "exactly-once";
    options.initial_model = core::ParameterSet(testing::SmallManifest());
    options.out_dir = dir_ / "out";
    options.audit = audit_.get();
    return options;
  }

  std::map<uint64_t, std::vector<std::string>> Publishes() {
    absl::StatusOr<audit::ReadResult> read = audit::ReadEntries(dir_ / "audit.log");
    EXPECT_TRUE(read.ok()) << read.status();
    absl::StatusOr<audit::ChainVerification> verified = audit::VerifyAuditChain(dir_ / "audit.log", *public_key_);
    EXPECT_TRUE(verified.ok() && !verified->failure.has_value());
    std::map<uint64_t, std::vector<std::string>> by_version;
    if (!read.ok()) return by_version;
    for (const audit::Entry& e : read->entries) {
      if (e.action == audit::action::kModelPublish) {
        by_version[e.new_value["model_version"].get<uint64_t>()].push_back(e.new_value["sha256"].get<std::string>());
      }
    }
    return by_version;
  }

  std::filesystem::path dir_;
  std::optional<crypto::SigningPublicKey> public_key_;
  std::unique_ptr<audit::Writer> audit_;
};

TEST_F(ExactlyOnceTest, ACrashAfterTheCheckpointLeavesOnePublishPerVersionAfterResume) {
  {
    JobOptions options = Options();
    // The "crash": round 1 is checkpointed, and the process stops before its record.
    options.after_checkpoint = [](uint64_t round) {
      return round == 1 ? absl::AbortedError("injected crash after the checkpoint of round 1") : absl::OkStatus();
    };
    auto job = FederatedJob::Create(std::move(options));
    ASSERT_TRUE(job.ok()) << job.status();
    std::future<absl::Status> serving;
    const int port = testing::ServeOnLoopback(**job, nullptr, 0.2, &serving);
    wire::FederationClient client(wire::Connection{"127.0.0.1:" + std::to_string(port)});
    absl::StatusOr<wire::Session> session = client.Join("hospital-a", 10);
    ASSERT_TRUE(session.ok()) << session.status();
    core::ParameterSet model;
    wire::PullOptions pull;
    pull.wait = std::chrono::milliseconds(10000);
    absl::StatusOr<wire::PulledTask> task = client.PullTask(*session, &model, pull);
    ASSERT_TRUE(task.ok()) << task.status();
    ASSERT_EQ(task->header.kind(), v1::TaskHeader::TRAIN);
    core::ParameterSet delta(testing::SmallManifest());
    for (float& v : delta.floats()) v = 0.25f;
    ASSERT_TRUE(client.PushUpdate(*session, wire::UpdateInfoFor(task->header, 10), delta).ok());
    const absl::Status ended = serving.get();
    EXPECT_FALSE(ended.ok());
    EXPECT_NE(ended.message().find("injected crash"), std::string_view::npos) << ended;
  }
  ASSERT_TRUE(std::filesystem::exists(dir_ / "out" / "checkpoint.bin"));
  EXPECT_TRUE(Publishes()[1].empty());  // the crash came before the record

  auto checkpoint = core::ReadCheckpoint(dir_ / "out" / "checkpoint.bin", testing::CheckpointKeyOf(dir_ / "out"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ASSERT_EQ(checkpoint->round, 1u);
  const std::string sha256 = storage::Sha256Hex(checkpoint->model.bytes());
  // Resumed twice: the first completes round 1's record, the second finds it complete.
  for (int resume = 0; resume < 2; ++resume) {
    auto resumed = FederatedJob::Create(Options());
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    std::map<uint64_t, std::vector<std::string>> published = Publishes();
    ASSERT_EQ(published[1].size(), 1u) << "resume " << resume;
    EXPECT_EQ(published[1][0], sha256);
  }
}

// A kill while the checkpoint is written leaves the write's temporary file (a model's size,
// never renamed); the resumed server removes it, and only it.
TEST_F(ExactlyOnceTest, ACheckpointWriteCutShortLeavesNoFileBehindAfterResume) {
  std::filesystem::create_directories(dir_ / "out");
  const std::filesystem::path torn = dir_ / "out" / ".checkpoint.bin.tmp-k1ll3d00";
  const std::filesystem::path other = dir_ / "out" / ".summary.json.tmp-k1ll3d00";
  for (const auto& path : {torn, other}) std::ofstream(path) << std::string(4096, 'x');
  auto job = FederatedJob::Create(Options());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_FALSE(std::filesystem::exists(torn));
  EXPECT_TRUE(std::filesystem::exists(other));
}

}  // namespace
}  // namespace cohort::server
