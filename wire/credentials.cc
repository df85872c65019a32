#include "wire/credentials.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/conf.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <mutex>

namespace cohort::wire {
namespace {

// OpenSSL configuration applied to every TLS context this process creates from now on:
// TLS 1.3 only. gRPC 1.51 offers no setting for the protocol version and sets a TLS 1.2
// minimum on each context it makes, so the older versions are switched off as options
// ("Protocol"), which OpenSSL honours whatever the minimum says.
constexpr char kTls13OnlyConfig[] = R"(
cohort = cohort_modules
[cohort_modules]
ssl_conf = cohort_ssl
[cohort_ssl]
system_default = cohort_tls13_only
[cohort_tls13_only]
MinProtocol = TLSv1.3
Protocol = -ALL, TLSv1.3
)";

// Runs once, before the first credentials are made (gRPC makes its SSL_CTX from them).
// Without it a peer could still negotiate TLS 1.2; failing to apply it is fatal rather
// than a silent downgrade.
void RequireTls13() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Loads the system configuration first, so that OpenSSL's own first-use
    // initialisation cannot later replace ours.
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, nullptr);
    CONF* conf = NCONF_new(nullptr);
    BIO* text = BIO_new_mem_buf(kTls13OnlyConfig, -1);
    long error_line = 0;
    const bool applied = conf != nullptr && text != nullptr && NCONF_load_bio(conf, text, &error_line) > 0 &&
                         CONF_modules_load(conf, "cohort", 0) > 0;
    BIO_free(text);
    NCONF_free(conf);
    if (!applied) {
      char reason[256];
      ERR_error_string_n(ERR_get_error(), reason, sizeof(reason));
      spdlog::critical("cannot restrict TLS to version 1.3 (OpenSSL: {}); refusing to run with older versions",
                       reason);
      std::abort();
    }
  });
}

std::string KeyPem(const crypto::StartupKit& kit) {
  const auto key = kit.private_key_pem.span();
  return std::string(reinterpret_cast<const char*>(key.data()), key.size());
}

}  // namespace

std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFromKit(const crypto::StartupKit& kit,
                                                                  const std::filesystem::path& kit_dir) {
  RequireTls13();
  auto provider = std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
      kit.ca_pem, std::vector<grpc::experimental::IdentityKeyCertPair>{{KeyPem(kit), kit.certificate_pem}});
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  // OpenSSL's hashed-directory lookup: a revoked site fails the handshake.
  if (std::filesystem::exists(kit_dir / "crls")) options.set_crl_directory((kit_dir / "crls").string());
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFromKit(const crypto::StartupKit& kit) {
  RequireTls13();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = kit.ca_pem;
  options.pem_private_key = KeyPem(kit);
  options.pem_cert_chain = kit.certificate_pem;
  return grpc::SslCredentials(options);
}

absl::StatusOr<crypto::CertificateIdentity> PeerIdentity(const grpc::ServerContextBase& context) {
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) {
    return absl::UnauthenticatedError("the call carries no verified client certificate");
  }
  const std::vector<grpc::string_ref> pem = auth->FindPropertyValues("x509_pem_cert");
  if (pem.empty()) return absl::UnauthenticatedError("the peer's certificate is not available");
  return crypto::ReadCertificateIdentity(std::string_view(pem.front().data(), pem.front().size()));
}

}  // namespace cohort::wire
