#include "crypto/certificate_authority.h"

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

class CertificateAuthorityTest : public testing::FederationCaTest {};

TEST_F(CertificateAuthorityTest, TheRoleIsAUriSubjectAltNameSignedByTheCa) {
  auto issued = ca_->Issue(Request("alice", Role::kAdmin));
  ASSERT_TRUE(issued.ok());
  auto cert = ParsePem(issued->certificate_pem);
  ASSERT_NE(cert, nullptr);
  GENERAL_NAMES* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  ASSERT_NE(names, nullptr);
  std::vector<std::string> uris;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_URI) {
      const ASN1_STRING* uri = name->d.uniformResourceIdentifier;
      uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                        ASN1_STRING_length(uri));
    }
  }
  GENERAL_NAMES_free(names);
  EXPECT_EQ(uris, std::vector<std::string>{"cohort://role/admin"});
  EXPECT_EQ(X509_check_ca(cert.get()), 0) << "a participant certificate must not be a CA";
}

TEST_F(CertificateAuthorityTest, ACrlKeepsEarlierEntriesWhenAnotherIsAdded) {
  auto first = ca_->Issue(Request("site-a", Role::kSite));
  auto second = ca_->Issue(Request("site-b", Role::kSite));
  ASSERT_TRUE(first.ok() && second.ok());
  auto crl = ca_->CreateCrl();
  crl = ca_->AddToCrl(*crl, first->certificate_pem);
  ASSERT_TRUE(crl.ok());
  crl = ca_->AddToCrl(*crl, second->certificate_pem);
  ASSERT_TRUE(crl.ok()) << crl.status();
  EXPECT_EQ(CrlNumber(*crl), 3);
  EXPECT_FALSE(VerifyPeerCertificate(first->certificate_pem, ca_->certificate_pem(), *crl).ok());
  EXPECT_FALSE(VerifyPeerCertificate(second->certificate_pem, ca_->certificate_pem(), *crl).ok());
}

TEST_F(CertificateAuthorityTest, ACrlFromAnotherCaIsRefused) {
  auto other = CertificateAuthority::Create("other", 365);
  ASSERT_TRUE(other.ok());
  auto foreign_crl = other->CreateCrl();
  auto issued = ca_->Issue(Request("site-a", Role::kSite));
  ASSERT_TRUE(foreign_crl.ok() && issued.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(ca_->AddToCrl(*foreign_crl, issued->certificate_pem).status()));
  // And as a verifier's CRL it makes verification fail rather than pass unchecked.
  EXPECT_FALSE(VerifyPeerCertificate(issued->certificate_pem, ca_->certificate_pem(), *foreign_crl).ok());
}

TEST_F(CertificateAuthorityTest, TheCaRoundTripsThroughPemAndStillIssues) {
  auto key_pem = ca_->PrivateKeyPem();
  ASSERT_TRUE(key_pem.ok());
  auto loaded = CertificateAuthority::Load(ca_->certificate_pem(), *key_pem);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->federation(), "hospitals");
  auto issued = loaded->Issue(Request("site-z", Role::kSite));
  ASSERT_TRUE(issued.ok());
  EXPECT_TRUE(VerifyPeerCertificate(issued->certificate_pem, ca_->certificate_pem(), "").ok());

  auto other = CertificateAuthority::Create("hospitals", 365);
  ASSERT_TRUE(other.ok());
  auto mismatched = CertificateAuthority::Load(other->certificate_pem(), *key_pem);
  EXPECT_TRUE(absl::IsInvalidArgument(mismatched.status())) << mismatched.status();
}

TEST_F(CertificateAuthorityTest, OnlyTheServerMayCarryHostNames) {
  CertificateRequest request = Request("site-a", Role::kSite);
  request.dns_names = {"site-a.example.org"};
  EXPECT_TRUE(absl::IsInvalidArgument(ca_->Issue(request).status()));
  CertificateRequest bad_ip = Request("server", Role::kServer);
  bad_ip.ip_addresses = {"300.1.1.1"};
  EXPECT_TRUE(absl::IsInvalidArgument(ca_->Issue(bad_ip).status()));
}

}  // namespace
}  // namespace cohort::crypto
