#include "core/parameter_set.h"

#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/limits.h"

namespace cohort::core {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
    case DType::kInt64: return 8;
    case DType::kInt32: return 4;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kInt64: return "int64";
    case DType::kInt32: return "int32";
  }
  return "unknown";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (DType d : {DType::kFloat32, DType::kFloat64, DType::kInt64, DType::kInt32}) {
    if (DTypeName(d) == name) return d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dtype: expected one of float32, float64, int64, int32, got \"", std::string(name), "\""));
}

absl::StatusOr<uint64_t> BoundedTensorBytes(DType dtype, std::span<const int64_t> shape) {
  uint64_t bytes = DTypeSize(dtype);
  for (int64_t d : shape) {
    const uint64_t dim = static_cast<uint64_t>(d);
    if (d < 0 || (dim != 0 && bytes > kMaxModelBytes / dim)) {
      return absl::InvalidArgumentError(absl::StrCat("shape [", absl::StrJoin(shape, ", "),
                                                     "]: expected dimensions >= 0 totalling at most ",
                                                     kMaxModelBytes, " bytes"));
    }
    bytes *= dim;
  }
  return bytes;
}

size_t TensorSpec::num_elements() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

std::string TensorSpec::ShapeString() const { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

Manifest::Manifest(std::vector<TensorSpec> tensors) : tensors_(std::move(tensors)) {
  offsets_.reserve(tensors_.size());
  for (const TensorSpec& t : tensors_) {
    offsets_.push_back(total_bytes_);
    total_bytes_ += t.num_bytes();
  }
}

bool Manifest::all_float32() const {
  for (const TensorSpec& t : tensors_) {
    if (t.dtype != DType::kFloat32) return false;
  }
  return true;
}

absl::Status Manifest::CheckAllFloat32(std::string_view who) const {
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorSpec& t = tensors_[i];
    if (t.dtype == DType::kFloat32) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(who), " needs every tensor of the model in float32, but tensor ", i, " (", t.name, ") is ",
        std::string(DTypeName(t.dtype)), " ", t.ShapeString(),
        ": make it a float32 parameter in the model, or keep it out of the parameters the job trains"));
  }
  return absl::OkStatus();
}

size_t Manifest::num_elements() const {
  size_t n = 0;
  for (const TensorSpec& t : tensors_) n += t.num_elements();
  return n;
}

static std::string Describe(const TensorSpec& t) {
  return absl::StrCat(t.name, " ", std::string(DTypeName(t.dtype)), " ", t.ShapeString());
}

absl::Status Manifest::CheckSameAs(const Manifest& other) const {
  if (other.tensors_.size() != tensors_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("manifest: expected ", tensors_.size(),
                                                   " tensors, got ", other.tensors_.size()));
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (!(tensors_[i] == other.tensors_[i])) {
      const char* what = tensors_[i].name != other.tensors_[i].name     ? "name"
                         : tensors_[i].dtype != other.tensors_[i].dtype ? "dtype"
                                                                        : "shape";
      return absl::InvalidArgumentError(absl::StrCat("manifest tensor ", i, " has the wrong ", what,
                                                     ": expected ", Describe(tensors_[i]), ", got ",
                                                     Describe(other.tensors_[i])));
    }
  }
  return absl::OkStatus();
}

ParameterSet::ParameterSet(Manifest manifest)
    : manifest_(std::move(manifest)), data_(manifest_.total_bytes()) {}

std::span<float> ParameterSet::floats() {
  return {reinterpret_cast<float*>(data_.data()), data_.size() / sizeof(float)};
}
std::span<const float> ParameterSet::floats() const {
  return {reinterpret_cast<const float*>(data_.data()), data_.size() / sizeof(float)};
}

std::span<std::byte> ParameterSet::tensor_bytes(size_t i) {
  return std::span<std::byte>(data_).subspan(manifest_.offset(i), manifest_.tensors()[i].num_bytes());
}
std::span<const std::byte> ParameterSet::tensor_bytes(size_t i) const {
  return std::span<const std::byte>(data_).subspan(manifest_.offset(i),
                                                   manifest_.tensors()[i].num_bytes());
}

int ParameterSet::Find(std::string_view name) const {
  for (size_t i = 0; i < manifest_.size(); ++i) {
    if (manifest_.tensors()[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

template <typename T>
static size_t CountNonFinite(std::span<const std::byte> bytes) {
  size_t bad = 0;
  const size_t n = bytes.size() / sizeof(T);
  const std::byte* p = bytes.data();
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    bad += !std::isfinite(v);
  }
  return bad;
}

absl::Status CheckFinite(DType dtype, std::span<const std::byte> bytes) {
  size_t bad = 0;
  if (dtype == DType::kFloat32) bad = CountNonFinite<float>(bytes);
  if (dtype == DType::kFloat64) bad = CountNonFinite<double>(bytes);
  if (bad == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(bad, " values are NaN or Inf"));
}

}  // namespace cohort::core
