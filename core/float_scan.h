#pragma once
// The check every update chunk passes on the server's receive path: no NaN or Inf, and the
// sum of squares its values add to the update's running L2 norm. One pass over the bytes,
// vectorized with AVX2 where the CPU has it (chosen at run time).

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"

namespace cohort::core {

// Sum of squares of `plain`'s floats (in double); InvalidArgument naming chunk `index` when
// any value is NaN or Inf.
absl::StatusOr<double> ScanChunk(uint32_t index, std::span<const std::byte> plain);

}  // namespace cohort::core
