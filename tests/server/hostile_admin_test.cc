// Admin.SetParameter over real loopback gRPC fed what an attacker with an admin channel
// would send: values nested 100,000 levels deep, values of megabytes, a parameter name
// of a megabyte. The server answers each with a short INVALID_ARGUMENT (or, past the
// message limit, RESOURCE_EXHAUSTED from the transport), echoes none of it whole, and
// keeps serving: the next status call and the next valid change go through.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <string>

#include "tests/hostile_json.h"
#include "audit/reader.h"
#include "audit/writer.h"
#include "core/limits.h"
#include "crypto/signing.h"
#include "proto/cohort.grpc.pb.h"
#include "server/federated_job.h"
#include "tests/server/served_job.h"

namespace cohort::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using ::cohort::testing::kShortMessageBytes;

using ::cohort::testing::NestedArrays;
using ::cohort::testing::NestedObjects;

class HostileAdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-hostile-admin-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    crypto::SigningKey key = crypto::SigningKey::Generate();
    public_key_ = key.public_key();
    absl::StatusOr<std::unique_ptr<audit::Writer>> writer = audit::Writer::Open(dir_ / "audit.log", std::move(key));
    ASSERT_TRUE(writer.ok()) << writer.status();
    audit_ = std::move(*writer);
    JobOptions options;
    options.config = testing::SmallJob(/*rounds=*/3, /*per_round=*/1, /*min_clients=*/1, /*heartbeat_timeout_s=*/10);
    options.initial_model = core::ParameterSet(testing::SmallManifest());
    options.out_dir = dir_ / "out";
    options.audit = audit_.get();
    absl::StatusOr<std::unique_ptr<FederatedJob>> job = FederatedJob::Create(std::move(options));
    ASSERT_TRUE(job.ok()) << job.status();
    job_ = std::move(*job);
    const int port = testing::ServeOnLoopback(*job_, nullptr, /*linger_seconds=*/0.2, &serving_);
    ASSERT_NE(port, 0);
    admin_ = v1::Admin::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (job_) job_->Cancel();
    if (serving_.valid()) serving_.wait();
    std::filesystem::remove_all(dir_);
  }

  grpc::Status Set(const std::string& parameter, const std::string& value_json) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::SetParameterRequest request;
    request.set_job_id("test-job");
    request.set_parameter(parameter);
    request.set_value_json(value_json);
    v1::SetParameterReply reply;
    return admin_->SetParameter(&context, request, &reply);
  }

  // The refusal of `value_json` for training_config.learning_rate: INVALID_ARGUMENT with
  // a short message, after which the server still answers and still takes a valid change.
  std::string RefusalOf(const std::string& value_json) {
    const grpc::Status s = Set("training_config.learning_rate", value_json);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message().substr(0, 300);
    EXPECT_LT(s.error_message().size(), kShortMessageBytes) << s.error_message().substr(0, 1000);
    ExpectStillServing();
    return s.error_message();
  }

  void ExpectStillServing() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::StatusReply status;
    const grpc::Status s = admin_->GetStatus(&context, v1::StatusRequest(), &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    const grpc::Status valid = Set("training_config.learning_rate", "0.05");
    EXPECT_TRUE(valid.ok()) << valid.error_message();
  }

  std::filesystem::path dir_;
  std::optional<crypto::SigningPublicKey> public_key_;
  std::unique_ptr<audit::Writer> audit_;
  std::unique_ptr<FederatedJob> job_;
  std::future<absl::Status> serving_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

TEST_F(HostileAdminTest, AValueNestedAHundredThousandDeepIsRefused) {
  // 200 KB and 600 KB: over the length bound before the depth is even counted.
  EXPECT_THAT(RefusalOf(NestedArrays(100'000)),
              HasSubstr("value for \"training_config.learning_rate\": expected at most 4096 bytes of JSON, got "
                        "\"[[[["));
  EXPECT_THAT(RefusalOf(NestedObjects(100'000)), HasSubstr("... (600001 bytes); shorten it"));
}

TEST_F(HostileAdminTest, AShortValueNestedDeeperThanTheBoundIsRefusedByItsDepth) {
  for (int depth : {17, 1'000}) {
    EXPECT_THAT(RefusalOf(NestedArrays(depth)),
                HasSubstr("value for \"training_config.learning_rate\": expected JSON nested at most 16 levels "
                          "deep, got an array or object opening at level 17"));
  }
}

TEST_F(HostileAdminTest, AValueOfMegabytesIsRefusedByItsLengthNotEchoed) {
  const std::string message = RefusalOf("\"" + std::string(5'000'000, 'x') + "\"");
  EXPECT_THAT(message, HasSubstr("expected at most 4096 bytes of JSON"));
  EXPECT_THAT(message, HasSubstr("... (5000002 bytes)"));
}

TEST_F(HostileAdminTest, AValueThatIsNotJsonIsQuotedShort) {
  const std::string message = RefusalOf("{" + std::string(3'000, 'y'));
  EXPECT_THAT(message, HasSubstr("not valid JSON"));
  EXPECT_THAT(message, HasSubstr("... (3001 bytes)"));
}

TEST_F(HostileAdminTest, AFiftyMegabyteValueIsStoppedByTheMessageLimit) {
  const grpc::Status s = Set("training_config.learning_rate", "\"" + std::string(50'000'000, 'x') + "\"");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message().substr(0, 300);
  EXPECT_LT(s.error_message().size(), kShortMessageBytes);
  ExpectStillServing();
}

TEST_F(HostileAdminTest, AMegabyteParameterNameIsNotEchoed) {
  const grpc::Status s = Set(std::string(1'000'000, 'p'), "1");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("unknown parameter"));
  // The message lists the parameters that can change; it quotes only a prefix of the name.
  EXPECT_THAT(s.error_message(), Not(HasSubstr(std::string(100, 'p'))));
  EXPECT_LT(s.error_message().size(), 2000u);
  ExpectStillServing();
}

// A refused change is recorded whatever name it came with. gRPC delivers only valid UTF-8,
// but a long name of multi-byte characters cut to a length can end mid-character, which
// the audit log refuses: the refusal must still reach the log.
TEST_F(HostileAdminTest, ARefusalOfALongMultiByteNameIsStillRecorded) {
  std::string name = "learning_rate";
  for (int i = 0; i < 200; ++i) name += "\xc3\xa9";  // U+00E9, two bytes each, odd offset
  const grpc::Status s = Set(name, "1");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ExpectStillServing();
  audit::EntryFilter filter;
  absl::StatusOr<audit::ReadResult> read = audit::ReadEntries(dir_ / "audit.log", filter);
  ASSERT_TRUE(read.ok()) << read.status();
  bool recorded = false;
  for (const audit::Entry& e : read->entries) {
    recorded |= e.action == "param.set.refused" && e.target.parameter.find("learning_rate") != std::string::npos &&
                e.target.parameter.size() < 1000;
  }
  EXPECT_TRUE(recorded) << "the refusal of a long multi-byte name left no audit entry";
  absl::StatusOr<audit::ChainVerification> verified =
      audit::VerifyAuditChain(dir_ / "audit.log", *public_key_, std::nullopt, std::nullopt);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok()) << verified->Summary();
}

TEST_F(HostileAdminTest, ADeepValueWithinTheLimitReachesTheJobAndIsRefusedThereOnTheLog) {
  const std::string message = RefusalOf(NestedArrays(10));
  EXPECT_THAT(message, HasSubstr("training_config.learning_rate: expected"));
  absl::StatusOr<audit::ChainVerification> verified =
      audit::VerifyAuditChain(dir_ / "audit.log", *public_key_, std::nullopt, std::nullopt);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok()) << verified->Summary();
  audit::EntryFilter filter;
  absl::StatusOr<audit::ReadResult> read = audit::ReadEntries(dir_ / "audit.log", filter);
  ASSERT_TRUE(read.ok()) << read.status();
  bool refusal_logged = false;
  for (const audit::Entry& e : read->entries) refusal_logged |= e.action == "param.set.refused";
  EXPECT_TRUE(refusal_logged);
}

}  // namespace
}  // namespace cohort::server
