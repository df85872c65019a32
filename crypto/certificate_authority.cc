#include "crypto/certificate_authority.h"

#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "crypto/openssl_util.h"
#include "crypto/x509_util.h"

namespace cohort::crypto {
namespace {

using internal::Asn1IntegerPtr;
using internal::BignumPtr;
using internal::GeneralNamesPtr;
using internal::OpenSslError;
using internal::CertificateToPem;
using internal::CrlToPem;
using internal::NameEntry;
using internal::ParseCertificate;
using internal::ParseCrl;
using internal::ParsePrivateKey;
using internal::PrivateKeyToPem;
using internal::SerialHex;
using internal::PkeyPtr;
using internal::ToAbsl;
using internal::X509CrlPtr;
using internal::X509ExtensionPtr;
using internal::X509Ptr;

constexpr int kMaxValidityDays = 100 * 365;
constexpr long kClockSkewSeconds = 5 * 60;
constexpr int kSerialBytes = 16;
// RFC 5280's upper bound for a common name or organization name.
constexpr std::size_t kMaxNameAttributeSize = 64;


absl::Status CheckValidityDays(int days) {
  if (days >= 1 && days <= kMaxValidityDays) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "certificate validity: expected 1 to ", kMaxValidityDays, " days, got ", days));
}

absl::StatusOr<PkeyPtr> GenerateP256Key() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (key == nullptr) return OpenSslError("EVP_PKEY_Q_keygen(EC P-256)");
  return key;
}

absl::StatusOr<Asn1IntegerPtr> RandomSerial() {
  unsigned char bytes[kSerialBytes];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return OpenSslError("RAND_bytes(serial)");
  // Positive (top bit clear) and never zero or short (second-highest bit set).
  bytes[0] = static_cast<unsigned char>((bytes[0] & 0x7f) | 0x40);
  BignumPtr bn(BN_bin2bn(bytes, sizeof(bytes), nullptr));
  if (bn == nullptr) return OpenSslError("BN_bin2bn(serial)");
  Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  if (serial == nullptr) return OpenSslError("BN_to_ASN1_INTEGER(serial)");
  return serial;
}

absl::Status AddNameEntry(X509_NAME* name, const char* field, std::string_view value) {
  if (value.empty() || value.size() > kMaxNameAttributeSize) {
    return absl::InvalidArgumentError(absl::StrCat("certificate subject ", field,
                                                   ": expected 1 to ", kMaxNameAttributeSize,
                                                   " bytes, got ", value.size()));
  }
  if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(value.data()),
                                 static_cast<int>(value.size()), -1, 0) != 1) {
    return OpenSslError(absl::StrCat("X509_NAME_add_entry_by_txt(", field, ")"));
  }
  return absl::OkStatus();
}

// An extension given in OpenSSL's config syntax, with `issuer` and `subject` set in
// the context so that "hash" and "keyid:always" can be computed.
absl::Status AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (ext == nullptr || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpenSslError(absl::StrCat("adding certificate extension ", OBJ_nid2sn(nid), "=", value));
  }
  return absl::OkStatus();
}

absl::Status PushGeneralName(GENERAL_NAMES* names, int type, std::string_view value) {
  GENERAL_NAME* name = GENERAL_NAME_new();
  if (name == nullptr) return OpenSslError("GENERAL_NAME_new");
  if (type == GEN_IPADD) {
    const std::string text(value);
    ASN1_OCTET_STRING* ip = a2i_IPADDRESS(text.c_str());
    if (ip == nullptr) {
      GENERAL_NAME_free(name);
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat("server IP address: expected an IPv4 or IPv6 address, got \"",
                       ToAbsl(value), "\""));
    }
    GENERAL_NAME_set0_value(name, GEN_IPADD, ip);
  } else {
    ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
    if (ia5 == nullptr ||
        ASN1_STRING_set(ia5, value.data(), static_cast<int>(value.size())) != 1) {
      ASN1_IA5STRING_free(ia5);
      GENERAL_NAME_free(name);
      return OpenSslError("ASN1_STRING_set(subjectAltName)");
    }
    GENERAL_NAME_set0_value(name, type, ia5);
  }
  if (sk_GENERAL_NAME_push(names, name) <= 0) {
    GENERAL_NAME_free(name);
    return OpenSslError("sk_GENERAL_NAME_push");
  }
  return absl::OkStatus();
}

// Fills in what every certificate of the federation shares.
absl::Status SetCommonFields(X509* cert, EVP_PKEY* subject_key, std::string_view federation,
                             std::string_view common_name, int validity_days) {
  if (X509_set_version(cert, X509_VERSION_3) != 1) return OpenSslError("X509_set_version");
  absl::StatusOr<Asn1IntegerPtr> serial = RandomSerial();
  if (!serial.ok()) return serial.status();
  if (X509_set_serialNumber(cert, serial->get()) != 1) {
    return OpenSslError("X509_set_serialNumber");
  }
  if (X509_gmtime_adj(X509_getm_notBefore(cert), -kClockSkewSeconds) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert), validity_days, 0, nullptr) == nullptr) {
    return OpenSslError("setting the certificate validity");
  }
  X509_NAME* subject = X509_get_subject_name(cert);
  if (absl::Status s = AddNameEntry(subject, "O", federation); !s.ok()) return s;
  if (absl::Status s = AddNameEntry(subject, "CN", common_name); !s.ok()) return s;
  if (X509_set_pubkey(cert, subject_key) != 1) return OpenSslError("X509_set_pubkey");
  return absl::OkStatus();
}

}  // namespace

CertificateAuthority::CertificateAuthority(std::string federation, X509* certificate,
                                           EVP_PKEY* key, std::string certificate_pem)
    : federation_(std::move(federation)),
      certificate_(certificate),
      key_(key),
      certificate_pem_(std::move(certificate_pem)) {}

CertificateAuthority::CertificateAuthority(CertificateAuthority&& other) noexcept
    : federation_(std::move(other.federation_)),
      certificate_(std::exchange(other.certificate_, nullptr)),
      key_(std::exchange(other.key_, nullptr)),
      certificate_pem_(std::move(other.certificate_pem_)) {}

CertificateAuthority& CertificateAuthority::operator=(CertificateAuthority&& other) noexcept {
  if (this != &other) {
    X509_free(certificate_);
    EVP_PKEY_free(key_);
    federation_ = std::move(other.federation_);
    certificate_ = std::exchange(other.certificate_, nullptr);
    key_ = std::exchange(other.key_, nullptr);
    certificate_pem_ = std::move(other.certificate_pem_);
  }
  return *this;
}

CertificateAuthority::~CertificateAuthority() {
  X509_free(certificate_);
  EVP_PKEY_free(key_);
}

absl::StatusOr<CertificateAuthority> CertificateAuthority::Create(std::string_view federation,
                                                                  int validity_days) {
  if (absl::Status s = CheckValidityDays(validity_days); !s.ok()) return s;
  absl::StatusOr<PkeyPtr> key = GenerateP256Key();
  if (!key.ok()) return key.status();
  X509Ptr cert(X509_new());
  if (cert == nullptr) return OpenSslError("X509_new");
  const std::string common_name = absl::StrCat(ToAbsl(federation), " Cohort CA");
  if (absl::Status s =
          SetCommonFields(cert.get(), key->get(), federation, common_name, validity_days);
      !s.ok()) {
    return s;
  }
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) != 1) {
    return OpenSslError("X509_set_issuer_name");
  }
  // pathlen:0: the CA signs participant certificates only, never another CA.
  for (const auto& [nid, value] : std::initializer_list<std::pair<int, const char*>>{
           {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
           {NID_key_usage, "critical,keyCertSign,cRLSign"},
           {NID_subject_key_identifier, "hash"}}) {
    if (absl::Status s = AddExtension(cert.get(), cert.get(), nid, value); !s.ok()) return s;
  }
  if (X509_sign(cert.get(), key->get(), EVP_sha256()) <= 0) return OpenSslError("X509_sign(CA)");
  absl::StatusOr<std::string> pem = CertificateToPem(cert.get());
  if (!pem.ok()) return pem.status();
  return CertificateAuthority(std::string(federation), cert.release(), key->release(),
                              std::move(*pem));
}

absl::StatusOr<CertificateAuthority> CertificateAuthority::Load(
    std::string_view certificate_pem, const SecretBytes& private_key_pem) {
  absl::StatusOr<X509Ptr> cert = ParseCertificate(certificate_pem, "CA certificate");
  if (!cert.ok()) return cert.status();
  if (X509_check_ca(cert->get()) < 1) {
    return absl::InvalidArgumentError("CA certificate: is not a CA (basicConstraints CA:FALSE)");
  }
  absl::StatusOr<PkeyPtr> key = ParsePrivateKey(private_key_pem, "CA private key");
  if (!key.ok()) return key.status();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "CA private key: does not match the public key of the CA certificate");
  }
  absl::StatusOr<std::string> federation =
      NameEntry(X509_get_subject_name(cert->get()), NID_organizationName, "O (federation)");
  if (!federation.ok()) return federation.status();
  return CertificateAuthority(std::move(*federation), cert->release(), key->release(),
                              std::string(certificate_pem));
}

absl::StatusOr<SecretBytes> CertificateAuthority::PrivateKeyPem() const {
  return PrivateKeyToPem(key_);
}

absl::StatusOr<IssuedCertificate> CertificateAuthority::Issue(
    const CertificateRequest& request) const {
  if (absl::Status s = CheckValidityDays(request.validity_days); !s.ok()) return s;
  if (request.role != Role::kServer &&
      (!request.dns_names.empty() || !request.ip_addresses.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "certificate for \"", request.name, "\": only the server carries DNS or IP names"));
  }
  absl::StatusOr<PkeyPtr> key = GenerateP256Key();
  if (!key.ok()) return key.status();
  X509Ptr cert(X509_new());
  if (cert == nullptr) return OpenSslError("X509_new");
  if (absl::Status s = SetCommonFields(cert.get(), key->get(), federation_, request.name,
                                       request.validity_days);
      !s.ok()) {
    return s;
  }
  // Never outlive the CA: a chain with an expired root fails anyway, and the date on
  // the participant certificate should say so.
  if (ASN1_TIME_compare(X509_get0_notAfter(cert.get()), X509_get0_notAfter(certificate_)) > 0 &&
      X509_set1_notAfter(cert.get(), X509_get0_notAfter(certificate_)) != 1) {
    return OpenSslError("X509_set1_notAfter");
  }
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(certificate_)) != 1) {
    return OpenSslError("X509_set_issuer_name");
  }
  const char* extended_usage = request.role == Role::kServer ? "serverAuth" : "clientAuth";
  for (const auto& [nid, value] : std::initializer_list<std::pair<int, const char*>>{
           {NID_basic_constraints, "critical,CA:FALSE"},
           {NID_key_usage, "critical,digitalSignature"},
           {NID_ext_key_usage, extended_usage},
           {NID_subject_key_identifier, "hash"},
           {NID_authority_key_identifier, "keyid:always"}}) {
    if (absl::Status s = AddExtension(cert.get(), certificate_, nid, value); !s.ok()) return s;
  }

  GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
  if (names == nullptr) return OpenSslError("sk_GENERAL_NAME_new_null");
  for (const std::string& dns : request.dns_names) {
    if (absl::Status s = PushGeneralName(names.get(), GEN_DNS, dns); !s.ok()) return s;
  }
  for (const std::string& ip : request.ip_addresses) {
    if (absl::Status s = PushGeneralName(names.get(), GEN_IPADD, ip); !s.ok()) return s;
  }
  const std::string role_uri = absl::StrCat(ToAbsl(kRoleUriPrefix), ToAbsl(RoleName(request.role)));
  if (absl::Status s = PushGeneralName(names.get(), GEN_URI, role_uri); !s.ok()) return s;
  if (X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) !=
      1) {
    return OpenSslError("X509_add1_ext_i2d(subjectAltName)");
  }

  if (X509_sign(cert.get(), key_, EVP_sha256()) <= 0) return OpenSslError("X509_sign");
  absl::StatusOr<std::string> cert_pem = CertificateToPem(cert.get());
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<SecretBytes> key_pem = PrivateKeyToPem(key->get());
  if (!key_pem.ok()) return key_pem.status();
  return IssuedCertificate{std::move(*cert_pem), std::move(*key_pem)};
}

namespace {

// Signs `crl` (entries already added) as `ca` with CRL number `number`.
absl::StatusOr<std::string> FinishCrl(X509_CRL* crl, X509* ca, EVP_PKEY* ca_key,
                                      long number) {
  if (X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
      X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) != 1) {
    return OpenSslError("X509_CRL header");
  }
  internal::Asn1TimePtr now(X509_gmtime_adj(nullptr, 0));
  if (now == nullptr || X509_CRL_set1_lastUpdate(crl, now.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl, X509_get0_notAfter(ca)) != 1) {
    return OpenSslError("X509_CRL dates");
  }
  Asn1IntegerPtr crl_number(ASN1_INTEGER_new());
  if (crl_number == nullptr || ASN1_INTEGER_set(crl_number.get(), number) != 1 ||
      X509_CRL_add1_ext_i2d(crl, NID_crl_number, crl_number.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return OpenSslError("X509_CRL crlNumber");
  }
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, ca, nullptr, nullptr, crl, 0);
  X509ExtensionPtr aki(
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always"));
  if (aki == nullptr || X509_CRL_add_ext(crl, aki.get(), -1) != 1) {
    return OpenSslError("X509_CRL authorityKeyIdentifier");
  }
  if (X509_CRL_sort(crl) != 1) return OpenSslError("X509_CRL_sort");
  if (X509_CRL_sign(crl, ca_key, EVP_sha256()) <= 0) return OpenSslError("X509_CRL_sign");
  return CrlToPem(crl);
}

}  // namespace

absl::StatusOr<std::string> CertificateAuthority::CreateCrl() const {
  X509CrlPtr crl(X509_CRL_new());
  if (crl == nullptr) return OpenSslError("X509_CRL_new");
  return FinishCrl(crl.get(), certificate_, key_, 1);
}

absl::StatusOr<std::string> CertificateAuthority::AddToCrl(
    std::string_view crl_pem, std::string_view certificate_pem) const {
  absl::StatusOr<X509CrlPtr> previous = ParseCrl(crl_pem);
  if (!previous.ok()) return previous.status();
  if (X509_CRL_verify(previous->get(), key_) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("CRL: not signed by this federation's CA");
  }
  absl::StatusOr<X509Ptr> cert = ParseCertificate(certificate_pem, "certificate to revoke");
  if (!cert.ok()) return cert.status();
  if (X509_verify(cert->get(), key_) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("certificate to revoke: not issued by this federation's CA");
  }
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert->get());
  X509_REVOKED* listed = nullptr;
  if (X509_CRL_get0_by_serial(previous->get(), &listed, serial) == 1) {
    return absl::AlreadyExistsError(
        absl::StrCat("certificate with serial ", SerialHex(serial), " is already revoked"));
  }

  long number = 1;
  Asn1IntegerPtr previous_number(static_cast<ASN1_INTEGER*>(
      X509_CRL_get_ext_d2i(previous->get(), NID_crl_number, nullptr, nullptr)));
  if (previous_number != nullptr) number = ASN1_INTEGER_get(previous_number.get()) + 1;

  X509CrlPtr crl(X509_CRL_new());
  if (crl == nullptr) return OpenSslError("X509_CRL_new");
  const STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(previous->get());
  for (int i = 0; i < sk_X509_REVOKED_num(entries); ++i) {
    X509_REVOKED* copy = X509_REVOKED_dup(sk_X509_REVOKED_value(entries, i));
    if (copy == nullptr || X509_CRL_add0_revoked(crl.get(), copy) != 1) {
      X509_REVOKED_free(copy);
      return OpenSslError("copying a CRL entry");
    }
  }
  internal::X509RevokedPtr entry(X509_REVOKED_new());
  internal::Asn1TimePtr now(X509_gmtime_adj(nullptr, 0));
  if (entry == nullptr || now == nullptr ||
      X509_REVOKED_set_serialNumber(entry.get(), const_cast<ASN1_INTEGER*>(serial)) != 1 ||
      X509_REVOKED_set_revocationDate(entry.get(), now.get()) != 1 ||
      X509_CRL_add0_revoked(crl.get(), entry.get()) != 1) {
    return OpenSslError("adding the CRL entry");
  }
  entry.release();  // Owned by the CRL now.
  return FinishCrl(crl.get(), certificate_, key_, number);
}

}  // namespace cohort::crypto
