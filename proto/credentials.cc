#include "proto/credentials.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

namespace cohort::wire {
namespace {

std::string KeyPem(const crypto::StartupKit& kit) {
  const auto key = kit.private_key_pem.span();
  return std::string(reinterpret_cast<const char*>(key.data()), key.size());
}

}  // namespace

std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFromKit(const crypto::StartupKit& kit,
                                                                  const std::filesystem::path& kit_dir) {
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
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = kit.ca_pem;
  options.pem_private_key = KeyPem(kit);
  options.pem_cert_chain = kit.certificate_pem;
  return grpc::SslCredentials(options);
}

absl::StatusOr<crypto::CertificateIdentity> PeerIdentity(const grpc::ServerContext& context) {
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) {
    return absl::UnauthenticatedError("the call carries no verified client certificate");
  }
  const std::vector<grpc::string_ref> pem = auth->FindPropertyValues("x509_pem_cert");
  if (pem.empty()) return absl::UnauthenticatedError("the peer's certificate is not available");
  return crypto::ReadCertificateIdentity(std::string_view(pem.front().data(), pem.front().size()));
}

}  // namespace cohort::wire
