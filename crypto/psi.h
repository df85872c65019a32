#pragma once
// Private set intersection by Diffie-Hellman over ristretto255 (libsodium), for the entity
// alignment of vertical jobs (docs/vertical.md tells the whole protocol).
//
// Every party holds a secret scalar k_i. An identifier x maps to the group point H(x)
// (SHA-512 of a domain tag and x, then crypto_core_ristretto255_from_hash); a list of
// points travels round the ring of parties, each raising every point to its own scalar
// and keeping the order, so the owner gets back H(x)^K with K the product of all scalars.
// The owner masks its list only when there are three or more parties: it sends H(x)^(e k_i)
// with a one-time scalar e and removes e when the list comes back (raising to e^-1). Without
// the mask, the last party on the ring would compute the owner's points raised to exactly K
// and could compare them with its own fully blinded list, learning the intersection of its
// set with the owner's alone, which is more than the intersection of all sets. With two
// parties that pairwise intersection is the result both may learn, so the mask (one scalar
// multiplication per own identifier) is skipped. The parties then compare fully blinded
// values only: equal values are the same identifier. Whoever intersects the fully blinded
// lists (IntersectAll) learns, for each value, which parties hold it: a party doing it learns
// that for each of its own rows (with three or more parties, more than the intersection); the
// server doing it learns it for anonymous values only. Each party then finds its rows with
// AlignedRows.
//
// Schedule for n parties: the list owned by party i is hashed and blinded by i
// (HashAndBlind with k_i, or e k_i when OwnerMasksList(n)), then blinded by each party of
// RingPath(i, n) but the last, which is i itself: it removes e when it masked, and holds
// H(x)^K. All operations are batched over a list and run on `threads` threads (0: one per
// core). Points are 32-byte ristretto255 encodings; Blind checks every point it is given
// (a list received from another party), HashAndBlind makes its own points and checks none.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/secret.h"

namespace cohort::crypto::psi {

inline constexpr std::size_t kPointBytes = 32;
inline constexpr std::size_t kScalarBytes = 32;
inline constexpr std::size_t kMaxDomainBytes = 0xffff;  // Its length travels as a u16.
using Point = std::array<std::uint8_t, kPointBytes>;

// A secret ristretto255 scalar, never zero, wiped on destruction.
class Scalar {
 public:
  static Scalar Random();
  // The inverse (for removing a one-time mask).
  Scalar Inverse() const;
  // this * other (mod the group order).
  Scalar Times(const Scalar& other) const;
  std::span<const std::uint8_t> bytes() const { return bytes_.span(); }

 private:
  explicit Scalar(SecretBytes bytes) : bytes_(std::move(bytes)) {}
  SecretBytes bytes_;
};

// The parties a list owned by party `owner` visits after leaving it, in order, for
// `parties` parties: owner+1, ..., owner+parties-1 (mod parties), then back to the owner.
// Each party on the path but the last blinds the list with its scalar; the last is the
// owner, which removes its mask (when OwnerMasksList) and keeps the result. Empty when
// parties < 2 or owner >= parties.
std::vector<std::size_t> RingPath(std::size_t owner, std::size_t parties);

// Whether the owner of a list masks it with a one-time scalar (three or more parties).
inline bool OwnerMasksList(std::size_t parties) { return parties >= 3; }

// H(x)^scalar for every identifier, in order. `domain` separates jobs (the job's name):
// the same identifier hashes to unrelated points in two jobs. H(x) is
// crypto_core_ristretto255_from_hash(SHA-512("cohort psi v1" || u16 len(domain) || domain
// || x)), the length big-endian. An identifier whose hash is the identity (probability about 2^-252)
// comes out as the identity, which the next party's Blind refuses. `domain` must be at most
// kMaxDomainBytes long (a job name is far shorter); a longer one aborts, as a caller's bug.
std::vector<Point> HashAndBlind(std::string_view domain, std::span<const std::string> identifiers,
                                const Scalar& scalar, int threads = 0);

// Every point raised to `scalar`, in order. InvalidArgument naming the first index whose
// bytes are not a valid ristretto255 point (or are the identity).
absl::StatusOr<std::vector<Point>> Blind(std::span<const Point> points, const Scalar& scalar,
                                         int threads = 0);

// Points <-> bytes, for the wire: a list is its points back to back. InvalidArgument when
// the size is not a multiple of 32. The points themselves are checked by Blind; IntersectAll
// compares bytes only, and a value that is not a valid encoding equals no honest value.
std::vector<std::uint8_t> PointsToBytes(std::span<const Point> points);
absl::StatusOr<std::vector<Point>> PointsFromBytes(std::span<const std::uint8_t> bytes);

// The values present in every list, sorted ascending (bytewise). Each list may come in
// any order; a value repeated within one list is an error (FailedPrecondition naming the
// list's index), since identifiers are unique at every party; no list at all is
// InvalidArgument.
absl::StatusOr<std::vector<Point>> IntersectAll(std::span<const std::vector<Point>> lists);

// Own rows in the intersection: for `own` (fully blinded, in the party's row order) and
// `intersection` (sorted as IntersectAll returns it), the party's row indices ordered by
// their blinded value, which is the order every party shares without knowing any
// identifier. A value in `intersection` that is not in `own` is an error (DataLoss); so is
// a value repeated in `own` (FailedPrecondition) or an `intersection` that is not sorted
// and unique (InvalidArgument).
absl::StatusOr<std::vector<std::size_t>> AlignedRows(std::span<const Point> own,
                                                     std::span<const Point> intersection);

}  // namespace cohort::crypto::psi
