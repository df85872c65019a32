#include "client/party_channels.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "wire/convert.h"

namespace cohort::client {

absl::StatusOr<std::map<std::string, crypto::PartyChannel>> AgreePartyChannels(
    const v1::VerticalStart& start, const crypto::StartupKit& kit, const crypto::X25519KeyPair& key_pair,
    const std::vector<std::string>& parties, size_t me) {
  std::map<std::string, crypto::PartyChannel> channels;
  for (const v1::PartyIntroduction& proto : start.introductions()) {
    if (proto.party() == kit.name) continue;
    if (std::find(parties.begin(), parties.end(), proto.party()) == parties.end()) {
      return absl::PermissionDeniedError(
          absl::StrCat("the server relayed an introduction of \"", proto.party(), "\", which is not a party of the job"));
    }
    // Introductions are signed for the federation (the job's name is not known at hello);
    // the channel keys below bind the job.
    absl::StatusOr<crypto::PartyIntroduction> intro = wire::FromProto(proto, kit.federation);
    if (!intro.ok()) return intro.status();
    if (absl::Status s = crypto::VerifyPartyIntroduction(*intro, kit.ca_pem, kit.federation, proto.party()); !s.ok()) {
      return s;
    }
    absl::StatusOr<crypto::PartyChannel> channel = crypto::PartyChannel::Agree(start.job(), kit.name, key_pair, *intro);
    if (!channel.ok()) return channel.status();
    channels.emplace(proto.party(), std::move(*channel));
  }
  for (size_t p = 0; p < parties.size(); ++p) {
    if (p != me && !channels.contains(parties[p])) {
      return absl::FailedPreconditionError(absl::StrCat("the server sent no introduction of party \"", parties[p], "\""));
    }
  }
  return channels;
}

}  // namespace cohort::client
