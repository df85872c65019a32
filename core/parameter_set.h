#pragma once
// Named parameter sets: the unit every component exchanges (a global model, a client's
// update, a checkpoint). A set is a manifest (name, dtype, shape of each tensor, in a fixed
// order) plus one contiguous little-endian byte buffer holding the tensors back to back in
// manifest order, with no padding. Nothing here knows about LibTorch or gRPC.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model_buffer.h"

namespace cohort::core {

enum class DType : uint8_t { kFloat32 = 1, kFloat64 = 2, kInt64 = 3, kInt32 = 4 };

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(std::string_view name);

// The bytes a tensor of `dtype` and `shape` holds, checked as the dimensions multiply:
// InvalidArgument when a dimension is negative or the size passes kMaxModelBytes
// (core/limits.h), so a shape from a file or a message can neither overflow nor make
// the reader allocate more than that.
absl::StatusOr<uint64_t> BoundedTensorBytes(DType dtype, std::span<const int64_t> shape);

struct TensorSpec {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;

  size_t num_elements() const;
  size_t num_bytes() const { return num_elements() * DTypeSize(dtype); }
  std::string ShapeString() const;  // "[6, 1, 5, 5]"
  bool operator==(const TensorSpec&) const = default;
};

// The ordered list of tensors of a model. Two parties agree on a model's layout by
// comparing manifests.
class Manifest {
 public:
  Manifest() = default;
  explicit Manifest(std::vector<TensorSpec> tensors);

  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  size_t size() const { return tensors_.size(); }
  size_t total_bytes() const { return total_bytes_; }
  size_t offset(size_t i) const { return offsets_[i]; }
  bool all_float32() const;
  // OK when every tensor is float32; otherwise InvalidArgument naming the first tensor
  // that is not, its dtype and shape, and the fix: `who` ("FedAvg") says what needs it.
  absl::Status CheckAllFloat32(std::string_view who) const;
  size_t num_elements() const;

  // OK when `other` has the same tensors in the same order; otherwise names the first
  // difference ("tensor 3: expected layers.3.weight float32 [16, 6, 5, 5], got ...").
  absl::Status CheckSameAs(const Manifest& other) const;

  bool operator==(const Manifest& other) const { return tensors_ == other.tensors_; }

 private:
  std::vector<TensorSpec> tensors_;
  std::vector<size_t> offsets_;
  size_t total_bytes_ = 0;
};

class ParameterSet {
 public:
  ParameterSet() = default;
  // A zero-filled set with the given layout.
  explicit ParameterSet(Manifest manifest);

  const Manifest& manifest() const { return manifest_; }
  std::span<std::byte> bytes() { return data_; }
  std::span<const std::byte> bytes() const { return data_; }

  // The whole buffer as floats; only valid when every tensor is float32.
  std::span<float> floats();
  std::span<const float> floats() const;

  std::span<std::byte> tensor_bytes(size_t i);
  std::span<const std::byte> tensor_bytes(size_t i) const;
  // Index of the tensor with this name, or -1.
  int Find(std::string_view name) const;

 private:
  Manifest manifest_;
  ModelBuffer<std::byte> data_;  // huge pages when large (core/model_buffer.h)
};

// OK when every float32/float64 value in `bytes` (laid out per `dtype`) is finite;
// otherwise says how many values are NaN or Inf.
absl::Status CheckFinite(DType dtype, std::span<const std::byte> bytes);

}  // namespace cohort::core
