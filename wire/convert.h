#pragma once
// Conversions between wire messages and core types, shared by server and client so both
// ends read and write the protocol the same way. Kept out of the generated code's target.

#include "absl/status/statusor.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "core/update_compression.h"
#include "crypto/party_channel.h"
#include "proto/cohort.pb.h"

namespace cohort::wire {

void ToProto(const core::Manifest& manifest, v1::Manifest* out);
// Fails naming the tensor with an unknown dtype, a negative dimension, or a wrong total.
absl::StatusOr<core::Manifest> FromProto(const v1::Manifest& manifest);

void ToProto(const core::TrainMetrics& metrics, v1::LocalMetrics* out);
core::TrainMetrics FromProto(const v1::LocalMetrics& metrics);

void ToProto(const core::UpdateEncoding& encoding, v1::UpdateEncoding* out);
// Fails naming the field when the method is unknown or a topk fraction is outside (0, 0.5].
absl::StatusOr<core::UpdateEncoding> FromProto(const v1::UpdateEncoding& encoding);

// A vertical party's introduction (its channel key, signed). FromProto sets `job` (what the
// signature is checked against) and fails naming the party when its key has the wrong size.
v1::PartyIntroduction ToProto(const crypto::PartyIntroduction& intro);
absl::StatusOr<crypto::PartyIntroduction> FromProto(const v1::PartyIntroduction& intro, const std::string& job);

}  // namespace cohort::wire
