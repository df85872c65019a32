#include "crypto/provisioning.h"

#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

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

mode_t ModeOf(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
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

FederationSpec Spec(std::string host = "localhost") {
  FederationSpec spec;
  spec.federation = "hospitals";
  spec.server_host = std::move(host);
  spec.participants = {{"A", Role::kSite}, {"B", Role::kSite}, {"alice", Role::kAdmin},
                       {"carol", Role::kAuditor}};
  return spec;
}

class ProvisioningTest : public ::testing::Test {
 protected:
  void Provision(const FederationSpec& spec = Spec()) {
    auto kits = ProvisionFederation(spec, out());
    ASSERT_TRUE(kits.ok()) << kits.status();
    ASSERT_EQ(kits->size(), spec.participants.size() + 1);
  }
  fs::path out() const { return dir_.path() / "fed"; }

  TempDir dir_;
};

TEST_F(ProvisioningTest, EveryKitLoadsAndVerifiesWithItsNameAndRole) {
  Provision();
  const std::vector<std::pair<std::string, Role>> expected = {
      {"server", Role::kServer}, {"A", Role::kSite}, {"B", Role::kSite},
      {"alice", Role::kAdmin},   {"carol", Role::kAuditor}};
  for (const auto& [name, role] : expected) {
    auto kit = LoadStartupKit(out() / name);
    ASSERT_TRUE(kit.ok()) << name << ": " << kit.status();
    EXPECT_EQ(kit->name, name);
    EXPECT_EQ(kit->role, role);
    EXPECT_EQ(kit->federation, "hospitals");
    EXPECT_EQ(kit->server_address, "localhost:50051");
    EXPECT_EQ(kit->ca_pem, Read(out() / "ca" / "ca.pem"));
    auto identity = VerifyPeerCertificate(kit->certificate_pem, Read(out() / "ca" / "ca.pem"),
                                          Read(out() / "ca" / "crl.pem"));
    ASSERT_TRUE(identity.ok()) << identity.status();
    EXPECT_EQ(identity->name, name);
    EXPECT_EQ(identity->role, role);
  }
  EXPECT_FALSE(Read(out() / "server" / "crl.pem").empty());
  EXPECT_FALSE(fs::exists(out() / "A" / "crl.pem"));
}

TEST_F(ProvisioningTest, KitCertificatesVerifyWithPlainOpenSsl) {
  Provision();
  auto ca = LoadCertificate(out() / "ca" / "ca.pem");
  auto site = LoadCertificate(out() / "A" / "cert.pem");
  ASSERT_NE(ca, nullptr);
  ASSERT_NE(site, nullptr);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca.get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, site.get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
  EXPECT_EQ(X509_verify_cert(ctx), 1)
      << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  char cn[65] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(site.get()), NID_commonName, cn, sizeof(cn));
  EXPECT_STREQ(cn, "A");
}

TEST_F(ProvisioningTest, PrivateKeysAreMode0600AndKitsMode0700EvenWithAnOpenUmask) {
  const mode_t previous = ::umask(0);
  Provision();
  ::umask(previous);
  EXPECT_EQ(ModeOf(out() / "ca" / "ca-key.pem"), 0600u);
  EXPECT_EQ(ModeOf(out() / "ca"), 0700u);
  for (const char* name : {"server", "A", "B", "alice", "carol"}) {
    EXPECT_EQ(ModeOf(out() / name / "key.pem"), 0600u) << name;
    EXPECT_EQ(ModeOf(out() / name), 0700u) << name;
    EXPECT_EQ(ModeOf(out() / name / "cert.pem"), 0644u) << name;
  }
}

TEST_F(ProvisioningTest, ConfigJsonNamesFederationParticipantRoleAndServer) {
  FederationSpec spec = Spec("fl.example.org");
  spec.server_port = 7443;
  Provision(spec);
  const auto config = nlohmann::json::parse(Read(out() / "carol" / "config.json"));
  EXPECT_EQ(config.at("federation"), "hospitals");
  EXPECT_EQ(config.at("name"), "carol");
  EXPECT_EQ(config.at("role"), "auditor");
  EXPECT_EQ(config.at("server_address"), "fl.example.org:7443");
}

TEST_F(ProvisioningTest, ALocalServerCertificateMatchesLocalhostAnd127001AndSitesMatchNoHost) {
  Provision();
  auto server = LoadCertificate(out() / "server" / "cert.pem");
  auto site = LoadCertificate(out() / "A" / "cert.pem");
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(X509_check_host(server.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(server.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(server.get(), "::1", 0), 1);
  EXPECT_NE(X509_check_host(server.get(), "example.org", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(site.get(), "localhost", 0, 0, nullptr), 1);
}

TEST_F(ProvisioningTest, ANamedServerCertificateCarriesItsHostAndAlternativeNames) {
  FederationSpec spec = Spec("fl.example.org");
  spec.server_alt_names = {"10.0.0.5", "fl-backup.example.org"};
  Provision(spec);
  auto server = LoadCertificate(out() / "server" / "cert.pem");
  EXPECT_EQ(X509_check_host(server.get(), "fl.example.org", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(server.get(), "fl-backup.example.org", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(server.get(), "10.0.0.5", 0), 1);
  EXPECT_NE(X509_check_host(server.get(), "localhost", 0, 0, nullptr), 1);
}

TEST_F(ProvisioningTest, RefusesAnExistingKitDirectoryAndWritesNothing) {
  fs::create_directories(out() / "B");
  auto kits = ProvisionFederation(Spec(), out());
  ASSERT_TRUE(absl::IsAlreadyExists(kits.status())) << kits.status();
  EXPECT_NE(kits.status().message().find((out() / "B").string()), std::string::npos);
  EXPECT_FALSE(fs::exists(out() / "ca"));
  EXPECT_FALSE(fs::exists(out() / "A"));
}

TEST_F(ProvisioningTest, RefusesToProvisionTwiceIntoTheSameDirectory) {
  Provision();
  const std::string ca_before = Read(out() / "ca" / "ca.pem");
  auto again = ProvisionFederation(Spec(), out());
  EXPECT_TRUE(absl::IsAlreadyExists(again.status())) << again.status();
  EXPECT_EQ(Read(out() / "ca" / "ca.pem"), ca_before);
}

TEST_F(ProvisioningTest, RejectsBadNamesHostsAndDuplicatesBeforeWritingAnything) {
  const auto expect_invalid = [&](FederationSpec spec, const std::string& needle) {
    auto kits = ProvisionFederation(spec, out());
    EXPECT_TRUE(absl::IsInvalidArgument(kits.status())) << kits.status();
    EXPECT_NE(kits.status().message().find(needle), std::string::npos) << kits.status();
  };
  FederationSpec traversal = Spec();
  traversal.participants.push_back({"../evil", Role::kSite});
  expect_invalid(traversal, "../evil");
  FederationSpec reserved = Spec();
  reserved.participants.push_back({"ca", Role::kSite});
  expect_invalid(reserved, "reserved");
  FederationSpec duplicate = Spec();
  duplicate.participants.push_back({"A", Role::kAdmin});
  expect_invalid(duplicate, "twice");
  expect_invalid(Spec("localhost:50051"), "localhost:50051");
  FederationSpec federation = Spec();
  federation.federation = "my federation";
  expect_invalid(federation, "my federation");
  EXPECT_FALSE(fs::exists(out() / "ca"));
}

TEST_F(ProvisioningTest, AParticipantAddedLaterVerifiesAgainstTheSameCa) {
  Provision();
  const std::string a_cert_before = Read(out() / "A" / "cert.pem");
  auto added = AddParticipants(out() / "ca", {{"C", Role::kSite}, {"dave", Role::kAdmin}}, out());
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_EQ(added->size(), 2u);
  auto kit = LoadStartupKit(out() / "C");
  ASSERT_TRUE(kit.ok()) << kit.status();
  EXPECT_EQ(kit->role, Role::kSite);
  EXPECT_EQ(kit->server_address, "localhost:50051");
  EXPECT_EQ(kit->ca_pem, Read(out() / "ca" / "ca.pem"));
  EXPECT_TRUE(fs::exists(out() / "ca" / "issued" / "C.pem"));
  EXPECT_EQ(ModeOf(out() / "C" / "key.pem"), 0600u);
  EXPECT_EQ(Read(out() / "A" / "cert.pem"), a_cert_before);
}

TEST_F(ProvisioningTest, AddingANameTheCaAlreadyIssuedOrAnExistingKitIsRefused) {
  Provision();
  auto issued_name = AddParticipants(out() / "ca", {{"A", Role::kSite}}, dir_.path() / "elsewhere");
  EXPECT_TRUE(absl::IsAlreadyExists(issued_name.status())) << issued_name.status();
  fs::create_directories(out() / "E");
  auto existing_kit = AddParticipants(out() / "ca", {{"E", Role::kSite}}, out());
  EXPECT_TRUE(absl::IsAlreadyExists(existing_kit.status())) << existing_kit.status();
  EXPECT_FALSE(fs::exists(out() / "ca" / "issued" / "E.pem"));
  auto server_role = AddParticipants(out() / "ca", {{"s2", Role::kServer}}, out());
  EXPECT_TRUE(absl::IsInvalidArgument(server_role.status())) << server_role.status();
}

TEST_F(ProvisioningTest, ARevokedParticipantFailsVerificationAndOthersStillPass) {
  Provision();
  const std::string ca_pem = Read(out() / "ca" / "ca.pem");
  auto crl = RevokeParticipant(out() / "ca", "B", out() / "server");
  ASSERT_TRUE(crl.ok()) << crl.status();
  EXPECT_EQ(Read(out() / "ca" / "crl.pem"), *crl);
  EXPECT_EQ(Read(out() / "server" / "crl.pem"), *crl);

  auto revoked = VerifyPeerCertificate(Read(out() / "B" / "cert.pem"), ca_pem, *crl);
  ASSERT_TRUE(absl::IsUnauthenticated(revoked.status())) << revoked.status();
  EXPECT_NE(revoked.status().message().find("revoked"), std::string::npos);
  EXPECT_TRUE(VerifyPeerCertificate(Read(out() / "A" / "cert.pem"), ca_pem, *crl).ok());
  EXPECT_TRUE(LoadStartupKit(out() / "server").ok());

  auto again = RevokeParticipant(out() / "ca", "B", "");
  EXPECT_TRUE(absl::IsAlreadyExists(again.status())) << again.status();
  auto unknown = RevokeParticipant(out() / "ca", "Z", "");
  EXPECT_TRUE(absl::IsNotFound(unknown.status())) << unknown.status();
  auto second = RevokeParticipant(out() / "ca", "carol", "");
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(VerifyPeerCertificate(Read(out() / "B" / "cert.pem"), ca_pem, *second).ok());
  EXPECT_FALSE(VerifyPeerCertificate(Read(out() / "carol" / "cert.pem"), ca_pem, *second).ok());
}

TEST_F(ProvisioningTest, RevocationRefusesAServerKitOfAnotherFederation) {
  Provision();
  const fs::path other = dir_.path() / "other";
  ASSERT_TRUE(ProvisionFederation(Spec(), other).ok());
  const std::string crl_before = Read(out() / "ca" / "crl.pem");
  auto crl = RevokeParticipant(out() / "ca", "A", other / "server");
  EXPECT_TRUE(absl::IsInvalidArgument(crl.status())) << crl.status();
  EXPECT_EQ(Read(out() / "ca" / "crl.pem"), crl_before);
}

}  // namespace
}  // namespace cohort::crypto
