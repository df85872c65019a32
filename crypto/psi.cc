#include "crypto/psi.h"

#include <sodium.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "crypto/sodium_util.h"

namespace cohort::crypto::psi {
namespace {

constexpr std::string_view kHashDomainTag = "cohort psi v1";
// Below this many points per thread, starting a thread costs more than it saves (one
// scalar multiplication takes about 40 us, starting a thread about 20 us).
constexpr std::size_t kMinPointsPerThread = 64;
constexpr std::size_t kNoFailure = std::numeric_limits<std::size_t>::max();

struct Range {
  std::size_t begin = 0;
  std::size_t end = 0;
};

// [0, count) cut into contiguous ranges, one per thread, in order.
std::vector<Range> SplitIntoRanges(std::size_t count, int threads) {
  std::size_t wanted = threads > 0 ? static_cast<std::size_t>(threads)
                                   : std::max(1u, std::thread::hardware_concurrency());
  wanted = std::max<std::size_t>(1, std::min(wanted, count / kMinPointsPerThread));
  std::vector<Range> ranges;
  ranges.reserve(wanted);
  const std::size_t base = count / wanted, extra = count % wanted;
  std::size_t begin = 0;
  for (std::size_t i = 0; i < wanted; ++i) {
    const std::size_t size = base + (i < extra ? 1 : 0);
    ranges.push_back({begin, begin + size});
    begin += size;
  }
  return ranges;
}

// Runs body(range_index, range) for every range, the first on the calling thread.
template <typename Body>
void RunRanges(const std::vector<Range>& ranges, const Body& body) {
  std::vector<std::jthread> workers;
  workers.reserve(ranges.size());
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    workers.emplace_back([&body, &ranges, i] { body(i, ranges[i]); });
  }
  if (!ranges.empty()) body(0, ranges[0]);
}  // The jthreads join here.

bool PointLess(const Point& a, const Point& b) {
  return std::memcmp(a.data(), b.data(), kPointBytes) < 0;
}

}  // namespace

Scalar Scalar::Random() {
  internal::EnsureSodiumInitialized();
  SecretBytes bytes(kScalarBytes);
  // libsodium draws again until the scalar is canonical and not zero.
  crypto_core_ristretto255_scalar_random(bytes.mutable_span().data());
  return Scalar(std::move(bytes));
}

Scalar Scalar::Inverse() const {
  SecretBytes inverse(kScalarBytes);
  // Fails only for zero, which a Scalar never is.
  if (crypto_core_ristretto255_scalar_invert(inverse.mutable_span().data(), bytes_.data()) != 0) {
    std::fprintf(stderr, "cohort: psi::Scalar::Inverse of a zero scalar\n");
    std::abort();
  }
  return Scalar(std::move(inverse));
}

Scalar Scalar::Times(const Scalar& other) const {
  SecretBytes product(kScalarBytes);
  // The group order is prime, so the product of two non-zero scalars is not zero.
  crypto_core_ristretto255_scalar_mul(product.mutable_span().data(), bytes_.data(),
                                      other.bytes_.data());
  return Scalar(std::move(product));
}

std::vector<std::size_t> RingPath(std::size_t owner, std::size_t parties) {
  std::vector<std::size_t> path;
  if (parties < 2 || owner >= parties) return path;
  path.reserve(parties);
  for (std::size_t step = 1; step <= parties; ++step) path.push_back((owner + step) % parties);
  return path;
}

std::vector<Point> HashAndBlind(std::string_view domain, std::span<const std::string> identifiers,
                                const Scalar& scalar, int threads) {
  internal::EnsureSodiumInitialized();
  if (domain.size() > kMaxDomainBytes) {
    std::fprintf(stderr, "cohort: psi::HashAndBlind: domain of %zu bytes, at most %zu allowed\n",
                 domain.size(), kMaxDomainBytes);
    std::abort();
  }
  // The tag, the domain's length and the domain are the same for every identifier: hash
  // them once and copy the state.
  crypto_hash_sha512_state prefix;
  crypto_hash_sha512_init(&prefix);
  crypto_hash_sha512_update(&prefix, reinterpret_cast<const unsigned char*>(kHashDomainTag.data()),
                            kHashDomainTag.size());
  const unsigned char length[2] = {static_cast<unsigned char>(domain.size() >> 8),
                                   static_cast<unsigned char>(domain.size() & 0xff)};
  crypto_hash_sha512_update(&prefix, length, sizeof(length));
  crypto_hash_sha512_update(&prefix, reinterpret_cast<const unsigned char*>(domain.data()),
                            domain.size());

  std::vector<Point> blinded(identifiers.size());
  const unsigned char* k = scalar.bytes().data();
  RunRanges(SplitIntoRanges(identifiers.size(), threads), [&](std::size_t, Range range) {
    unsigned char digest[crypto_hash_sha512_BYTES];
    unsigned char point[crypto_core_ristretto255_BYTES];
    for (std::size_t i = range.begin; i < range.end; ++i) {
      crypto_hash_sha512_state state = prefix;
      crypto_hash_sha512_update(&state, reinterpret_cast<const unsigned char*>(identifiers[i].data()),
                                identifiers[i].size());
      crypto_hash_sha512_final(&state, digest);
      crypto_core_ristretto255_from_hash(point, digest);
      // Fails only when H(x) is the identity; it stays the identity (see the header).
      if (crypto_scalarmult_ristretto255(blinded[i].data(), k, point) != 0) blinded[i].fill(0);
    }
  });
  return blinded;
}

absl::StatusOr<std::vector<Point>> Blind(std::span<const Point> points, const Scalar& scalar,
                                         int threads) {
  internal::EnsureSodiumInitialized();
  std::vector<Point> blinded(points.size());
  const unsigned char* k = scalar.bytes().data();
  const std::vector<Range> ranges = SplitIntoRanges(points.size(), threads);
  // Each range stops at its first bad point; the first range with one holds the first.
  std::vector<std::size_t> first_bad(ranges.size(), kNoFailure);
  RunRanges(ranges, [&](std::size_t r, Range range) {
    for (std::size_t i = range.begin; i < range.end; ++i) {
      // libsodium decodes the input (refusing an invalid encoding) and refuses an identity
      // result, which for a non-zero scalar means an identity input: one call checks both.
      if (crypto_scalarmult_ristretto255(blinded[i].data(), k, points[i].data()) != 0) {
        first_bad[r] = i;
        return;
      }
    }
  });
  for (std::size_t index : first_bad) {
    if (index == kNoFailure) continue;
    const bool valid = crypto_core_ristretto255_is_valid_point(points[index].data()) == 1;
    return absl::InvalidArgumentError(absl::StrCat(
        "PSI list: point ", index, " of ", points.size(), " is ",
        valid ? "the identity" : "not a valid ristretto255 encoding",
        "; every point must be a party's blinded identifier (drop the list and its sender's "
        "results)"));
  }
  return blinded;
}

std::vector<std::uint8_t> PointsToBytes(std::span<const Point> points) {
  std::vector<std::uint8_t> bytes(points.size() * kPointBytes);
  if (!points.empty()) std::memcpy(bytes.data(), points.data(), bytes.size());
  return bytes;
}

absl::StatusOr<std::vector<Point>> PointsFromBytes(std::span<const std::uint8_t> bytes) {
  if (bytes.size() % kPointBytes != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("PSI list: ", bytes.size(), " bytes is not a whole number of ", kPointBytes,
                     "-byte points (", bytes.size() % kPointBytes, " bytes left over)"));
  }
  std::vector<Point> points(bytes.size() / kPointBytes);
  if (!points.empty()) std::memcpy(points.data(), bytes.data(), bytes.size());
  return points;
}

absl::StatusOr<std::vector<Point>> IntersectAll(std::span<const std::vector<Point>> lists) {
  if (lists.empty()) {
    return absl::InvalidArgumentError("PSI intersection: expected at least one list, got none");
  }
  std::vector<Point> common;
  for (std::size_t l = 0; l < lists.size(); ++l) {
    std::vector<Point> sorted = lists[l];
    std::sort(sorted.begin(), sorted.end(), PointLess);
    if (auto repeated = std::adjacent_find(sorted.begin(), sorted.end()); repeated != sorted.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "PSI intersection: list ", l, " holds the same blinded value twice; identifiers must "
          "be unique within each party's list (deduplicate the party's rows)"));
    }
    if (l == 0) {
      common = std::move(sorted);
      continue;
    }
    std::vector<Point> next;
    next.reserve(std::min(common.size(), sorted.size()));
    std::set_intersection(common.begin(), common.end(), sorted.begin(), sorted.end(),
                          std::back_inserter(next), PointLess);
    common = std::move(next);
  }
  return common;
}

absl::StatusOr<std::vector<std::size_t>> AlignedRows(std::span<const Point> own,
                                                     std::span<const Point> intersection) {
  std::vector<std::size_t> by_value(own.size());
  std::iota(by_value.begin(), by_value.end(), std::size_t{0});
  std::sort(by_value.begin(), by_value.end(),
            [&](std::size_t a, std::size_t b) { return PointLess(own[a], own[b]); });
  for (std::size_t i = 1; i < by_value.size(); ++i) {
    if (own[by_value[i - 1]] == own[by_value[i]]) {
      return absl::FailedPreconditionError(absl::StrCat(
          "PSI alignment: own rows ", std::min(by_value[i - 1], by_value[i]), " and ",
          std::max(by_value[i - 1], by_value[i]),
          " have the same blinded value; identifiers must be unique (deduplicate the rows)"));
    }
  }
  std::vector<std::size_t> rows;
  rows.reserve(intersection.size());
  auto cursor = by_value.begin();
  for (std::size_t j = 0; j < intersection.size(); ++j) {
    if (j > 0 && !PointLess(intersection[j - 1], intersection[j])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PSI alignment: intersection value ", j,
          " is not after value ", j - 1, "; pass the list as IntersectAll returns it (sorted, unique)"));
    }
    cursor = std::lower_bound(cursor, by_value.end(), intersection[j],
                              [&](std::size_t row, const Point& value) { return PointLess(own[row], value); });
    if (cursor == by_value.end() || own[*cursor] != intersection[j]) {
      return absl::DataLossError(absl::StrCat(
          "PSI alignment: intersection value ", j, " of ", intersection.size(),
          " is not among this party's ", own.size(),
          " blinded rows; the intersection was computed from another list than this party's"));
    }
    rows.push_back(*cursor);
  }
  return rows;
}

}  // namespace cohort::crypto::psi
