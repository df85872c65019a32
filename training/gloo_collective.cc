// The Gloo collective (CPU) through LibTorch's c10d, and the TCPStore rendezvous.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "absl/strings/str_cat.h"
#include "training/rendezvous_store.h"

namespace cohort::training {
namespace {

bool IsLoopback(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

std::string Seconds(std::chrono::milliseconds t) { return absl::StrCat(static_cast<double>(t.count()) / 1000.0, " s"); }

class GlooCollective : public Collective {
 public:
  GlooCollective(c10::intrusive_ptr<c10d::ProcessGroupGloo> group, std::chrono::milliseconds timeout)
      : group_(std::move(group)), timeout_(timeout) {}

  int rank() const override { return group_->getRank(); }
  int size() const override { return group_->getSize(); }

  absl::Status AllReduceSum(std::span<float> values) override {
    if (values.empty()) return absl::OkStatus();
    std::vector<at::Tensor> tensors = {
        at::from_blob(values.data(), {static_cast<int64_t>(values.size())}, at::kFloat)};
    return Run("all-reduce", [&] { return group_->allreduce(tensors); });
  }

  absl::Status Broadcast(std::span<std::byte> bytes, int root) override {
    if (bytes.empty()) return absl::OkStatus();
    std::vector<at::Tensor> tensors = {at::from_blob(bytes.data(), {static_cast<int64_t>(bytes.size())}, at::kByte)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    return Run("broadcast", [&] { return group_->broadcast(tensors, options); });
  }

 private:
  template <typename Start>
  absl::Status Run(const char* what, Start start) {
    try {
      c10::intrusive_ptr<c10d::Work> work = start();
      // Gloo's own timeout (set from the group's options) ends a stalled call; a peer that
      // died closes its sockets and ends it at once.
      work->wait(timeout_);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat(
          WorkerName(rank(), size()), ": Gloo ", what, " failed (timeout ", Seconds(timeout_),
          "): another worker of the site died or stalled: ", e.what()));
    }
  }

  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::string WorkerName(int rank, int size) { return absl::StrCat("worker ", rank, " of ", size); }

absl::StatusOr<std::unique_ptr<Rendezvous>> ListenForWorkers(const GroupOptions& options) {
  try {
    c10d::TCPStoreOptions store;
    store.port = options.master_port;
    store.isServer = true;
    store.numWorkers = static_cast<size_t>(options.world_size);
    store.waitWorkers = false;  // the others start once its port is known
    store.timeout = options.timeout;
    return std::unique_ptr<Rendezvous>(std::make_unique<StoreRendezvous>(
        c10::make_intrusive<c10d::TCPStore>(options.master_host, store)));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("worker 0: cannot listen for the site's workers on ",
                                               options.master_host, ":", options.master_port,
                                               " (--master ADDR:PORT): ", e.what()));
  }
}

absl::StatusOr<c10::intrusive_ptr<c10d::Store>> StoreFor(const GroupOptions& options, Rendezvous* rendezvous) {
  if (options.rank == 0) {
    auto* own = dynamic_cast<StoreRendezvous*>(rendezvous);
    if (own == nullptr) return absl::InvalidArgumentError("worker 0 joins its group with the Rendezvous it made");
    return c10::intrusive_ptr<c10d::Store>(own->store());
  }
  try {
    c10d::TCPStoreOptions store;
    store.port = options.master_port;
    store.isServer = false;
    store.timeout = options.timeout;
    return c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::TCPStore>(options.master_host, store));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(WorkerName(options.rank, options.world_size),
                                               ": cannot reach worker 0's rendezvous at ", options.master_host, ":",
                                               options.master_port, " within ", Seconds(options.timeout), ": ",
                                               e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Collective>> JoinGlooGroup(const GroupOptions& options, Rendezvous* rendezvous) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker rank ", options.rank, " is outside a group of ", options.world_size));
  }
  absl::StatusOr<c10::intrusive_ptr<c10d::Store>> store = StoreFor(options, rendezvous);
  if (!store.ok()) return store.status();
  try {
    auto gloo = c10d::ProcessGroupGloo::Options::create(options.timeout);
    const std::string bind = !options.bind_host.empty()          ? options.bind_host
                             : IsLoopback(options.master_host) ? std::string("127.0.0.1")
                                                               : std::string();
    gloo->devices.push_back(bind.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                         : c10d::ProcessGroupGloo::createDeviceForHostname(bind));
    gloo->threads = 2;
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(*store, options.rank, options.world_size, gloo);
    return std::unique_ptr<Collective>(std::make_unique<GlooCollective>(std::move(group), options.timeout));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(WorkerName(options.rank, options.world_size),
                                               ": the site's workers did not all join within ",
                                               Seconds(options.timeout), ": ", e.what()));
  }
}

}  // namespace cohort::training
