#include "client/psi_ring.h"

#include <algorithm>
#include <cstdint>
#include <span>

#include "absl/strings/str_cat.h"
#include "crypto/psi.h"
#include "wire/vertical_client.h"

namespace cohort::client {
namespace {

namespace psi = crypto::psi;

std::string RingTopic(size_t owner) { return absl::StrCat("psi/ring/", owner); }

absl::StatusOr<std::vector<psi::Point>> ReceivePoints(const RingParty& party, size_t from, const std::string& topic,
                                                      uint64_t sequence) {
  absl::StatusOr<std::vector<uint8_t>> bytes =
      party.client.Receive(party.parties[from], topic, sequence, kPartyMessageWait);
  if (!bytes.ok()) return bytes.status();
  return psi::PointsFromBytes(*bytes);
}

absl::Status SendPoints(const RingParty& party, size_t to, const std::string& topic, uint64_t sequence,
                        std::span<const psi::Point> points) {
  const std::vector<uint8_t> bytes = psi::PointsToBytes(points);
  return party.client.Send(party.parties[to], topic, sequence, bytes);
}

}  // namespace

absl::StatusOr<std::vector<size_t>> IntersectOverRing(const RingParty& party,
                                                      const std::vector<std::string>& identifiers) {
  const size_t n = party.parties.size();
  const psi::Scalar key = psi::Scalar::Random();
  const psi::Scalar mask = psi::Scalar::Random();
  const bool masked = psi::OwnerMasksList(n);
  // Relay sequence = hop: 1 from the owner to the first on its path, n back at the owner.
  const std::vector<size_t> own_path = psi::RingPath(party.me, n);
  {
    const std::vector<psi::Point> own =
        masked ? psi::HashAndBlind(party.job, identifiers, key.Times(mask), party.threads)
               : psi::HashAndBlind(party.job, identifiers, key, party.threads);
    if (absl::Status s = SendPoints(party, own_path[0], RingTopic(party.me), 1, own); !s.ok()) return s;
  }
  // The other parties' lists in the order they reach this party: the list that left its
  // owner one hop ago first. Every party working in that order, no wait can cycle.
  for (size_t back = 1; back < n; ++back) {
    const size_t owner = (party.me + n - back) % n;
    const std::vector<size_t> path = psi::RingPath(owner, n);
    const size_t position = back - 1;  // path[position] == party.me
    const size_t from = position == 0 ? owner : path[position - 1];
    absl::StatusOr<std::vector<psi::Point>> list = ReceivePoints(party, from, RingTopic(owner), position + 1);
    if (!list.ok()) return list.status();
    absl::StatusOr<std::vector<psi::Point>> blinded = psi::Blind(*list, key, party.threads);
    if (!blinded.ok()) return blinded.status();
    if (absl::Status s = SendPoints(party, path[position + 1], RingTopic(owner), position + 2, *blinded); !s.ok()) return s;
  }
  absl::StatusOr<std::vector<psi::Point>> returned = ReceivePoints(party, own_path[n - 2], RingTopic(party.me), n);
  if (!returned.ok()) return returned.status();
  std::vector<psi::Point> final_list;
  if (masked) {
    absl::StatusOr<std::vector<psi::Point>> unmasked = psi::Blind(*returned, mask.Inverse(), party.threads);
    if (!unmasked.ok()) return unmasked.status();
    final_list = std::move(*unmasked);
  } else {
    final_list = std::move(*returned);
  }
  if (final_list.size() != identifiers.size()) {
    return absl::DataLossError(absl::StrCat("party \"", party.parties[party.me], "\": its blinded list came back with ",
                                            final_list.size(), " values; it sent ", identifiers.size()));
  }

  std::vector<psi::Point> intersection;
  if (party.me != party.label) {
    // Sorted: the label party learns nothing of this party's row order.
    std::vector<psi::Point> sorted = final_list;
    std::sort(sorted.begin(), sorted.end());
    if (absl::Status s = SendPoints(party, party.label, "psi/final", 0, sorted); !s.ok()) return s;
    absl::StatusOr<std::vector<psi::Point>> result = ReceivePoints(party, party.label, "psi/result", 0);
    if (!result.ok()) return result.status();
    intersection = std::move(*result);
  } else {
    std::vector<std::vector<psi::Point>> lists(n);
    for (size_t p = 0; p < n; ++p) {
      if (p == party.me) continue;
      absl::StatusOr<std::vector<psi::Point>> list = ReceivePoints(party, p, "psi/final", 0);
      if (!list.ok()) return list.status();
      lists[p] = std::move(*list);
    }
    lists[party.me] = final_list;
    absl::StatusOr<std::vector<psi::Point>> all = psi::IntersectAll(lists);
    if (!all.ok()) {
      return absl::Status(all.status().code(),
                          absl::StrCat("intersecting the parties' blinded lists: ", all.status().message()));
    }
    if (all->empty()) return absl::FailedPreconditionError("the parties share no identifiers");
    intersection = std::move(*all);
    for (size_t p = 0; p < n; ++p) {
      if (p == party.me) continue;
      if (absl::Status s = SendPoints(party, p, "psi/result", 0, intersection); !s.ok()) return s;
    }
  }
  return psi::AlignedRows(final_list, intersection);
}

}  // namespace cohort::client
