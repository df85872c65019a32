#pragma once
// A vertical party's end-to-end channels to the other parties of its job, from the
// introductions the server relayed in its start message: each introduction is checked
// against the party's own CA (a server that swaps in its own key cannot sign it) and a
// channel agreed with its key (crypto/party_channel.h); the server relays, never reads.

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/key_agreement.h"
#include "crypto/party_channel.h"
#include "crypto/startup_kit.h"
#include "proto/cohort.pb.h"

namespace cohort::client {

// One channel per other party of `parties` (this party is parties[me]), keyed by name.
// PermissionDenied for an introduction of someone who is not a party or one that does not
// verify; FailedPrecondition when a party's introduction is missing.
absl::StatusOr<std::map<std::string, crypto::PartyChannel>> AgreePartyChannels(
    const v1::VerticalStart& start, const crypto::StartupKit& kit, const crypto::X25519KeyPair& key_pair,
    const std::vector<std::string>& parties, size_t me);

}  // namespace cohort::client
