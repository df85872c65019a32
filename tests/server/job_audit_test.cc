// What a job observes goes on its audit log too: sites joining, being lost, declining, and
// the job's end, which is the log's last entry and says how the job ended.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <thread>

#include "audit/entry.h"
#include "audit/reader.h"
#include "audit/writer.h"
#include "crypto/key_agreement.h"
#include "crypto/signing.h"
#include "server/federated_job.h"

namespace cohort::server {
namespace {

class JobAuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-job-audit-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    crypto::SigningKey key = crypto::SigningKey::Generate();
    public_key_ = key.public_key();
    auto writer = audit::Writer::Open(dir_ / "audit.log", std::move(key));
    ASSERT_TRUE(writer.ok()) << writer.status();
    audit_ = std::move(*writer);
  }
  void TearDown() override {
    if (job_) job_->Cancel();
    if (running_.joinable()) running_.join();
    job_.reset();
    std::filesystem::remove_all(dir_);
  }

  void CreateAndRun(core::JobConfig config) {
    config.name = "audited-job";
    JobOptions options;
    options.config = std::move(config);
    options.initial_model = core::ParameterSet(core::Manifest({{"w", core::DType::kFloat32, {16}}}));
    options.out_dir = dir_ / "out";
    options.audit = audit_.get();
    auto job = FederatedJob::Create(std::move(options));
    ASSERT_TRUE(job.ok()) << job.status();
    job_ = std::move(*job);
  }
  void Join(const std::string& site) {
    const crypto::X25519KeyPair keys = crypto::GenerateX25519KeyPair();
    const std::string public_key(reinterpret_cast<const char*>(keys.public_key.data()), keys.public_key.size());
    ASSERT_TRUE(job_->Join(site, 10, public_key).ok());
  }
  std::vector<audit::Entry> Log() {
    absl::StatusOr<audit::ReadResult> read = audit::ReadEntries(dir_ / "audit.log");
    EXPECT_TRUE(read.ok()) << read.status();
    absl::StatusOr<audit::ChainVerification> verified = audit::VerifyAuditChain(dir_ / "audit.log", *public_key_);
    EXPECT_TRUE(verified.ok() && !verified->failure.has_value());
    return read.ok() ? read->entries : std::vector<audit::Entry>{};
  }
  static std::vector<std::string> Sites(const std::vector<audit::Entry>& log, const std::string& action) {
    std::vector<std::string> sites;
    for (const audit::Entry& e : log) {
      if (e.action == action) sites.push_back(e.target.participant);
    }
    return sites;
  }

  std::filesystem::path dir_;
  std::optional<crypto::SigningPublicKey> public_key_;
  std::unique_ptr<audit::Writer> audit_;
  std::unique_ptr<FederatedJob> job_;
  std::thread running_;
};

TEST_F(JobAuditTest, JoinsDeclinesAndTheEndAreOnTheLog) {
  core::JobConfig config;
  config.federation.rounds = 1;
  config.federation.clients_per_round = 2;
  config.federation.min_clients = 2;
  config.federation.heartbeat_timeout_s = 0.6;
  CreateAndRun(config);
  Join("hospital-a");
  Join("hospital-b");
  absl::Status result;
  running_ = std::thread([&] { result = job_->Run(); });
  // Both are selected; b leaves the job. With one site able to train and two needed, the
  // round cannot complete and the job ends.
  const Task task = job_->WaitForTask("hospital-b", std::chrono::seconds(10));
  ASSERT_EQ(task.kind, Task::Kind::kTrain);
  ASSERT_TRUE(job_->Decline("hospital-b", task.round, "privacy budget spent").ok());
  running_.join();
  EXPECT_TRUE(result.ok()) << result;

  const std::vector<audit::Entry> log = Log();
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(Sites(log, audit::action::kParticipantJoin), (std::vector<std::string>{"hospital-a", "hospital-b"}));
  EXPECT_EQ(Sites(log, audit::action::kParticipantDecline), std::vector<std::string>{"hospital-b"});
  const audit::Entry& last = log.back();
  EXPECT_EQ(last.action, audit::action::kJobEnd);
  EXPECT_EQ(last.new_value["state"], "finished");
  EXPECT_NE(last.reason.value_or("").find("declined"), std::string::npos) << last.reason.value_or("");
}

TEST_F(JobAuditTest, SilentSitesAreRecordedLost) {
  core::JobConfig config;
  config.federation.clients_per_round = 3;
  config.federation.min_clients = 3;  // never reached: no round starts
  config.federation.heartbeat_timeout_s = 0.5;
  CreateAndRun(config);
  Join("hospital-a");
  Join("hospital-b");
  absl::Status result;
  running_ = std::thread([&] { result = job_->Run(); });
  auto lost = [&] {
    size_t n = 0;
    for (const JobStatus::Client& c : job_->Status().clients) n += c.state == "lost";
    return n;
  };
  for (int i = 0; i < 100 && lost() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(lost(), 2u);
  ASSERT_TRUE(job_->Stop({"alice", "admin"}, "nobody left").ok());
  running_.join();
  const std::vector<audit::Entry> log = Log();
  EXPECT_EQ(Sites(log, audit::action::kParticipantLost), (std::vector<std::string>{"hospital-a", "hospital-b"}));
  EXPECT_EQ(log.back().action, audit::action::kJobEnd);
}

TEST_F(JobAuditTest, AStoppedJobsLogEndsSayingSo) {
  core::JobConfig config;
  config.federation.min_clients = 1;
  config.federation.clients_per_round = 1;
  CreateAndRun(config);
  absl::Status result;
  running_ = std::thread([&] { result = job_->Run(); });
  ASSERT_TRUE(job_->Stop({"alice", "admin"}, "enough").ok());
  running_.join();
  EXPECT_TRUE(result.ok()) << result;
  const std::vector<audit::Entry> log = Log();
  ASSERT_GE(log.size(), 3u);
  EXPECT_EQ(log.back().action, audit::action::kJobEnd);
  EXPECT_EQ(log.back().new_value["state"], "stopped");
  EXPECT_EQ(log[log.size() - 2].action, audit::action::kJobStop);
}

}  // namespace
}  // namespace cohort::server
