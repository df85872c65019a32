#pragma once
// Conversions between wire messages and core types, shared by server and client so both
// ends read and write the protocol the same way. Kept out of the generated code's target.

#include "absl/status/statusor.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "proto/cohort.pb.h"

namespace cohort::wire {

void ToProto(const core::Manifest& manifest, v1::Manifest* out);
// Fails naming the tensor with an unknown dtype, a negative dimension, or a wrong total.
absl::StatusOr<core::Manifest> FromProto(const v1::Manifest& manifest);

void ToProto(const core::TrainMetrics& metrics, v1::LocalMetrics* out);
core::TrainMetrics FromProto(const v1::LocalMetrics& metrics);

}  // namespace cohort::wire
