#include "wire/convert.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/limits.h"
#include "core/quote.h"

namespace cohort::wire {
namespace {

v1::DType ToProto(core::DType dtype) {
  switch (dtype) {
    case core::DType::kFloat32: return v1::FLOAT32;
    case core::DType::kFloat64: return v1::FLOAT64;
    case core::DType::kInt64: return v1::INT64;
    case core::DType::kInt32: return v1::INT32;
  }
  return v1::DTYPE_UNSPECIFIED;
}

}  // namespace

void ToProto(const core::Manifest& manifest, v1::Manifest* out) {
  out->Clear();
  for (const core::TensorSpec& t : manifest.tensors()) {
    v1::TensorMeta* meta = out->add_tensors();
    meta->set_name(t.name);
    meta->set_dtype(ToProto(t.dtype));
    for (int64_t d : t.shape) meta->add_shape(d);
  }
  out->set_total_bytes(manifest.total_bytes());
}

absl::StatusOr<core::Manifest> FromProto(const v1::Manifest& manifest) {
  std::vector<core::TensorSpec> tensors;
  tensors.reserve(static_cast<size_t>(manifest.tensors_size()));
  uint64_t total_bytes = 0;
  for (const v1::TensorMeta& meta : manifest.tensors()) {
    core::TensorSpec t;
    t.name = meta.name();
    switch (meta.dtype()) {
      case v1::FLOAT32: t.dtype = core::DType::kFloat32; break;
      case v1::FLOAT64: t.dtype = core::DType::kFloat64; break;
      case v1::INT64: t.dtype = core::DType::kInt64; break;
      case v1::INT32: t.dtype = core::DType::kInt32; break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("tensor ", meta.name(), ": unknown dtype ", meta.dtype()));
    }
    t.shape.assign(meta.shape().begin(), meta.shape().end());
    // Bounded before a Manifest sums the sizes (which could overflow) and a receiver
    // allocates them.
    absl::StatusOr<uint64_t> bytes = core::BoundedTensorBytes(t.dtype, t.shape);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", core::QuotePrefix(meta.name()), ": ",
                                                     bytes.status().message()));
    }
    total_bytes += *bytes;
    if (total_bytes > core::kMaxModelBytes) {
      return absl::InvalidArgumentError(absl::StrCat("manifest: expected a model of at most ", core::kMaxModelBytes,
                                                     " bytes, its tensors hold more"));
    }
    tensors.push_back(std::move(t));
  }
  core::Manifest out(std::move(tensors));
  if (out.total_bytes() != manifest.total_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("manifest declares ", manifest.total_bytes(),
                                                   " bytes but its tensors hold ", out.total_bytes()));
  }
  return out;
}

void ToProto(const core::TrainMetrics& m, v1::LocalMetrics* out) {
  out->set_train_loss(m.train_loss);
  out->set_eval_loss(m.eval_loss);
  out->set_eval_accuracy(m.eval_accuracy);
  out->set_eval_samples(m.eval_samples);
  out->set_train_seconds(m.train_seconds);
  out->set_train_cpu_seconds(m.train_cpu_seconds);
  out->set_steps(m.steps);
}

core::TrainMetrics FromProto(const v1::LocalMetrics& m) {
  core::TrainMetrics out;
  out.train_loss = m.train_loss();
  out.eval_loss = m.eval_loss();
  out.eval_accuracy = m.eval_accuracy();
  out.eval_samples = m.eval_samples();
  out.train_seconds = m.train_seconds();
  out.train_cpu_seconds = m.train_cpu_seconds();
  out.steps = m.steps();
  return out;
}

void ToProto(const core::UpdateEncoding& encoding, v1::UpdateEncoding* out) {
  out->Clear();
  switch (encoding.method) {
    case core::CompressionMethod::kInt8:
      out->set_method(v1::UpdateEncoding::INT8);
      break;
    case core::CompressionMethod::kTopK:
      out->set_method(v1::UpdateEncoding::TOPK);
      out->set_topk_fraction(encoding.topk_fraction);
      break;
    case core::CompressionMethod::kNone:
      break;
  }
}

absl::StatusOr<core::UpdateEncoding> FromProto(const v1::UpdateEncoding& encoding) {
  switch (encoding.method()) {
    case v1::UpdateEncoding::FLOAT32:
      return core::UpdateEncoding{};
    case v1::UpdateEncoding::INT8:
      return core::UpdateEncoding{core::CompressionMethod::kInt8, 0};
    case v1::UpdateEncoding::TOPK:
      if (!(encoding.topk_fraction() > 0 && encoding.topk_fraction() <= 0.5)) {
        return absl::InvalidArgumentError(absl::StrCat("update encoding: topk_fraction must be in (0, 0.5], got ",
                                                       encoding.topk_fraction()));
      }
      return core::UpdateEncoding{core::CompressionMethod::kTopK, encoding.topk_fraction()};
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("update encoding: unknown method ", static_cast<int>(encoding.method())));
}

v1::PartyIntroduction ToProto(const crypto::PartyIntroduction& intro) {
  v1::PartyIntroduction out;
  out.set_party(intro.party);
  out.set_certificate_pem(intro.certificate_pem);
  out.set_public_key(intro.public_key.data(), intro.public_key.size());
  out.set_signature(intro.signature.data(), intro.signature.size());
  return out;
}

absl::StatusOr<crypto::PartyIntroduction> FromProto(const v1::PartyIntroduction& intro, const std::string& job) {
  crypto::PartyIntroduction out;
  out.job = job;
  out.party = intro.party();
  out.certificate_pem = intro.certificate_pem();
  if (intro.public_key().size() != out.public_key.size()) {
    return absl::PermissionDeniedError(absl::StrCat("the introduction of party \"", intro.party(), "\" has a ",
                                                    intro.public_key().size(), "-byte key; expected ",
                                                    out.public_key.size()));
  }
  std::memcpy(out.public_key.data(), intro.public_key().data(), out.public_key.size());
  out.signature.assign(intro.signature().begin(), intro.signature().end());
  return out;
}

}  // namespace cohort::wire
