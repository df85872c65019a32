// A server process killed with SIGKILL before its first round completes, then restarted on
// the same output directory: the parameter change and the revocation an admin made over
// the wire still hold, and the audit log still verifies. The server is a real child
// process (this test binary, re-executed to run only the server below).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "audit/entry.h"
#include "audit/reader.h"
#include "audit/writer.h"
#include "crypto/key_agreement.h"
#include "crypto/signing.h"
#include "proto/cohort.grpc.pb.h"
#include "server/federated_job.h"
#include "tests/server/served_job.h"

extern char** environ;

namespace cohort::server {
namespace {

constexpr char kOutVariable[] = "COHORT_RESTART_TEST_OUT";

core::JobConfig RestartJob() {
  core::JobConfig config = testing::SmallJob(/*rounds=*/3, /*per_round=*/2, /*min_clients=*/2, 30);
  config.name = "restart-job";
  config.federation.sites = {"hospital-a", "hospital-b", "hospital-c"};
  config.training.learning_rate = 0.01;
  return config;
}

// The server process: serves the job in $COHORT_RESTART_TEST_OUT on loopback, writes the
// port it listens on to OUT/port, and runs until it is killed.
TEST(RestartChild, DISABLED_ServesUntilKilled) {
  const char* out_variable = std::getenv(kOutVariable);
  if (out_variable == nullptr) GTEST_SKIP() << "started by RestartTest only";
  const std::filesystem::path out = out_variable;
  absl::StatusOr<crypto::SigningKey> key = crypto::ReadSigningKeyFile(out / "audit.key");
  ASSERT_TRUE(key.ok()) << key.status();
  absl::StatusOr<std::unique_ptr<audit::Writer>> log = audit::Writer::Open(out / "audit.log", std::move(*key));
  ASSERT_TRUE(log.ok()) << log.status();
  JobOptions options;
  options.config = RestartJob();
  options.initial_model = core::ParameterSet(testing::SmallManifest());
  options.out_dir = out / "job";
  options.audit = log->get();
  absl::StatusOr<std::unique_ptr<FederatedJob>> job = FederatedJob::Create(std::move(options));
  ASSERT_TRUE(job.ok()) << job.status();
  std::future<absl::Status> serving;
  const int port = testing::ServeOnLoopback(**job, nullptr, 0.2, &serving);
  ASSERT_GT(port, 0);
  std::ofstream(out / "port.tmp") << port;
  std::filesystem::rename(out / "port.tmp", out / "port");
  serving.wait();
}

class RestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-restart-test-XXXXXX";
    out_ = ::mkdtemp(dir_template);
    const crypto::SigningKey key = crypto::SigningKey::Generate();
    public_key_ = key.public_key();
    ASSERT_TRUE(crypto::WriteSigningKeyFile(out_ / "audit.key", key).ok());
  }
  void TearDown() override {
    if (server_ > 0) Kill();
    std::filesystem::remove_all(out_);
  }

  // Starts the server process and connects to it.
  void StartServer() {
    std::filesystem::remove(out_ / "port");
    // Everything exec needs is built before fork: the child of a threaded process may
    // only exec.
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    env_strings.push_back(std::string(kOutVariable) + "=" + out_.string());
    std::vector<char*> env;
    for (std::string& s : env_strings) env.push_back(s.data());
    env.push_back(nullptr);
    std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    std::string filter = "--gtest_filter=RestartChild.DISABLED_ServesUntilKilled";
    std::string disabled = "--gtest_also_run_disabled_tests";
    char* argv[] = {self.data(), filter.data(), disabled.data(), nullptr};
    server_ = ::fork();
    ASSERT_GE(server_, 0);
    if (server_ == 0) {
      ::execve(self.c_str(), argv, env.data());
      ::_exit(127);
    }
    int port = 0;
    for (int i = 0; i < 300 && port == 0; ++i) {
      std::ifstream(out_ / "port") >> port;
      if (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_GT(port, 0) << "the server process did not start";
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
    admin_ = v1::Admin::NewStub(channel_);
    federation_ = v1::Federation::NewStub(channel_);
  }
  void Kill() {
    ::kill(server_, SIGKILL);
    int status = 0;
    ::waitpid(server_, &status, 0);
    server_ = 0;
  }

  grpc::Status Join(const std::string& site) {
    const crypto::X25519KeyPair keys = crypto::GenerateX25519KeyPair();
    grpc::ClientContext context;
    v1::JoinRequest request;
    request.set_site(site);
    request.set_num_samples(10);
    request.set_client_public_key(reinterpret_cast<const char*>(keys.public_key.data()), keys.public_key.size());
    v1::JoinReply reply;
    return federation_->Join(&context, request, &reply);
  }

  std::filesystem::path out_;
  std::optional<crypto::SigningPublicKey> public_key_;
  pid_t server_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<v1::Federation::Stub> federation_;
};

TEST_F(RestartTest, ChangesMadeBeforeTheFirstRoundSurviveAKillAndTheLogVerifies) {
  StartServer();
  ASSERT_TRUE(Join("hospital-a").ok());  // one site of the two a round needs: no round runs
  {
    grpc::ClientContext context;
    v1::SetParameterRequest request;
    request.set_parameter("learning_rate");
    request.set_value_json("0.05");
    v1::SetParameterReply reply;
    const grpc::Status s = admin_->SetParameter(&context, request, &reply);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  {
    grpc::ClientContext context;
    v1::ParticipantRequest request;
    request.set_site("hospital-b");
    request.set_reason("consent withdrawn");
    v1::ParticipantReply reply;
    const grpc::Status s = admin_->RevokeParticipant(&context, request, &reply);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  ASSERT_FALSE(std::filesystem::exists(out_ / "job" / "checkpoint.bin"));
  Kill();

  StartServer();
  // The revocation holds: the site is refused.
  const grpc::Status refused = Join("hospital-b");
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED) << refused.error_message();
  // The change holds: the first round's task carries it.
  ASSERT_TRUE(Join("hospital-a").ok());
  ASSERT_TRUE(Join("hospital-c").ok());
  v1::TaskHeader header;
  for (int i = 0; i < 20 && header.kind() != v1::TaskHeader::TRAIN; ++i) {
    grpc::ClientContext context;
    v1::TaskRequest request;
    request.set_client_id("hospital-a");
    request.set_wait_ms(1000);
    auto reader = federation_->PullTask(&context, request);
    v1::TaskMessage message;
    if (reader->Read(&message)) header = message.header();
    context.TryCancel();
    (void)reader->Finish();
  }
  ASSERT_EQ(header.kind(), v1::TaskHeader::TRAIN);
  EXPECT_EQ(nlohmann::json::parse(header.training_config_json())["learning_rate"], 0.05);
  Kill();

  // Both server processes appended to one log; it verifies, with one creation of the job.
  absl::StatusOr<audit::ChainVerification> verified = audit::VerifyAuditChain(out_ / "audit.log", *public_key_);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_FALSE(verified->failure.has_value());
  absl::StatusOr<audit::ReadResult> entries = audit::ReadEntries(out_ / "audit.log");
  ASSERT_TRUE(entries.ok()) << entries.status();
  std::map<std::string, int> actions;
  for (const audit::Entry& e : entries->entries) ++actions[e.action];
  EXPECT_EQ(actions[audit::action::kJobCreate], 1);
  EXPECT_EQ(actions[audit::action::kParamSet], 1);
  EXPECT_EQ(actions[audit::action::kParticipantRevoke], 1);
}

}  // namespace
}  // namespace cohort::server
