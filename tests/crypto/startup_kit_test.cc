#include "crypto/startup_kit.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "crypto/provisioning.h"
#include "storage/atomic_write.h"
#include "tests/temp_dir.h"

namespace cohort::crypto {
namespace {

namespace fs = std::filesystem;
using cohort::testing::TempDir;

std::string Read(const fs::path& path) {
  auto text = storage::ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : std::string();
}

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
std::unique_ptr<X509, X509Free> LoadCertificate(const fs::path& path) {
  const std::string pem = Read(path);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return cert;
}

// Kits for a federation with sites A and B, the server on localhost.
class StartupKitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FederationSpec spec;
    spec.federation = "hospitals";
    spec.server_host = "localhost";
    spec.participants = {{"A", Role::kSite}, {"B", Role::kSite}};
    auto kits = ProvisionFederation(spec, out());
    ASSERT_TRUE(kits.ok()) << kits.status();
  }
  fs::path out() const { return dir_.path() / "fed"; }

  TempDir dir_;
};

TEST_F(StartupKitTest, LoadStartupKitRefusesAReadableKeyAndAConfigThatClaimsAnotherRole) {
  ASSERT_EQ(::chmod((out() / "A" / "key.pem").c_str(), 0644), 0);
  EXPECT_TRUE(absl::IsFailedPrecondition(LoadStartupKit(out() / "A").status()));

  auto config = nlohmann::json::parse(Read(out() / "B" / "config.json"));
  config["role"] = "admin";
  ASSERT_TRUE(storage::WriteFileAtomically(out() / "B" / "config.json", config.dump(),
                                           storage::kPublicFileMode, storage::IfExists::kReplace)
                  .ok());
  auto kit = LoadStartupKit(out() / "B");
  EXPECT_TRUE(absl::IsInvalidArgument(kit.status())) << kit.status();
}

TEST_F(StartupKitTest, AKitWhoseCertificateAnotherCaIssuedSaysSoNamingTheKitAndTheFix) {
  FederationSpec spec;
  spec.federation = "hospitals";
  spec.server_host = "localhost";
  spec.participants = {{"A", Role::kSite}};
  ASSERT_TRUE(ProvisionFederation(spec, dir_.path() / "other").ok());
  // A's kit with the CA of another provisioning of the same federation name.
  ASSERT_TRUE(storage::WriteFileAtomically(out() / "A" / "ca.pem",
                                           Read(dir_.path() / "other" / "A" / "ca.pem"),
                                           storage::kPublicFileMode, storage::IfExists::kReplace)
                  .ok());
  const absl::StatusOr<StartupKit> kit = LoadStartupKit(out() / "A");
  ASSERT_TRUE(absl::IsInvalidArgument(kit.status())) << kit.status();
  const std::string message(kit.status().message());
  EXPECT_NE(message.find("startup kit " + (out() / "A").string() +
                         ": the kit's own certificate cert.pem \"A\""),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("failed verification against the kit's CA ca.pem"), std::string::npos)
      << message;
  EXPECT_NE(message.find("cert.pem must chain to ca.pem of the same provisioning: provision"),
            std::string::npos)
      << message;
  EXPECT_EQ(message.find("peer"), std::string::npos) << message;
}

TEST_F(StartupKitTest, AHostileConfigJsonIsRefusedNamingTheFile) {
  const fs::path config = out() / "A" / "config.json";
  for (const std::string& text : {std::string(100'000, '[') + std::string(100'000, ']'),
                                  "{\"name\": \"" + std::string(50'000'000, 'x') + "\"}"}) {
    ASSERT_TRUE(storage::WriteFileAtomically(config, text, storage::kPublicFileMode,
                                             storage::IfExists::kReplace)
                    .ok());
    const absl::StatusOr<StartupKit> kit = LoadStartupKit(out() / "A");
    ASSERT_TRUE(absl::IsInvalidArgument(kit.status())) << kit.status().message().substr(0, 300);
    const std::string message(kit.status().message());
    EXPECT_EQ(message.rfind(config.string() + ": expected ", 0), 0u) << message.substr(0, 300);
    EXPECT_LT(message.size(), 300 + config.string().size()) << message.substr(0, 1000);
  }
}

// What gRPC's set_crl_directory does underneath: OpenSSL's hashed-directory lookup.
int VerifyWithCrlDirectory(const fs::path& ca_pem, const fs::path& crl_dir, const fs::path& cert) {
  auto ca = LoadCertificate(ca_pem);
  auto leaf = LoadCertificate(cert);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca.get());
  X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir());
  X509_LOOKUP_add_dir(lookup, crl_dir.c_str(), X509_FILETYPE_PEM);
  X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf.get(), nullptr);
  const int result = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  ERR_clear_error();
  return result;
}

TEST_F(StartupKitTest, TheServerKitsHashedCrlDirectoryRevokesThroughOpenSslsLookup) {
  const fs::path ca = out() / "server" / "ca.pem";
  const fs::path crls = out() / "server" / "crls";
  EXPECT_EQ(VerifyWithCrlDirectory(ca, crls, out() / "B" / "cert.pem"), X509_V_OK);
  ASSERT_TRUE(RevokeParticipant(out() / "ca", "B", out() / "server").ok());
  EXPECT_EQ(VerifyWithCrlDirectory(ca, crls, out() / "B" / "cert.pem"), X509_V_ERR_CERT_REVOKED);
  EXPECT_EQ(VerifyWithCrlDirectory(ca, crls, out() / "A" / "cert.pem"), X509_V_OK);
  EXPECT_EQ(std::distance(fs::directory_iterator(crls), fs::directory_iterator()), 1);
}

// A TLS 1.3 handshake between the server kit and a site kit over an in-memory BIO
// pair, with the settings gRPC uses: both sides verify the peer against ca.pem, the
// client checks the server's host name, the server requires a client certificate.
class TlsHandshake {
 public:
  TlsHandshake(const fs::path& server_kit, const fs::path& client_kit, bool check_crl) {
    server_ctx_ = MakeContext(TLS_server_method(), server_kit);
    client_ctx_ = MakeContext(TLS_client_method(), client_kit);
    if (check_crl) {
      const std::string crl_pem = Read(server_kit / "crl.pem");
      BIO* bio = BIO_new_mem_buf(crl_pem.data(), static_cast<int>(crl_pem.size()));
      X509_CRL* crl = PEM_read_bio_X509_CRL(bio, nullptr, nullptr, nullptr);
      BIO_free(bio);
      X509_STORE* store = SSL_CTX_get_cert_store(server_ctx_);
      X509_STORE_add_crl(store, crl);
      X509_CRL_free(crl);
      X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    server_ = SSL_new(server_ctx_);
    client_ = SSL_new(client_ctx_);
    BIO* client_bio = nullptr;
    BIO* server_bio = nullptr;
    BIO_new_bio_pair(&client_bio, 0, &server_bio, 0);
    SSL_set_bio(client_, client_bio, client_bio);
    SSL_set_bio(server_, server_bio, server_bio);
    SSL_set_connect_state(client_);
    SSL_set_accept_state(server_);
  }
  ~TlsHandshake() {
    SSL_free(client_);
    SSL_free(server_);
    SSL_CTX_free(client_ctx_);
    SSL_CTX_free(server_ctx_);
  }

  SSL* client() { return client_; }
  SSL* server() { return server_; }

  // True when both sides finished the handshake.
  bool Run() {
    bool client_done = false, server_done = false;
    for (int i = 0; i < 50 && !(client_done && server_done); ++i) {
      if (!client_done && !Step(client_, client_done)) return false;
      if (!server_done && !Step(server_, server_done)) return false;
    }
    // TLS 1.3 clients finish before the server has judged their certificate; one
    // read on the client side surfaces the server's alert, if any.
    char byte;
    SSL_read(client_, &byte, 0);
    return client_done && server_done &&
           SSL_get_verify_result(client_) == X509_V_OK &&
           SSL_get_verify_result(server_) == X509_V_OK;
  }

 private:
  static bool Step(SSL* ssl, bool& done) {
    const int rc = SSL_do_handshake(ssl);
    if (rc == 1) {
      done = true;
      return true;
    }
    const int error = SSL_get_error(ssl, rc);
    ERR_clear_error();
    return error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE;
  }

  static SSL_CTX* MakeContext(const SSL_METHOD* method, const fs::path& kit) {
    SSL_CTX* ctx = SSL_CTX_new(method);
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    EXPECT_EQ(SSL_CTX_use_certificate_file(ctx, (kit / "cert.pem").c_str(), SSL_FILETYPE_PEM), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx, (kit / "key.pem").c_str(), SSL_FILETYPE_PEM), 1);
    EXPECT_EQ(SSL_CTX_load_verify_locations(ctx, (kit / "ca.pem").c_str(), nullptr), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    return ctx;
  }

  SSL_CTX* server_ctx_ = nullptr;
  SSL_CTX* client_ctx_ = nullptr;
  SSL* server_ = nullptr;
  SSL* client_ = nullptr;
};

TEST_F(StartupKitTest, ServerAndSiteKitsCompleteAMutualTlsHandshakeOnLocalhostAnd127001) {
  {
    TlsHandshake tls(out() / "server", out() / "A", /*check_crl=*/true);
    SSL_set1_host(tls.client(), "localhost");
    ASSERT_TRUE(tls.Run());
    X509* peer = SSL_get1_peer_certificate(tls.server());
    ASSERT_NE(peer, nullptr);
    char cn[65] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof(cn));
    X509_free(peer);
    EXPECT_STREQ(cn, "A");
  }
  {
    TlsHandshake tls(out() / "server", out() / "A", /*check_crl=*/true);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(tls.client()), "127.0.0.1");
    EXPECT_TRUE(tls.Run());
  }
  {
    TlsHandshake tls(out() / "server", out() / "A", /*check_crl=*/true);
    SSL_set1_host(tls.client(), "wrong.example.org");
    EXPECT_FALSE(tls.Run()) << "the client accepted a server certificate for another host";
  }
}

TEST_F(StartupKitTest, AServerLoadingTheCrlRejectsARevokedSiteInTheTlsHandshake) {
  ASSERT_TRUE(RevokeParticipant(out() / "ca", "B", out() / "server").ok());
  TlsHandshake revoked(out() / "server", out() / "B", /*check_crl=*/true);
  SSL_set1_host(revoked.client(), "localhost");
  EXPECT_FALSE(revoked.Run());
  EXPECT_EQ(SSL_get_verify_result(revoked.server()), X509_V_ERR_CERT_REVOKED);
  TlsHandshake kept(out() / "server", out() / "A", /*check_crl=*/true);
  SSL_set1_host(kept.client(), "localhost");
  EXPECT_TRUE(kept.Run());
}

}  // namespace
}  // namespace cohort::crypto
