// The NCCL collective (CUDA devices) through NCCL's C API, compiled when the build finds
// nccl.h (COHORT_WITH_NCCL). The group's rendezvous is the same c10d TCPStore as Gloo's:
// worker 0 publishes the NCCL unique id there. NCCL has no timeout of its own, so each call
// polls its stream and the communicator's asynchronous error, and aborts the communicator
// at the group's timeout instead of hanging on a dead peer.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "training/rendezvous_store.h"

namespace cohort::training {
namespace {

class NcclCollective : public Collective {
 public:
  NcclCollective(ncclComm_t comm, cudaStream_t stream, int rank, int size, int device,
                 std::chrono::milliseconds timeout)
      : comm_(comm), stream_(stream), rank_(rank), size_(size), device_(device), timeout_(timeout) {}
  ~NcclCollective() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (scratch_ != nullptr) cudaFree(scratch_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool device_memory() const override { return true; }

  absl::Status AllReduceSum(std::span<float> values) override {
    if (values.empty()) return absl::OkStatus();
    cudaSetDevice(device_);
    cudaDeviceSynchronize();  // the gradients were written on LibTorch's stream
    const ncclResult_t r =
        ncclAllReduce(values.data(), values.data(), values.size(), ncclFloat, ncclSum, comm_, stream_);
    return Finish("all-reduce", r);
  }

  absl::Status Broadcast(std::span<std::byte> bytes, int root) override {
    if (bytes.empty()) return absl::OkStatus();
    cudaSetDevice(device_);
    if (bytes.size() > scratch_bytes_) {
      if (scratch_ != nullptr) cudaFree(scratch_);
      scratch_ = nullptr;
      if (cudaMalloc(&scratch_, bytes.size()) != cudaSuccess) {
        return absl::ResourceExhaustedError(absl::StrCat(Name(), ": cannot allocate ", bytes.size(), " bytes on cuda:",
                                                         device_, " for a broadcast"));
      }
      scratch_bytes_ = bytes.size();
    }
    cudaMemcpy(scratch_, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
    const ncclResult_t r = ncclBroadcast(scratch_, scratch_, bytes.size(), ncclUint8, root, comm_, stream_);
    if (absl::Status s = Finish("broadcast", r); !s.ok()) return s;
    cudaMemcpy(bytes.data(), scratch_, bytes.size(), cudaMemcpyDeviceToHost);
    return absl::OkStatus();
  }

 private:
  std::string Name() const { return WorkerName(rank_, size_); }

  absl::Status Finish(const char* what, ncclResult_t started) {
    if (started != ncclSuccess) {
      return absl::UnavailableError(absl::StrCat(Name(), ": NCCL ", what, " failed: ", ncclGetErrorString(started)));
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (true) {
      const cudaError_t done = cudaStreamQuery(stream_);
      if (done == cudaSuccess) return absl::OkStatus();
      if (done != cudaErrorNotReady) {
        return absl::InternalError(absl::StrCat(Name(), ": CUDA error in NCCL ", what, ": ", cudaGetErrorString(done)));
      }
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess || std::chrono::steady_clock::now() > deadline) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        return absl::UnavailableError(absl::StrCat(
            Name(), ": NCCL ", what, async != ncclSuccess ? " failed: " : " timed out after ",
            async != ncclSuccess ? ncclGetErrorString(async) : absl::StrCat(timeout_.count() / 1000.0, " s"),
            ": another worker of the site died or stalled"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  int rank_, size_, device_;
  std::chrono::milliseconds timeout_;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
};

}  // namespace

bool NcclCompiledIn() { return true; }

absl::StatusOr<std::unique_ptr<Collective>> JoinNcclGroup(const GroupOptions& options, Rendezvous* rendezvous,
                                                         int local_device) {
  const std::string name = WorkerName(options.rank, options.world_size);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || local_device >= devices) {
    return absl::FailedPreconditionError(absl::StrCat(name, ": NCCL needs cuda:", local_device, " but ", devices,
                                                      " GPU(s) are visible (no driver, or fewer GPUs than workers)"));
  }
  absl::StatusOr<c10::intrusive_ptr<c10d::Store>> store = StoreFor(options, rendezvous);
  if (!store.ok()) return store.status();
  ncclUniqueId id;
  try {
    if (options.rank == 0) {
      if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
        return absl::InternalError(absl::StrCat(name, ": ncclGetUniqueId: ", ncclGetErrorString(r)));
      }
      const auto* raw = reinterpret_cast<const uint8_t*>(&id);
      (*store)->set("cohort/nccl_id", std::vector<uint8_t>(raw, raw + sizeof(id)));
    } else {
      const std::vector<uint8_t> raw = (*store)->get("cohort/nccl_id");  // waits up to the store's timeout
      if (raw.size() != sizeof(id)) return absl::DataLossError(absl::StrCat(name, ": malformed NCCL id from worker 0"));
      std::memcpy(&id, raw.data(), sizeof(id));
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(name, ": NCCL rendezvous failed: ", e.what()));
  }
  cudaSetDevice(local_device);
  cudaStream_t stream = nullptr;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  ncclComm_t comm = nullptr;
  if (ncclResult_t r = ncclCommInitRank(&comm, options.world_size, id, options.rank); r != ncclSuccess) {
    cudaStreamDestroy(stream);
    return absl::UnavailableError(absl::StrCat(name, ": ncclCommInitRank: ", ncclGetErrorString(r)));
  }
  return std::unique_ptr<Collective>(std::make_unique<NcclCollective>(comm, stream, options.rank,
                                                                      options.world_size, local_device,
                                                                      options.timeout));
}

}  // namespace cohort::training
