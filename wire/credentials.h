#pragma once
// Channel security for every Cohort connection: mutual TLS with the federation's startup
// kits (crypto/startup_kit.h). The server requires and verifies a client certificate
// signed by the federation CA and not on its CRL; a peer's identity (name and role) is
// read from its verified certificate, never from what it says about itself.

#include <grpcpp/grpcpp.h>

#include <memory>

#include "absl/status/statusor.h"
#include "crypto/certificates.h"
#include "crypto/startup_kit.h"

namespace cohort::wire {

// Both refuse TLS versions before 1.3, for every TLS connection of the process.
//
// TLS server credentials from a server kit: its key and certificate, the CA as the only
// trust anchor, client certificates required and verified, revocation from `kit/crls`.
std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFromKit(const crypto::StartupKit& kit,
                                                                  const std::filesystem::path& kit_dir);
// TLS channel credentials from a participant's kit (site, admin, auditor).
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFromKit(const crypto::StartupKit& kit);

// The verified identity of the caller of a server RPC; Unauthenticated when the call did
// not come over mutual TLS with a readable Cohort certificate.
absl::StatusOr<crypto::CertificateIdentity> PeerIdentity(const grpc::ServerContextBase& context);

}  // namespace cohort::wire
