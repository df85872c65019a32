#pragma once
// The federation's certificate authority: creates the CA, issues participant
// certificates and signs CRLs. What the certificates contain, and why, is laid out
// once in crypto/certificates.h. All keys are ECDSA P-256, all signatures ECDSA with
// SHA-256. The CA key lives in this object and in the CA's own directory only
// (crypto/provisioning.h); it is never part of a startup kit.

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/certificates.h"
#include "crypto/secret.h"

typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_st X509;

namespace cohort::crypto {

struct CertificateRequest {
  std::string name;
  Role role = Role::kSite;
  // Server only: host names and IP addresses for the subjectAltName.
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  int validity_days = 365;
};

struct IssuedCertificate {
  std::string certificate_pem;
  SecretBytes private_key_pem;  // PKCS#8 PEM ("BEGIN PRIVATE KEY"), unencrypted.
};

// The federation CA: its certificate and private key. Move-only; the key is freed
// (and wiped by OpenSSL) with the object.
class CertificateAuthority {
 public:
  // A new CA with a fresh P-256 key and a self-signed certificate valid from five
  // minutes ago (clock skew between machines) for `validity_days`.
  static absl::StatusOr<CertificateAuthority> Create(std::string_view federation,
                                                     int validity_days);
  // A CA from its PEM certificate and key; fails if the key does not match.
  static absl::StatusOr<CertificateAuthority> Load(std::string_view certificate_pem,
                                                   const SecretBytes& private_key_pem);

  CertificateAuthority(CertificateAuthority&& other) noexcept;
  CertificateAuthority& operator=(CertificateAuthority&& other) noexcept;
  CertificateAuthority(const CertificateAuthority&) = delete;
  CertificateAuthority& operator=(const CertificateAuthority&) = delete;
  ~CertificateAuthority();

  const std::string& federation() const { return federation_; }
  const std::string& certificate_pem() const { return certificate_pem_; }
  absl::StatusOr<SecretBytes> PrivateKeyPem() const;

  // A fresh P-256 key and a certificate for it, laid out as above. The validity is
  // capped at the CA's own notAfter.
  absl::StatusOr<IssuedCertificate> Issue(const CertificateRequest& request) const;

  // A CRL with no entries and CRL number 1.
  absl::StatusOr<std::string> CreateCrl() const;
  // `crl_pem` (which must be signed by this CA) plus `certificate_pem` (which must be
  // issued by this CA), re-signed with the next CRL number. AlreadyExists when the
  // certificate is already listed.
  absl::StatusOr<std::string> AddToCrl(std::string_view crl_pem,
                                       std::string_view certificate_pem) const;

 private:
  CertificateAuthority(std::string federation, X509* certificate, EVP_PKEY* key,
                       std::string certificate_pem);

  std::string federation_;
  X509* certificate_ = nullptr;
  EVP_PKEY* key_ = nullptr;
  std::string certificate_pem_;
};

}  // namespace cohort::crypto
