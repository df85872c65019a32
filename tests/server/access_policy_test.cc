// The permission table (server/access_policy.h): every role against every RPC, over real
// mutual TLS on loopback, allowed or denied exactly as the table says; the table covers
// every method the protocol defines, and a protocol with a method it does not cover is
// reported; and each denied call is on the audit log.
#include <gmock/gmock.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <functional>
#include <future>
#include <map>

#include "audit/reader.h"
#include "audit/writer.h"
#include "crypto/provisioning.h"
#include "crypto/signing.h"
#include "crypto/startup_kit.h"
#include "proto/cohort.grpc.pb.h"
#include "proto/cohort.pb.h"
#include "wire/credentials.h"
#include "server/access_policy.h"
#include "server/federated_job.h"
#include "server/server.h"
#include "tests/server/served_job.h"

namespace cohort::server {
namespace {

std::vector<std::string> ProtocolMethods() {
  std::vector<std::string> methods;
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const google::protobuf::ServiceDescriptor* service :
       {pool->FindServiceByName("cohort.v1.Federation"), pool->FindServiceByName("cohort.v1.Admin"),
        pool->FindServiceByName("cohort.v1.Vertical")}) {
    EXPECT_NE(service, nullptr);
    if (service == nullptr) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      methods.push_back("/" + service->full_name() + "/" + service->method(i)->name());
    }
  }
  return methods;
}

TEST(AccessPolicy, EveryMethodOfTheProtocolIsInTheTableAndNothingElse) {
  const std::vector<std::string> methods = ProtocolMethods();
  for (const std::string& m : methods) EXPECT_TRUE(RequiredPermission(m).has_value()) << m;
  EXPECT_THAT(KnownMethods(), ::testing::ElementsAreArray(methods));
  EXPECT_THAT(PermissionTableProblems(), ::testing::IsEmpty());
}

// cohort.proto as built into this binary, changed by `edit`, in a pool of its own.
std::vector<std::string> ProblemsWithChangedProtocol(
    const std::function<void(google::protobuf::FileDescriptorProto&)>& edit) {
  google::protobuf::FileDescriptorProto file;
  v1::JoinRequest::descriptor()->file()->CopyTo(&file);
  edit(file);
  google::protobuf::DescriptorPool pool;
  EXPECT_NE(pool.BuildFile(file), nullptr);
  return PermissionTableProblems(pool);
}

google::protobuf::ServiceDescriptorProto& ServiceNamed(google::protobuf::FileDescriptorProto& file,
                                                       const std::string& name) {
  for (google::protobuf::ServiceDescriptorProto& service : *file.mutable_service()) {
    if (service.name() == name) return service;
  }
  ADD_FAILURE() << "cohort.proto has no service " << name;
  return *file.add_service();
}

TEST(AccessPolicy, AMethodAddedToTheProtocolWithoutAPermissionIsReported) {
  const std::vector<std::string> problems = ProblemsWithChangedProtocol([](google::protobuf::FileDescriptorProto& file) {
    google::protobuf::MethodDescriptorProto* added = ServiceNamed(file, "Federation").add_method();
    added->set_name("Rejoin");
    added->set_input_type(".cohort.v1.JoinRequest");
    added->set_output_type(".cohort.v1.JoinReply");
  });
  EXPECT_THAT(problems, ::testing::ElementsAre(::testing::HasSubstr("/cohort.v1.Federation/Rejoin has no permission")));
  // Until it has one, nobody may call it.
  EXPECT_FALSE(RequiredPermission("/cohort.v1.Federation/Rejoin").has_value());
}

TEST(AccessPolicy, APermissionForAMethodTheProtocolDropsIsReported) {
  const std::vector<std::string> problems = ProblemsWithChangedProtocol([](google::protobuf::FileDescriptorProto& file) {
    auto* methods = ServiceNamed(file, "Admin").mutable_method();
    for (int i = 0; i < methods->size(); ++i) {
      if (methods->Get(i).name() == "ListJobs") methods->DeleteSubrange(i, 1);
    }
  });
  EXPECT_THAT(problems, ::testing::ElementsAre(::testing::HasSubstr("names /cohort.v1.Admin/ListJobs, which the "
                                                                    "protocol does not define")));
}

TEST(AccessPolicy, AnUnknownMethodIsDeniedToEveryRole) {
  for (crypto::Role role : {crypto::Role::kAdmin, crypto::Role::kAuditor, crypto::Role::kSite, crypto::Role::kServer}) {
    EXPECT_EQ(CheckAccess("x", role, "/cohort.v1.Admin/DropDatabase").code(), absl::StatusCode::kPermissionDenied);
  }
}

TEST(AccessPolicy, AuditorsReadStatusAndTheLogAndNothingElse) {
  for (std::string_view m : KnownMethods()) {
    const Permission p = *RequiredPermission(m);
    EXPECT_EQ(RoleHolds(crypto::Role::kAuditor, p), p == Permission::kReadStatus || p == Permission::kReadAudit) << m;
    EXPECT_FALSE(RoleHolds(crypto::Role::kServer, p)) << m;
    // Sites and admins never share a permission: a site cannot administer, an admin cannot train.
    EXPECT_NE(RoleHolds(crypto::Role::kSite, p), RoleHolds(crypto::Role::kAdmin, p)) << m;
  }
}

TEST(AccessPolicy, ADenialNamesTheIdentityTheRoleAndTheMissingPermission) {
  const absl::Status s = CheckAccess("hospital-a", crypto::Role::kSite, "/cohort.v1.Admin/SetParameter");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("hospital-a (role site)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("job.set_parameter"), std::string::npos) << s.message();
}

// One minimal call of each RPC. The arguments are chosen so that an allowed call does no
// lasting harm (a stop is made last) and returns quickly.
using Call = std::function<grpc::Status(grpc::Channel&)>;

std::map<std::string, Call> Calls() {
  auto deadline = [](grpc::ClientContext& c) {
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  };
  std::map<std::string, Call> calls;
  calls["/cohort.v1.Federation/Join"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::JoinReply r;
    return v1::Federation::NewStub(std::shared_ptr<grpc::Channel>(&ch, [](auto*) {}))
        ->Join(&c, v1::JoinRequest(), &r);
  };
  calls["/cohort.v1.Federation/PullTask"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::TaskRequest request;
    request.set_wait_ms(0);
    auto reader = v1::Federation::NewStub(std::shared_ptr<grpc::Channel>(&ch, [](auto*) {}))->PullTask(&c, request);
    v1::TaskMessage m;
    while (reader->Read(&m)) {
    }
    return reader->Finish();
  };
  calls["/cohort.v1.Federation/PushUpdate"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::UpdateReceipt receipt;
    auto writer = v1::Federation::NewStub(std::shared_ptr<grpc::Channel>(&ch, [](auto*) {}))->PushUpdate(&c, &receipt);
    writer->WritesDone();
    return writer->Finish();
  };
  calls["/cohort.v1.Federation/Heartbeat"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::HeartbeatReply r;
    return v1::Federation::NewStub(std::shared_ptr<grpc::Channel>(&ch, [](auto*) {}))
        ->Heartbeat(&c, v1::HeartbeatRequest(), &r);
  };
  calls["/cohort.v1.Federation/Decline"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::DeclineReply r;
    return v1::Federation::NewStub(std::shared_ptr<grpc::Channel>(&ch, [](auto*) {}))
        ->Decline(&c, v1::DeclineRequest(), &r);
  };
  // A horizontal job's server answers a site's Exchange with FAILED_PRECONDITION (it runs no
  // vertical job), everyone else's with PERMISSION_DENIED.
  calls["/cohort.v1.Vertical/Exchange"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    auto stream = v1::Vertical::NewStub(std::shared_ptr<grpc::Channel>(&ch, [](auto*) {}))->Exchange(&c);
    stream->WritesDone();
    v1::VerticalMessage m;
    while (stream->Read(&m)) {
    }
    return stream->Finish();
  };
  auto admin = [](grpc::Channel& ch) { return v1::Admin::NewStub(std::shared_ptr<grpc::Channel>(&ch, [](auto*) {})); };
  calls["/cohort.v1.Admin/GetStatus"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::StatusReply r;
    return admin(ch)->GetStatus(&c, v1::StatusRequest(), &r);
  };
  calls["/cohort.v1.Admin/ListJobs"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::ListJobsReply r;
    return admin(ch)->ListJobs(&c, v1::ListJobsRequest(), &r);
  };
  calls["/cohort.v1.Admin/StartJob"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::JobControlReply r;
    return admin(ch)->StartJob(&c, v1::JobControlRequest(), &r);
  };
  calls["/cohort.v1.Admin/StopJob"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::JobControlReply r;
    return admin(ch)->StopJob(&c, v1::JobControlRequest(), &r);
  };
  calls["/cohort.v1.Admin/SetParameter"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::SetParameterRequest request;
    request.set_parameter("learning_rate");
    request.set_value_json("0.02");
    v1::SetParameterReply r;
    return admin(ch)->SetParameter(&c, request, &r);
  };
  calls["/cohort.v1.Admin/ListParticipants"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::ListParticipantsReply r;
    return admin(ch)->ListParticipants(&c, v1::ListParticipantsRequest(), &r);
  };
  calls["/cohort.v1.Admin/AddParticipant"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::ParticipantRequest request;
    request.set_site("hospital-z");
    v1::ParticipantReply r;
    return admin(ch)->AddParticipant(&c, request, &r);
  };
  calls["/cohort.v1.Admin/RevokeParticipant"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    v1::ParticipantRequest request;
    request.set_site("nobody");
    v1::ParticipantReply r;
    return admin(ch)->RevokeParticipant(&c, request, &r);
  };
  calls["/cohort.v1.Admin/ReadAuditLog"] = [=](grpc::Channel& ch) {
    grpc::ClientContext c;
    deadline(c);
    auto reader = admin(ch)->ReadAuditLog(&c, v1::AuditLogRequest());
    v1::AuditLogChunk m;
    while (reader->Read(&m)) {
    }
    return reader->Finish();
  };
  return calls;
}

class PermissionMatrix : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-access-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    crypto::FederationSpec spec;
    spec.federation = "clinic";
    spec.server_host = "127.0.0.1";
    spec.participants = {{"hospital-a", crypto::Role::kSite},
                         {"alice", crypto::Role::kAdmin},
                         {"carol", crypto::Role::kAuditor}};
    ASSERT_TRUE(crypto::ProvisionFederation(spec, dir_ / "pki").ok());
    crypto::SigningKey key = crypto::SigningKey::Generate();
    audit_public_ = key.public_key();
    auto writer = audit::Writer::Open(dir_ / "audit.log", std::move(key));
    ASSERT_TRUE(writer.ok()) << writer.status().message();
    audit_ = std::move(*writer);

    core::JobConfig config;
    config.name = "matrix-job";
    config.federation.rounds = 1;
    config.federation.clients_per_round = 2;
    config.federation.min_clients = 2;
    config.federation.sites = {"hospital-a"};
    JobOptions options;
    options.config = config;
    options.initial_model = core::ParameterSet(core::Manifest({{"w", core::DType::kFloat32, {16}}}));
    options.out_dir = dir_ / "out";
    options.audit = audit_.get();
    job_ = std::move(*FederatedJob::Create(std::move(options)));
    absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(dir_ / "pki" / "server");
    ASSERT_TRUE(kit.ok());
    port_ = testing::ServeOnLoopback(*job_, wire::ServerCredentialsFromKit(*kit, dir_ / "pki" / "server"),
                                     /*linger_seconds=*/0, &serving_);
  }
  void TearDown() override {
    job_->Cancel();
    serving_.wait();
    std::filesystem::remove_all(dir_);
  }
  std::shared_ptr<grpc::Channel> ChannelAs(const std::string& name) {
    absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(dir_ / "pki" / name);
    EXPECT_TRUE(kit.ok());
    return grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), wire::ChannelCredentialsFromKit(*kit));
  }

  std::filesystem::path dir_;
  std::optional<crypto::SigningPublicKey> audit_public_;
  std::unique_ptr<audit::Writer> audit_;
  std::unique_ptr<FederatedJob> job_;
  std::future<absl::Status> serving_;
  int port_ = 0;
};

TEST_F(PermissionMatrix, EveryRoleGetsExactlyTheCallsTheTableAllowsOverMutualTls) {
  const std::map<std::string, Call> calls = Calls();
  ASSERT_EQ(calls.size(), KnownMethods().size());
  const std::vector<std::pair<std::string, crypto::Role>> roles = {
      {"hospital-a", crypto::Role::kSite}, {"carol", crypto::Role::kAuditor}, {"alice", crypto::Role::kAdmin}};
  std::vector<std::string> order;
  for (std::string_view m : KnownMethods()) {
    if (m != "/cohort.v1.Admin/StopJob") order.emplace_back(m);
  }
  order.emplace_back("/cohort.v1.Admin/StopJob");  // last: an allowed stop ends the job

  uint64_t denied = 0;
  for (const std::string& method : order) {
    for (const auto& [name, role] : roles) {
      auto channel = ChannelAs(name);
      const grpc::Status s = calls.at(method)(*channel);
      const bool allowed = RoleHolds(role, *RequiredPermission(method));
      if (allowed) {
        EXPECT_NE(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
            << name << " on " << method << ": " << s.error_message();
        EXPECT_NE(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << method;
      } else {
        ++denied;
        EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << name << " on " << method;
        EXPECT_NE(s.error_message().find(name + " (role " + std::string(crypto::RoleName(role)) + ")"),
                  std::string::npos)
            << s.error_message();
        EXPECT_NE(s.error_message().find(std::string(PermissionName(*RequiredPermission(method)))), std::string::npos)
            << s.error_message();
      }
    }
  }
  // Every denial is on the signed log, with who tried what.
  absl::StatusOr<audit::ReadResult> entries = audit::ReadEntries(dir_ / "audit.log");
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  uint64_t recorded = 0;
  for (const audit::Entry& e : entries->entries) {
    if (e.action == audit::action::kAccessDenied) {
      ++recorded;
      EXPECT_FALSE(e.target.parameter.empty());  // the method
      EXPECT_TRUE(e.actor == "hospital-a" || e.actor == "alice" || e.actor == "carol") << e.actor;
    }
  }
  EXPECT_EQ(recorded, denied);
  absl::StatusOr<audit::ChainVerification> verified =
      audit::VerifyAuditChain(dir_ / "audit.log", *audit_public_, audit_->head_hash(), audit_->entry_count());
  ASSERT_TRUE(verified.ok());
  EXPECT_FALSE(verified->failure.has_value());
}

TEST_F(PermissionMatrix, ASiteNotEnrolledInTheJobIsRefusedAndRecorded) {
  // hospital-a is enrolled; revoke it and it can no longer join.
  ASSERT_TRUE(job_->RevokeParticipant({"alice", "admin"}, "hospital-a", "left the study").ok());
  const grpc::Status s = Calls().at("/cohort.v1.Federation/Join")(*ChannelAs("hospital-a"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_NE(s.error_message().find("revoked"), std::string::npos) << s.error_message();
}

}  // namespace
}  // namespace cohort::server
