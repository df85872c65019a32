// Administration of a running FederatedJob: live parameter changes validated at once and
// applied at the next round boundary, refused changes that change nothing, hold and start,
// stop, enrollment and revocation, each one on the signed audit log before it takes effect.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "audit/reader.h"
#include "audit/writer.h"
#include "core/job_config.h"
#include "crypto/key_agreement.h"
#include "crypto/signing.h"
#include "server/federated_job.h"

namespace cohort::server {
namespace {

const Actor kAlice{"alice", "admin"};

// Joins as `site` with a fresh session key, as the client agent does.
absl::Status JoinAs(FederatedJob& job, const std::string& site) {
  const crypto::X25519KeyPair keys = crypto::GenerateX25519KeyPair();
  const std::string public_key(reinterpret_cast<const char*>(keys.public_key.data()), keys.public_key.size());
  return job.Join(site, 10, public_key).status();
}

class AdminJob : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-admin-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    crypto::SigningKey key = crypto::SigningKey::Generate();
    public_key_ = key.public_key();
    auto writer = audit::Writer::Open(dir_ / "audit.log", std::move(key));
    ASSERT_TRUE(writer.ok()) << writer.status().message();
    audit_ = std::move(*writer);
  }
  void TearDown() override {
    if (job_) job_->Cancel();
    if (running_.joinable()) running_.join();
    std::filesystem::remove_all(dir_);
  }

  void CreateJob(bool hold = false, std::vector<std::string> sites = {}) {
    core::JobConfig config;
    config.name = "admin-job";
    config.federation.rounds = 3;
    config.federation.clients_per_round = 1;
    config.federation.min_clients = 1;
    config.federation.join_grace_s = 0;
    config.federation.sites = std::move(sites);
    config.training.learning_rate = 0.01;
    JobOptions options;
    options.config = config;
    options.initial_model = core::ParameterSet(core::Manifest({{"w", core::DType::kFloat32, {16}}}));
    options.out_dir = dir_ / "out";
    options.audit = audit_.get();
    options.launched_by = {"server", "server"};
    options.hold = hold;
    auto job = FederatedJob::Create(std::move(options));
    ASSERT_TRUE(job.ok()) << job.status().message();
    job_ = std::move(*job);
  }
  void StartRunning() {
    running_ = std::thread([this] { run_result_ = job_->Run(); });
  }

  std::vector<audit::Entry> Entries(const std::string& action) {
    audit::EntryFilter filter;
    absl::StatusOr<audit::ReadResult> read = audit::ReadEntries(dir_ / "audit.log", filter);
    EXPECT_TRUE(read.ok()) << read.status().message();
    std::vector<audit::Entry> out;
    for (audit::Entry& e : read->entries) {
      if (e.action == action) out.push_back(std::move(e));
    }
    return out;
  }
  void ExpectLogVerifies() {
    absl::StatusOr<audit::ChainVerification> v =
        audit::VerifyAuditChain(dir_ / "audit.log", *public_key_, audit_->head_hash(), audit_->entry_count());
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(v->ok());
  }

  std::filesystem::path dir_;
  std::optional<crypto::SigningPublicKey> public_key_;
  std::unique_ptr<audit::Writer> audit_;
  std::unique_ptr<FederatedJob> job_;
  std::thread running_;
  absl::Status run_result_;
};

TEST_F(AdminJob, CreatingAJobRecordsItsWholeConfiguration) {
  CreateJob();
  const std::vector<audit::Entry> created = Entries(audit::action::kJobCreate);
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].actor, "server");
  EXPECT_EQ(created[0].target.job, "admin-job");
  EXPECT_EQ(created[0].new_value["training_config"]["learning_rate"], 0.01);
}

TEST_F(AdminJob, AValidChangeIsRecordedWithOldAndNewValueAndQueuedForTheNextRound) {
  CreateJob();
  absl::StatusOr<ParameterChange> change = job_->SetParameter(kAlice, "learning_rate", 0.05, "too slow");
  ASSERT_TRUE(change.ok()) << change.status().message();
  EXPECT_EQ(change->parameter, "training_config.learning_rate");
  EXPECT_EQ(change->old_value, 0.01);
  EXPECT_EQ(change->new_value, 0.05);
  EXPECT_EQ(change->applies_at_round, 1u);
  EXPECT_GT(change->audit_seq, 0u);
  // Not in force yet: the running configuration is unchanged until the boundary.
  EXPECT_EQ(job_->config().training.learning_rate, 0.01);
  EXPECT_EQ(job_->Status().pending_changes.size(), 1u);

  const std::vector<audit::Entry> sets = Entries(audit::action::kParamSet);
  ASSERT_EQ(sets.size(), 1u);
  EXPECT_EQ(sets[0].actor, "alice");
  EXPECT_EQ(sets[0].role, "admin");
  EXPECT_EQ(sets[0].target.parameter, "training_config.learning_rate");
  EXPECT_EQ(sets[0].old_value, 0.01);
  EXPECT_EQ(sets[0].new_value, 0.05);
  EXPECT_EQ(sets[0].reason.value_or(""), "too slow");
  ExpectLogVerifies();
}

TEST_F(AdminJob, AnInvalidChangeChangesNothingAndIsRecordedAsRefused) {
  CreateJob();
  struct Case {
    std::string parameter;
    nlohmann::json value;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"learnin_rate", 0.1, "unknown parameter \"learnin_rate\""},
      {"training_config.learning_rate", "fast", "training_config.learning_rate"},
      {"local_epochs", -1, "training_config.local_epochs"},
      {"federation.min_clients", 5, "federation.min_clients"},
      {"data.path", "/tmp", "data.path is fixed for the life of a job"},
      {"federation.chunk_bytes", 8192, "fixed for the life of a job"},
      {"model_config", nlohmann::json::object(), "unknown parameter"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ParameterChange> change = job_->SetParameter(kAlice, c.parameter, c.value, "");
    ASSERT_FALSE(change.ok()) << c.parameter;
    EXPECT_EQ(change.status().code(), absl::StatusCode::kInvalidArgument) << c.parameter;
    EXPECT_NE(change.status().message().find(c.says), std::string::npos) << change.status().message();
  }
  EXPECT_TRUE(job_->Status().pending_changes.empty());
  EXPECT_EQ(job_->config().training.learning_rate, 0.01);
  EXPECT_EQ(job_->config().federation.min_clients, 1);
  const std::vector<audit::Entry> refused = Entries(audit::action::kParamSetRefused);
  ASSERT_EQ(refused.size(), cases.size());
  EXPECT_EQ(refused[0].actor, "alice");
  EXPECT_NE(refused[0].reason.value_or("").find("unknown parameter"), std::string::npos);
  EXPECT_TRUE(Entries(audit::action::kParamSet).empty());
  ExpectLogVerifies();
}

TEST_F(AdminJob, TheChangeIsInTheNextTaskClientsReceive) {
  CreateJob();
  ASSERT_TRUE(job_->SetParameter(kAlice, "learning_rate", 0.05, "").ok());
  ASSERT_TRUE(job_->SetParameter(kAlice, "training_config.local_epochs", 2, "").ok());
  StartRunning();
  ASSERT_TRUE(JoinAs(*job_, "hospital-a").ok());
  const Task task = job_->WaitForTask("hospital-a", std::chrono::seconds(10));
  ASSERT_EQ(task.kind, Task::Kind::kTrain);
  const nlohmann::json training = nlohmann::json::parse(task.training_config_json);
  EXPECT_EQ(training["learning_rate"], 0.05);
  EXPECT_EQ(training["local_epochs"], 2);
  EXPECT_EQ(job_->config().training.learning_rate, 0.05);
  EXPECT_TRUE(job_->Status().pending_changes.empty());
  // A restarted server keeps the changed parameters (OUT/job.db).
  job_->Cancel();
  running_.join();
  job_.reset();
  CreateJob();
  EXPECT_EQ(job_->config().training.learning_rate, 0.05);
  EXPECT_EQ(job_->config().training.local_epochs, 2);
}

TEST_F(AdminJob, AHeldJobWaitsForStartAndTheStartIsRecorded) {
  CreateJob(/*hold=*/true);
  StartRunning();
  for (int i = 0; i < 100 && job_->Status().state != JobState::kHeld; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(job_->Status().state, JobState::kHeld);
  ASSERT_TRUE(JoinAs(*job_, "hospital-a").ok());
  EXPECT_EQ(job_->WaitForTask("hospital-a", std::chrono::milliseconds(300)).kind, Task::Kind::kWait);
  ASSERT_TRUE(job_->Start(kAlice).ok());
  EXPECT_EQ(job_->WaitForTask("hospital-a", std::chrono::seconds(10)).kind, Task::Kind::kTrain);
  EXPECT_EQ(Entries("job.start").size(), 1u);
  EXPECT_EQ(job_->Start(kAlice).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(AdminJob, AStopEndsTheJobAtTheBoundaryWithItsOutputs) {
  CreateJob();
  StartRunning();
  ASSERT_TRUE(job_->Stop(kAlice, "enough").ok());
  running_.join();
  EXPECT_TRUE(run_result_.ok()) << run_result_.message();
  EXPECT_EQ(job_->Status().state, JobState::kStopped);
  std::ifstream summary(dir_ / "out" / "summary.json");
  ASSERT_TRUE(summary.good());
  EXPECT_EQ(nlohmann::json::parse(summary)["status"], "stopped");
  ASSERT_EQ(Entries("job.stop").size(), 1u);
  EXPECT_EQ(Entries("job.stop")[0].reason.value_or(""), "enough");
  EXPECT_EQ(job_->SetParameter(kAlice, "learning_rate", 0.1, "").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(AdminJob, EnrollmentAndRevocationDecideWhoMayTakePart) {
  CreateJob(/*hold=*/false, /*sites=*/{"hospital-a"});
  EXPECT_TRUE(job_->CheckParticipant("hospital-a").ok());
  EXPECT_EQ(job_->CheckParticipant("hospital-b").code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(job_->AddParticipant(kAlice, "hospital-b", "new partner").ok());
  EXPECT_TRUE(job_->CheckParticipant("hospital-b").ok());
  EXPECT_EQ(job_->AddParticipant(kAlice, "hospital-b", "").status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(job_->RevokeParticipant(kAlice, "hospital-a", "consent withdrawn").ok());
  const absl::Status refused = job_->CheckParticipant("hospital-a");
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(refused.message().find("revoked"), std::string::npos);
  EXPECT_EQ(job_->AddParticipant(kAlice, "hospital-a", "").status().code(), absl::StatusCode::kFailedPrecondition);
  const nlohmann::json participants = job_->Participants();
  EXPECT_FALSE(participants["open_enrollment"].get<bool>());
  ASSERT_EQ(Entries(audit::action::kParticipantAdd).size(), 1u);
  const std::vector<audit::Entry> revoked = Entries(audit::action::kParticipantRevoke);
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_EQ(revoked[0].target.participant, "hospital-a");
  EXPECT_EQ(revoked[0].reason.value_or(""), "consent withdrawn");
  ExpectLogVerifies();
}

TEST_F(AdminJob, LoweringRoundsBelowTheRoundsAlreadyRunIsRefused) {
  CreateJob();
  EXPECT_TRUE(job_->SetParameter(kAlice, "rounds", 1, "").ok());
  const absl::StatusOr<ParameterChange> zero = job_->SetParameter(kAlice, "rounds", 0, "");
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cohort::server
