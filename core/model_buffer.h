#pragma once
// The allocator of model-sized buffers (a ParameterSet's bytes, the FedAvg accumulator).
// Buffers of 2 MiB and more get a mapping of their own with transparent huge pages
// requested: the first touch of fresh memory runs at 0.3 GB/s with 4 KiB pages on the
// virtual machines measured here and at 7.6 GB/s with huge pages (docs/benchmarks.md,
// "First touch of memory is slow here"), and every fresh model buffer is touched in full
// (zero-filled, then written). Where the kernel gives no huge pages the buffer is an
// ordinary mapping. Smaller buffers come from the heap as usual.

#include <cstddef>
#include <memory>
#include <new>
#include <vector>

namespace cohort::core {

namespace model_buffer_internal {
inline constexpr size_t kHugePageBytes = size_t{2} << 20;
// Maps `bytes` (>= kHugePageBytes) and asks for huge pages; throws std::bad_alloc.
void* MapLarge(size_t bytes);
void UnmapLarge(void* p, size_t bytes);
}  // namespace model_buffer_internal

template <typename T>
class ModelBufferAllocator {
 public:
  using value_type = T;
  ModelBufferAllocator() = default;
  template <typename U>
  ModelBufferAllocator(const ModelBufferAllocator<U>&) {}

  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes >= model_buffer_internal::kHugePageBytes) {
      return static_cast<T*>(model_buffer_internal::MapLarge(bytes));
    }
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes >= model_buffer_internal::kHugePageBytes) {
      model_buffer_internal::UnmapLarge(p, bytes);
    } else {
      std::allocator<T>().deallocate(p, n);
    }
  }
  template <typename U>
  bool operator==(const ModelBufferAllocator<U>&) const { return true; }
};

template <typename T>
using ModelBuffer = std::vector<T, ModelBufferAllocator<T>>;

}  // namespace cohort::core
