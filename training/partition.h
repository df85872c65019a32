#pragma once
// Partitioners that simulate a federation from one data set: each client gets its own
// shard, chosen reproducibly by seed, so client i of a local federation computes the same
// shard as every other process that uses the same (spec, seed, clients).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "training/dataset.h"

namespace cohort::training {

using Shards = std::vector<std::vector<size_t>>;

// Shuffled, near-equal shards (sizes differ by at most one).
Shards PartitionIid(size_t num_examples, int num_clients, uint64_t seed);

// Label skew as in NIID-Bench (Li et al., 2021): for each class, the share of each client
// is drawn from Dirichlet(alpha); clients already holding N/num_clients examples get no
// more; redrawn until every client holds at least `min_size` examples.
absl::StatusOr<Shards> PartitionDirichlet(const std::vector<int64_t>& labels, int64_t num_classes, int num_clients,
                                          double alpha, uint64_t seed, size_t min_size = 10);

// "iid" or "dirichlet:ALPHA" (one label per example).
absl::StatusOr<Shards> Partition(const std::string& spec, const std::vector<int64_t>& labels, int64_t num_classes,
                                 int num_clients, uint64_t seed);

// Whole groups per client (Dataset::groups, e.g. the files of a text data set): group g goes
// to client g mod num_clients, so with as many clients as files each client holds one file
// (a natural non-IID split: one category per site). Refused when a client would get none.
absl::StatusOr<Shards> PartitionByGroup(const std::vector<int64_t>& groups, size_t num_groups, int num_clients);

// Partition() of a data set: also "by_file" (PartitionByGroup); label skew ("dirichlet")
// is refused for data with a label per position (text), whose labels are not classes.
absl::StatusOr<Shards> PartitionDataset(const std::string& spec, const Dataset& data, int num_clients, uint64_t seed);

struct HoldoutSplit {
  std::vector<size_t> train, eval;
};
// Moves a shuffled `eval_fraction` of `indices` to a held-out set.
HoldoutSplit SplitHoldout(std::vector<size_t> indices, double eval_fraction, uint64_t seed);

}  // namespace cohort::training
