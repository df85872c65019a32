#include "training/device.h"

#include <c10/util/Exception.h>
#include <torch/cuda.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "core/job_config.h"
#include "training/data_parallel.h"

namespace cohort::training {

bool CudaAvailable() { return CudaDeviceCount() > 0; }

int CudaDeviceCount() {
  // A CPU-only LibTorch answers 0; so does a CUDA one on a machine without a driver.
  try {
    return static_cast<int>(torch::cuda::device_count());
  } catch (const c10::Error&) {
    return 0;
  }
}

absl::StatusOr<std::string> ResolveDevice(std::string_view requested) {
  if (absl::Status s = core::CheckDeviceName(requested, "device"); !s.ok()) return s;
  if (requested == "cpu") return std::string("cpu");
  const int count = CudaDeviceCount();
  if (requested == "auto") return std::string(count > 0 ? "cuda:0" : "cpu");
  int index = 0;
  if (requested != "cuda") index = std::stoi(std::string(requested.substr(5)));
  if (count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", std::string(requested), " requested but ",
        torch::cuda::is_available() ? "no GPU is visible" : "this LibTorch has no CUDA support or no GPU is visible",
        "; use --device cpu (or training_config.device \"auto\"), or build against a CUDA LibTorch "
        "(-DTorch_DIR=...) on a machine with a GPU"));
  }
  if (index >= count) {
    return absl::FailedPreconditionError(absl::StrCat("device ", std::string(requested), " requested but only ", count,
                                                      " GPU(s) are visible (cuda:0 to cuda:", count - 1, ")"));
  }
  return absl::StrCat("cuda:", index);
}

absl::StatusOr<WorkerPlacement> PlaceSiteWorker(std::string_view requested, int local_rank, int workers) {
  absl::StatusOr<std::string> first = ResolveDevice(requested);
  if (!first.ok()) return first.status();
  if (*first == "cpu") return WorkerPlacement{"cpu", false};
  const int base = std::stoi(first->substr(5));
  const int count = CudaDeviceCount();
  if (base + workers > count) {
    return absl::FailedPreconditionError(absl::StrCat(
        workers, " workers on ", *first, " need one GPU each (cuda:", base, " to cuda:", base + workers - 1,
        ") but this node sees ", count, " (cuda:0 to cuda:", count - 1, "); pass fewer --workers or --device cpu"));
  }
  return WorkerPlacement{absl::StrCat("cuda:", base + local_rank), NcclCompiledIn()};
}

}  // namespace cohort::training
