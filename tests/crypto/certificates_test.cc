#include "crypto/certificates.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/crypto/x509_test_util.h"

namespace cohort::crypto {
namespace {

using testing::CrlNumber;
using testing::ParsePem;
using testing::Request;
using testing::X509Free;

class CertificatesTest : public testing::FederationCaTest {};

TEST_F(CertificatesTest, AnIssuedCertificateVerifiesAndCarriesItsNameRoleAndFederation) {
  auto issued = ca_->Issue(Request("clinic-3", Role::kAuditor));
  ASSERT_TRUE(issued.ok()) << issued.status();
  auto identity = VerifyPeerCertificate(issued->certificate_pem, ca_->certificate_pem(), "");
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_EQ(identity->name, "clinic-3");
  EXPECT_EQ(identity->role, Role::kAuditor);
  EXPECT_EQ(identity->federation, "hospitals");
  EXPECT_EQ(identity->serial_hex.size(), 32u);
  EXPECT_TRUE(CheckKeyMatchesCertificate(issued->certificate_pem, issued->private_key_pem).ok());
}

TEST_F(CertificatesTest, ACertificateWhoseRoleWasEditedNoLongerVerifies) {
  auto issued = ca_->Issue(Request("site-a", Role::kSite));
  ASSERT_TRUE(issued.ok());
  auto cert = ParsePem(issued->certificate_pem);
  unsigned char* der = nullptr;
  const int length = i2d_X509(cert.get(), &der);
  ASSERT_GT(length, 0);
  std::string bytes(reinterpret_cast<char*>(der), length);
  OPENSSL_free(der);
  const auto at = bytes.find("cohort://role/site");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 18, "cohort://role/sitx");
  const unsigned char* p = reinterpret_cast<const unsigned char*>(bytes.data());
  std::unique_ptr<X509, X509Free> edited(d2i_X509(nullptr, &p, length));
  ASSERT_NE(edited, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, edited.get());
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  const std::string edited_pem(data, size);
  BIO_free(bio);
  auto verified = VerifyPeerCertificate(edited_pem, ca_->certificate_pem(), "");
  EXPECT_TRUE(absl::IsUnauthenticated(verified.status())) << verified.status();
}

TEST_F(CertificatesTest, ACertificateFromAnotherCaClaimingARoleIsRejected) {
  auto rogue_ca = CertificateAuthority::Create("hospitals", 3650);
  ASSERT_TRUE(rogue_ca.ok());
  auto forged = rogue_ca->Issue(Request("server", Role::kServer));
  ASSERT_TRUE(forged.ok());
  auto verified = VerifyPeerCertificate(forged->certificate_pem, ca_->certificate_pem(), "");
  ASSERT_FALSE(verified.ok());
  EXPECT_TRUE(absl::IsUnauthenticated(verified.status())) << verified.status();
  EXPECT_NE(verified.status().message().find("\"server\""), std::string::npos) << verified.status();
}

TEST_F(CertificatesTest, ARevokedCertificateFailsVerificationAgainstTheCrl) {
  auto kept = ca_->Issue(Request("site-a", Role::kSite));
  auto revoked = ca_->Issue(Request("site-b", Role::kSite));
  ASSERT_TRUE(kept.ok() && revoked.ok());
  auto empty_crl = ca_->CreateCrl();
  ASSERT_TRUE(empty_crl.ok()) << empty_crl.status();
  EXPECT_EQ(CrlNumber(*empty_crl), 1);
  EXPECT_TRUE(VerifyPeerCertificate(revoked->certificate_pem, ca_->certificate_pem(), *empty_crl).ok());

  auto crl = ca_->AddToCrl(*empty_crl, revoked->certificate_pem);
  ASSERT_TRUE(crl.ok()) << crl.status();
  EXPECT_EQ(CrlNumber(*crl), 2);
  auto verified = VerifyPeerCertificate(revoked->certificate_pem, ca_->certificate_pem(), *crl);
  ASSERT_TRUE(absl::IsUnauthenticated(verified.status())) << verified.status();
  EXPECT_NE(verified.status().message().find("revoked"), std::string::npos) << verified.status();
  EXPECT_TRUE(VerifyPeerCertificate(kept->certificate_pem, ca_->certificate_pem(), *crl).ok());

  auto again = ca_->AddToCrl(*crl, revoked->certificate_pem);
  EXPECT_TRUE(absl::IsAlreadyExists(again.status())) << again.status();
}

TEST(RoleTest, ParsesEveryRoleNameAndRejectsOthers) {
  for (Role role : {Role::kServer, Role::kSite, Role::kAdmin, Role::kAuditor}) {
    auto parsed = ParseRole(RoleName(role));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, role);
  }
  EXPECT_TRUE(absl::IsInvalidArgument(ParseRole("root").status()));
}

}  // namespace
}  // namespace cohort::crypto
