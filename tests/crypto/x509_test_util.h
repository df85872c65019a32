#pragma once
// Shared by the certificate tests: a federation CA per test and small OpenSSL readers.

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "crypto/certificate_authority.h"

namespace cohort::crypto::testing {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct CrlFree {
  void operator()(X509_CRL* c) const { X509_CRL_free(c); }
};

inline std::unique_ptr<X509, X509Free> ParsePem(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return cert;
}

// The CRL number extension of a PEM CRL, or -1.
inline long CrlNumber(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  std::unique_ptr<X509_CRL, CrlFree> crl(PEM_read_bio_X509_CRL(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  if (crl == nullptr) return -1;
  ASN1_INTEGER* number =
      static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr));
  const long value = number == nullptr ? -1 : ASN1_INTEGER_get(number);
  ASN1_INTEGER_free(number);
  return value;
}

inline CertificateRequest Request(std::string name, Role role) {
  CertificateRequest request;
  request.name = std::move(name);
  request.role = role;
  return request;
}

// A fresh CA for federation "hospitals".
class FederationCaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = CertificateAuthority::Create("hospitals", 3650);
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<CertificateAuthority>(std::move(*ca));
  }
  std::unique_ptr<CertificateAuthority> ca_;
};

}  // namespace cohort::crypto::testing
