#pragma once
// The private set intersection of a vertical job's parties (crypto/psi.h), as messages
// relayed by the server between them (wire/vertical_client.h): each party's blinded list
// travels the ring of parties, every party blinding it with its own key; feature parties
// send their fully blinded lists, sorted, to the label party, which intersects them and
// returns the intersection. With three or more parties each owner also masks its own list,
// so no other party holds its values blinded to exactly the full key.

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort::wire {
class VerticalClient;
}

namespace cohort::client {

// How long one party waits for another's message. The server's party_timeout_s decides
// when a silent party fails the job (it then aborts every stream); this only bounds a
// wait the server forgot.
inline constexpr std::chrono::milliseconds kPartyMessageWait = std::chrono::hours(1);

// This party's place in the job: the relay, every party's name in the job's order, which
// one is this party and which holds the labels.
struct RingParty {
  wire::VerticalClient& client;
  const std::vector<std::string>& parties;
  size_t me = 0;
  size_t label = 0;
  std::string job;
  int threads = 1;
};

// This party's row indices (into `identifiers`) of the rows every party holds, in the
// intersection's order (the same order at every party, changing with each run's keys).
// FailedPrecondition when the parties share no identifier.
absl::StatusOr<std::vector<size_t>> IntersectOverRing(const RingParty& party,
                                                      const std::vector<std::string>& identifiers);

}  // namespace cohort::client
