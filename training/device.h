#pragma once
// Which device a site trains on, decided once from training_config.device (or
// `cohort client --device`) and what this process's LibTorch can reach. No LibTorch type
// here, so the client can resolve and report the choice before it trains.

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace cohort::training {

// Whether this LibTorch was built with CUDA and sees at least one GPU.
bool CudaAvailable();
// GPUs this process sees (0 without CUDA support or without a driver).
int CudaDeviceCount();

// The concrete device for `requested` (auto | cpu | cuda | cuda:N, as core::CheckDeviceName
// accepts): "cpu" or "cuda:N". "auto" is "cuda:0" when CudaAvailable(), else "cpu".
// FailedPrecondition when CUDA is asked for and this LibTorch has no CUDA support or no GPU
// is visible, or when cuda:N names a GPU that does not exist; InvalidArgument for a name
// that is not a device.
absl::StatusOr<std::string> ResolveDevice(std::string_view requested);

// Where worker `local_rank` of the `workers` a site runs on one node trains, and how the
// workers all-reduce. On CUDA each worker owns one GPU: cuda:(N + local_rank) for a requested
// cuda:N ("cuda" and an "auto" that finds a GPU start at N = 0), and the workers use NCCL
// where this build has it (Gloo through host memory where it does not). On the CPU every
// worker trains on the CPU over Gloo. FailedPrecondition, naming the GPUs needed and seen,
// when the node has too few GPUs for its workers.
struct WorkerPlacement {
  std::string device;  // "cpu" or "cuda:K"
  bool nccl = false;
};
absl::StatusOr<WorkerPlacement> PlaceSiteWorker(std::string_view requested, int local_rank, int workers);

}  // namespace cohort::training
