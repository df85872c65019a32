#pragma once
// Internal to the training layer (includes c10d): the c10d TCPStore behind a Rendezvous,
// shared by the Gloo and NCCL collectives (NCCL exchanges its unique id through it).

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "absl/status/statusor.h"
#include "training/data_parallel.h"

namespace cohort::training {

class StoreRendezvous : public Rendezvous {
 public:
  explicit StoreRendezvous(c10::intrusive_ptr<c10d::TCPStore> store) : store_(std::move(store)) {}
  uint16_t port() const override { return store_->getPort(); }
  const c10::intrusive_ptr<c10d::TCPStore>& store() const { return store_; }

 private:
  c10::intrusive_ptr<c10d::TCPStore> store_;
};

// Worker 0: the store of `rendezvous` (which must be a StoreRendezvous); the others: a client
// of the store at options.master_host:master_port.
absl::StatusOr<c10::intrusive_ptr<c10d::Store>> StoreFor(const GroupOptions& options, Rendezvous* rendezvous);

// "worker R of W": how errors name a worker.
std::string WorkerName(int rank, int size);

}  // namespace cohort::training
