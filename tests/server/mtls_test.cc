// Mutual TLS on the server's RPCs: identities come from verified certificates, roles are
// enforced, and a wrong CA, a revoked certificate or no certificate is refused.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>

#include "crypto/key_agreement.h"
#include "crypto/provisioning.h"
#include "crypto/startup_kit.h"
#include "proto/cohort.grpc.pb.h"
#include "wire/credentials.h"
#include "server/federated_job.h"
#include "server/server.h"
#include "tests/server/served_job.h"

namespace cohort::server {
namespace {

std::filesystem::path TempDir() {
  char dir_template[] = "/tmp/cohort-mtls-test-XXXXXX";
  return ::mkdtemp(dir_template);
}

crypto::StartupKit Kit(const std::filesystem::path& dir) {
  absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(dir);
  EXPECT_TRUE(kit.ok()) << kit.status().message();
  return std::move(*kit);
}

class MtlsServer : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir();
    crypto::FederationSpec spec;
    spec.federation = "clinic";
    spec.server_host = "127.0.0.1";
    spec.participants = {{"hospital-a", crypto::Role::kSite},
                         {"hospital-b", crypto::Role::kSite},
                         {"alice", crypto::Role::kAdmin},
                         {"carol", crypto::Role::kAuditor}};
    ASSERT_TRUE(crypto::ProvisionFederation(spec, dir_ / "pki").ok());
    // A second federation whose CA this server does not trust.
    crypto::FederationSpec other = spec;
    other.federation = "elsewhere";
    other.participants = {{"hospital-a", crypto::Role::kSite}};
    ASSERT_TRUE(crypto::ProvisionFederation(other, dir_ / "other").ok());
    ASSERT_TRUE(crypto::RevokeParticipant(dir_ / "pki" / "ca", "hospital-b", dir_ / "pki" / "server").ok());

    core::JobConfig config;
    config.name = "mtls-job";
    config.federation.rounds = 1;
    config.federation.clients_per_round = 1;
    config.federation.min_clients = 1;
    JobOptions options;
    options.config = config;
    options.initial_model = core::ParameterSet(core::Manifest({{"w", core::DType::kFloat32, {16}}}));
    options.out_dir = dir_ / "out";
    job_ = std::move(*FederatedJob::Create(std::move(options)));
    port_ = testing::ServeOnLoopback(
        *job_, wire::ServerCredentialsFromKit(Kit(dir_ / "pki" / "server"), dir_ / "pki" / "server"),
        /*linger_seconds=*/0, &serving_);
  }

  void TearDown() override {
    job_->Cancel();
    serving_.wait();
    std::filesystem::remove_all(dir_);
  }

  std::shared_ptr<grpc::Channel> Channel(std::shared_ptr<grpc::ChannelCredentials> credentials) {
    return grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), credentials);
  }
  std::shared_ptr<grpc::Channel> ChannelAs(const std::string& name) {
    return Channel(wire::ChannelCredentialsFromKit(Kit(dir_ / "pki" / name)));
  }

  grpc::Status Join(std::shared_ptr<grpc::Channel> channel, const std::string& site) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::JoinRequest request;
    request.set_site(site);
    request.set_num_samples(10);
    const crypto::X25519KeyPair own = crypto::GenerateX25519KeyPair();
    request.set_client_public_key(reinterpret_cast<const char*>(own.public_key.data()), own.public_key.size());
    v1::JoinReply reply;
    grpc::Status s = v1::Federation::NewStub(channel)->Join(&context, request, &reply);
    if (s.ok()) joined_as_ = reply.client_id();
    return s;
  }

  grpc::Status Status(std::shared_ptr<grpc::Channel> channel) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::StatusReply reply;
    return v1::Admin::NewStub(channel)->GetStatus(&context, v1::StatusRequest(), &reply);
  }

  // A TLS handshake with the server by a raw OpenSSL client (hospital-a's kit) that
  // offers exactly `version`. Returns the version agreed, or 0 and the reason in `why`.
  int HandshakeOffering(int version, std::string* why) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    // This process's contexts refuse TLS below 1.3 too; the client must offer `version`
    // for real, so that a refusal can only come from the server.
    SSL_CTX_clear_options(ctx, SSL_OP_NO_SSL_MASK);
    EXPECT_EQ(SSL_CTX_set_min_proto_version(ctx, version), 1);
    EXPECT_EQ(SSL_CTX_set_max_proto_version(ctx, version), 1);
    EXPECT_EQ(SSL_CTX_get_options(ctx) & SSL_OP_NO_SSL_MASK, 0u);
    EXPECT_EQ(SSL_CTX_use_certificate_file(ctx, (dir_ / "pki" / "hospital-a" / "cert.pem").c_str(), SSL_FILETYPE_PEM), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx, (dir_ / "pki" / "hospital-a" / "key.pem").c_str(), SSL_FILETYPE_PEM), 1);
    EXPECT_EQ(SSL_CTX_load_verify_locations(ctx, (dir_ / "pki" / "hospital-a" / "ca.pem").c_str(), nullptr), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    static const unsigned char kH2[] = {2, 'h', '2'};
    SSL_CTX_set_alpn_protos(ctx, kH2, sizeof(kH2));
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    ERR_clear_error();
    int agreed = 0;
    if (SSL_connect(ssl) == 1) {
      agreed = SSL_version(ssl);
    } else {
      char reason[256];
      ERR_error_string_n(ERR_peek_last_error(), reason, sizeof(reason));
      *why = reason;
    }
    SSL_free(ssl);
    ::close(fd);
    SSL_CTX_free(ctx);
    return agreed;
  }

  std::filesystem::path dir_;
  std::unique_ptr<FederatedJob> job_;
  std::future<absl::Status> serving_;
  int port_ = 0;
  std::string joined_as_;
};

TEST_F(MtlsServer, ASiteJoinsUnderTheNameInItsCertificate) {
  const grpc::Status s = Join(ChannelAs("hospital-a"), "");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(joined_as_, "hospital-a");
}

TEST_F(MtlsServer, ASiteCannotActUnderAnotherSitesName) {
  const grpc::Status s = Join(ChannelAs("hospital-a"), "hospital-c");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_NE(s.error_message().find("hospital-a cannot act as hospital-c"), std::string::npos) << s.error_message();
}

TEST_F(MtlsServer, ASiteCertificateIsRefusedOnAnAdminCall) {
  const grpc::Status s = Status(ChannelAs("hospital-a"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_NE(s.error_message().find("role site"), std::string::npos) << s.error_message();
}

TEST_F(MtlsServer, AdminAndAuditorMayReadStatusButNotJoinAsSites) {
  EXPECT_TRUE(Status(ChannelAs("alice")).ok());
  EXPECT_TRUE(Status(ChannelAs("carol")).ok());
  const grpc::Status s = Join(ChannelAs("alice"), "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
}

TEST_F(MtlsServer, ACertificateFromAnotherCaFailsTheHandshake) {
  const grpc::Status s =
      Join(Channel(wire::ChannelCredentialsFromKit(Kit(dir_ / "other" / "hospital-a"))), "hospital-a");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(MtlsServer, ARevokedCertificateFailsTheHandshake) {
  const grpc::Status s = Join(ChannelAs("hospital-b"), "hospital-b");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(MtlsServer, AClientWithoutACertificateFailsTheHandshake) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = Kit(dir_ / "pki" / "hospital-a").ca_pem;
  const grpc::Status s = Join(Channel(grpc::SslCredentials(options)), "hospital-a");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(MtlsServer, OnlyTls13IsNegotiated) {
  std::string why;
  EXPECT_EQ(HandshakeOffering(TLS1_3_VERSION, &why), TLS1_3_VERSION) << why;
  // gRPC 1.51 alone would accept TLS 1.2. The client did offer it (a client that cannot
  // would fail with "no protocols available" before sending anything); the server hangs up.
  why.clear();
  EXPECT_EQ(HandshakeOffering(TLS1_2_VERSION, &why), 0);
  EXPECT_FALSE(why.empty());
  EXPECT_EQ(why.find("no protocols available"), std::string::npos) << why;
}

TEST_F(MtlsServer, APlaintextClientIsRefused) {
  const grpc::Status s = Join(Channel(grpc::InsecureChannelCredentials()), "hospital-a");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

}  // namespace
}  // namespace cohort::server
