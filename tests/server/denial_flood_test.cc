// The attack: a site with a valid certificate floods the server over mutual TLS, with a
// method its role may not call (Admin.GetStatus) and with one it may (Federation.Heartbeat)
// far past its call rate, from several threads, while two honest sites train. The server
// refuses the flood (PERMISSION_DENIED, then RESOURCE_EXHAUSTED), the audit log grows by a
// handful of entries rather than one per call, the counts in those entries add up to
// exactly the refusals the flooder saw, the log still verifies, the honest sites' calls
// keep being answered promptly and their job finishes.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <iostream>
#include <map>
#include <thread>
#include <vector>

#include "audit/reader.h"
#include "audit/writer.h"
#include "crypto/provisioning.h"
#include "crypto/signing.h"
#include "crypto/startup_kit.h"
#include "proto/cohort.grpc.pb.h"
#include "server/federated_job.h"
#include "server/server.h"
#include "tests/server/served_job.h"
#include "wire/credentials.h"
#include "wire/federation_client.h"

namespace cohort::server {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kGetStatus[] = "/cohort.v1.Admin/GetStatus";
constexpr char kHeartbeat[] = "/cohort.v1.Federation/Heartbeat";

class DeniedFlood : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-flood-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    crypto::FederationSpec spec;
    spec.federation = "clinic";
    spec.server_host = "127.0.0.1";
    spec.participants = {{"hospital-a", crypto::Role::kSite},
                         {"hospital-b", crypto::Role::kSite},
                         {"hospital-c", crypto::Role::kSite}};
    ASSERT_TRUE(crypto::ProvisionFederation(spec, dir_ / "pki").ok());
    crypto::SigningKey key = crypto::SigningKey::Generate();
    audit_public_ = key.public_key();
    auto writer = audit::Writer::Open(dir_ / "audit.log", std::move(key));
    ASSERT_TRUE(writer.ok()) << writer.status().message();
    audit_ = std::move(*writer);

    // Open enrollment; two sites per round. The flooder never joins, so it is never selected.
    core::JobConfig config = testing::SmallJob(/*rounds=*/3, /*per_round=*/2, /*min_clients=*/2,
                                               /*heartbeat_timeout_s=*/30);
    config.name = "flood-job";
    JobOptions options;
    options.config = config;
    options.initial_model = core::ParameterSet(testing::SmallManifest());
    options.out_dir = dir_ / "out";
    options.audit = audit_.get();
    job_ = std::move(*FederatedJob::Create(std::move(options)));
    absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(dir_ / "pki" / "server");
    ASSERT_TRUE(kit.ok());
    port_ = testing::ServeOnLoopback(*job_, wire::ServerCredentialsFromKit(*kit, dir_ / "pki" / "server"),
                                     /*linger_seconds=*/0, &serving_);
    ASSERT_NE(port_, 0);
  }
  void TearDown() override {
    if (job_ != nullptr) job_->Cancel();
    if (serving_.valid()) serving_.wait();
    job_.reset();
    std::filesystem::remove_all(dir_);
  }

  wire::Connection ConnectionAs(const std::string& name) {
    absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(dir_ / "pki" / name);
    EXPECT_TRUE(kit.ok());
    return {"127.0.0.1:" + std::to_string(port_), wire::ChannelCredentialsFromKit(*kit)};
  }

  // An honest site: joins, then trains every round it is given until the job is done.
  absl::Status TrainUntilDone(const std::string& site) {
    wire::FederationClient client(ConnectionAs(site));
    absl::StatusOr<wire::Session> session = client.Join(site, 10);
    if (!session.ok()) return session.status();
    core::ParameterSet model;
    for (;;) {
      absl::StatusOr<wire::PulledTask> task = client.PullTask(*session, &model);
      if (!task.ok()) return task.status();
      if (task->header.kind() == v1::TaskHeader::DONE) return absl::OkStatus();
      if (task->header.kind() != v1::TaskHeader::TRAIN) continue;
      if (!task->download.ok()) return task->download;
      core::ParameterSet delta(testing::SmallManifest());
      std::fill(delta.floats().begin(), delta.floats().end(), 0.01f);
      if (absl::Status s = client.PushUpdate(*session, wire::UpdateInfoFor(task->header, 10), delta); !s.ok()) {
        return s;
      }
    }
  }

  std::filesystem::path dir_;
  std::optional<crypto::SigningPublicKey> audit_public_;
  std::unique_ptr<audit::Writer> audit_;
  std::unique_ptr<FederatedJob> job_;
  std::future<absl::Status> serving_;
  int port_ = 0;
};

TEST_F(DeniedFlood, AFloodingSiteCostsTheLogAFewEntriesAndTheHonestJobStillFinishes) {
  constexpr int kThreads = 4;
  constexpr int kCallsPerMethodPerThread = 150;
  std::map<grpc::StatusCode, std::atomic<int>> seen_status, seen_heartbeat;
  for (grpc::StatusCode c : {grpc::StatusCode::OK, grpc::StatusCode::PERMISSION_DENIED,
                             grpc::StatusCode::RESOURCE_EXHAUSTED, grpc::StatusCode::NOT_FOUND}) {
    seen_status[c] = 0;
    seen_heartbeat[c] = 0;
  }
  std::atomic<int> other_codes = 0;
  std::promise<void> flood_started;
  std::shared_future<void> started = flood_started.get_future().share();

  // The flooder: one mTLS channel, four threads, the forbidden method then the allowed one.
  const wire::Connection flooder = ConnectionAs("hospital-a");
  auto channel = grpc::CreateChannel(flooder.address, flooder.credentials);
  auto admin = v1::Admin::NewStub(channel);
  auto federation = v1::Federation::NewStub(channel);
  std::vector<std::thread> floods;
  std::atomic<int> calls = 0;
  const auto count = [&other_codes](auto& seen, const grpc::Status& s) {
    if (seen.contains(s.error_code())) {
      ++seen.at(s.error_code());
    } else {
      ++other_codes;
    }
  };
  for (int t = 0; t < kThreads; ++t) {
    floods.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerMethodPerThread; ++i) {
        grpc::ClientContext context;
        v1::StatusReply reply;
        count(seen_status, admin->GetStatus(&context, v1::StatusRequest(), &reply));
        if (t == 0 && i == 20) flood_started.set_value();
      }
      for (int i = 0; i < kCallsPerMethodPerThread; ++i) {
        grpc::ClientContext context;
        v1::HeartbeatRequest request;
        request.set_client_id("hospital-a");
        v1::HeartbeatReply reply;
        count(seen_heartbeat, federation->Heartbeat(&context, request, &reply));
      }
      calls += 2 * kCallsPerMethodPerThread;
    });
  }

  // Once the flood is on, an honest site joins and waits for its first round, and the same
  // site's certificate keeps probing the server with heartbeats while the flood lasts.
  // The second honest site joins when the flood is over (a round needs both), so the
  // server keeps serving until the flood has ended.
  started.wait();
  std::future<absl::Status> b = std::async(std::launch::async, [&] { return TrainUntilDone("hospital-b"); });
  Clock::duration slowest_probe{};
  int probes = 0;
  {
    wire::FederationClient prober(ConnectionAs("hospital-b"));
    wire::Session probe;
    probe.client_id = "hospital-b";
    while (calls.load() < kThreads * 2 * kCallsPerMethodPerThread) {
      const auto before = Clock::now();
      const absl::Status s = prober.Heartbeat(probe, std::chrono::seconds(10));
      slowest_probe = std::max(slowest_probe, Clock::now() - before);
      ++probes;
      // Answered by the job (joined or not yet), never refused for the flooder's rate.
      EXPECT_NE(s.code(), absl::StatusCode::kResourceExhausted) << s;
      EXPECT_NE(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  for (auto& f : floods) f.join();
  std::future<absl::Status> c = std::async(std::launch::async, [&] { return TrainUntilDone("hospital-c"); });
  EXPECT_TRUE(b.get().ok());
  EXPECT_TRUE(c.get().ok());
  ASSERT_TRUE(serving_.get().ok());
  EXPECT_TRUE(job_->finished());
  job_.reset();  // anything still counted is written now

  EXPECT_EQ(other_codes.load(), 0);
  EXPECT_EQ(seen_status[grpc::StatusCode::OK].load(), 0);
  // The rate was reached: most calls were refused before the permission table was asked.
  EXPECT_GT(seen_status[grpc::StatusCode::RESOURCE_EXHAUSTED].load(), 0);
  EXPECT_GT(seen_heartbeat[grpc::StatusCode::RESOURCE_EXHAUSTED].load(), 0);
  std::cout << "flooder: " << calls.load() << " calls; GetStatus "
            << seen_status[grpc::StatusCode::PERMISSION_DENIED].load() << " PERMISSION_DENIED, "
            << seen_status[grpc::StatusCode::RESOURCE_EXHAUSTED].load() << " RESOURCE_EXHAUSTED; Heartbeat "
            << seen_heartbeat[grpc::StatusCode::NOT_FOUND].load() << " NOT_FOUND, "
            << seen_heartbeat[grpc::StatusCode::RESOURCE_EXHAUSTED].load() << " RESOURCE_EXHAUSTED; honest probes " << probes
            << ", slowest " << std::chrono::duration<double>(slowest_probe).count() << " s\n";
  EXPECT_GT(probes, 0);
  EXPECT_LT(slowest_probe, std::chrono::seconds(5));

  // The log: a few entries about the flooder, whose counts add up to every refusal it saw.
  absl::StatusOr<audit::ReadResult> entries = audit::ReadEntries(dir_ / "audit.log");
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  std::map<std::pair<std::string, std::string>, uint64_t> recorded;  // (method, code) -> refusals
  int flooder_entries = 0, repeated_entries = 0;
  for (const audit::Entry& e : entries->entries) {
    if (e.actor != "hospital-a") continue;
    ++flooder_entries;
    if (e.action == audit::action::kAccessDenied) {
      const std::string code = e.reason && e.reason->find("too many calls") != std::string::npos
                                   ? "RESOURCE_EXHAUSTED" : "PERMISSION_DENIED";
      recorded[{e.target.parameter, code}] += 1;
    } else if (e.action == audit::action::kAccessDeniedRepeated) {
      ++repeated_entries;
      ASSERT_TRUE(e.new_value.is_object());
      EXPECT_GT(e.new_value["count"].get<uint64_t>(), 0u);
      EXPECT_EQ(e.new_value["window_s"].get<double>(), 60.0);
      EXPECT_LE(e.new_value["first"].get<std::string>(), e.new_value["last"].get<std::string>());
      recorded[{e.target.parameter, e.new_value["code"].get<std::string>()}] += e.new_value["count"].get<uint64_t>();
    } else {
      ADD_FAILURE() << "unexpected entry about the flooder: " << e.action;
    }
  }
  const int denied_calls = seen_status[grpc::StatusCode::PERMISSION_DENIED] +
                           seen_status[grpc::StatusCode::RESOURCE_EXHAUSTED] +
                           seen_heartbeat[grpc::StatusCode::RESOURCE_EXHAUSTED];
  std::cout << "audit log: " << entries->entries.size() << " entries, " << flooder_entries << " about the flooder ("
            << repeated_entries << " access.denied.repeated) for its " << denied_calls << " refused calls\n";
  // O(1): at most two entries per (method, code) per 60 s window, whatever the call count.
  EXPECT_LE(flooder_entries, 8);
  EXPECT_GE(repeated_entries, 2);
  const auto seen = [](const auto& by_code, grpc::StatusCode code) {
    return static_cast<uint64_t>(by_code.at(code).load());
  };
  EXPECT_EQ((recorded[{kGetStatus, "PERMISSION_DENIED"}]), seen(seen_status, grpc::StatusCode::PERMISSION_DENIED));
  EXPECT_EQ((recorded[{kGetStatus, "RESOURCE_EXHAUSTED"}]), seen(seen_status, grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_EQ((recorded[{kHeartbeat, "RESOURCE_EXHAUSTED"}]), seen(seen_heartbeat, grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_EQ((recorded[{kHeartbeat, "PERMISSION_DENIED"}]), 0u);

  absl::StatusOr<audit::ChainVerification> verified =
      audit::VerifyAuditChain(dir_ / "audit.log", *audit_public_, audit_->head_hash(), audit_->entry_count());
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_FALSE(verified->failure.has_value());
}

}  // namespace
}  // namespace cohort::server
