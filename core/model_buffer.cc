#include "core/model_buffer.h"

#include <sys/mman.h>

namespace cohort::core::model_buffer_internal {

void* MapLarge(size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // Advice only: a kernel without transparent huge pages (or with them off) keeps 4 KiB
  // pages, and the buffer works the same.
  ::madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

void UnmapLarge(void* p, size_t bytes) { ::munmap(p, bytes); }

}  // namespace cohort::core::model_buffer_internal
