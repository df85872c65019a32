#include "bench/server/bench_pki.h"

#include "crypto/provisioning.h"
#include "crypto/startup_kit.h"
#include "wire/credentials.h"

namespace cohort::bench {

absl::StatusOr<BenchPki> BenchPki::Provision(const std::filesystem::path& dir, const std::vector<std::string>& sites) {
  crypto::FederationSpec spec;
  spec.federation = "bench";
  spec.server_host = "127.0.0.1";
  for (const std::string& site : sites) spec.participants.push_back({site, crypto::Role::kSite});
  if (absl::StatusOr<std::vector<crypto::ProvisionedKit>> kits = crypto::ProvisionFederation(spec, dir); !kits.ok()) {
    return kits.status();
  }
  BenchPki pki;
  pki.dir_ = dir;
  return pki;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> BenchPki::ServerCredentials() const {
  const std::filesystem::path server_kit = dir_ / crypto::kServerParticipantName;
  absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(server_kit);
  if (!kit.ok()) return kit.status();
  return wire::ServerCredentialsFromKit(*kit, server_kit);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> BenchPki::SiteCredentials(const std::string& site) const {
  absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(dir_ / site);
  if (!kit.ok()) return kit.status();
  return wire::ChannelCredentialsFromKit(*kit);
}

}  // namespace cohort::bench
