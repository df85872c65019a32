#include "training/partition.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace cohort::training {

Shards PartitionIid(size_t num_examples, int num_clients, uint64_t seed) {
  std::vector<size_t> order(num_examples);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  Shards shards(static_cast<size_t>(num_clients));
  for (int c = 0; c < num_clients; ++c) {
    const size_t begin = num_examples * static_cast<size_t>(c) / static_cast<size_t>(num_clients);
    const size_t end = num_examples * static_cast<size_t>(c + 1) / static_cast<size_t>(num_clients);
    shards[static_cast<size_t>(c)].assign(order.begin() + static_cast<std::ptrdiff_t>(begin),
                                          order.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return shards;
}

absl::StatusOr<Shards> PartitionDirichlet(const std::vector<int64_t>& labels, int64_t num_classes, int num_clients,
                                          double alpha, uint64_t seed, size_t min_size) {
  if (!(alpha > 0)) return absl::InvalidArgumentError(absl::StrCat("dirichlet alpha: expected > 0, got ", alpha));
  const size_t n = labels.size();
  const size_t clients = static_cast<size_t>(num_clients);
  if (n < clients * min_size) {
    return absl::InvalidArgumentError(absl::StrCat("cannot give each of ", num_clients, " clients ", min_size,
                                                   " examples from ", n));
  }
  std::vector<std::vector<size_t>> by_class(static_cast<size_t>(num_classes));
  for (size_t i = 0; i < n; ++i) by_class[static_cast<size_t>(labels[i])].push_back(i);
  std::mt19937_64 rng(seed);
  std::gamma_distribution<double> gamma(alpha, 1.0);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    Shards shards(clients);
    for (std::vector<size_t> idx : by_class) {
      std::shuffle(idx.begin(), idx.end(), rng);
      std::vector<double> draw(clients), p(clients);
      double total = 0;
      for (size_t c = 0; c < clients; ++c) {
        draw[c] = gamma(rng);
        // Balance: a client already at its fair share takes no more of this class.
        p[c] = shards[c].size() >= n / clients ? 0 : draw[c];
        total += p[c];
      }
      if (total <= 0) {
        // Every client is at its fair share: deal this class by the unbalanced draw rather
        // than drop it.
        p = draw;
        for (double x : p) total += x;
      }
      size_t start = 0;
      double cumulative = 0;
      for (size_t c = 0; c < clients; ++c) {
        cumulative += p[c] / total;
        const size_t end = c + 1 == clients ? idx.size()
                                            : std::min(idx.size(), static_cast<size_t>(cumulative * idx.size()));
        shards[c].insert(shards[c].end(), idx.begin() + static_cast<std::ptrdiff_t>(start),
                         idx.begin() + static_cast<std::ptrdiff_t>(end));
        start = std::max(start, end);
      }
    }
    const bool big_enough =
        std::all_of(shards.begin(), shards.end(), [&](const auto& s) { return s.size() >= min_size; });
    if (big_enough) {
      for (auto& s : shards) std::shuffle(s.begin(), s.end(), rng);
      return shards;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("dirichlet:", alpha, " could not give every one of ", num_clients,
                                                 " clients ", min_size, " examples; use a larger alpha"));
}

absl::StatusOr<Shards> Partition(const std::string& spec, const std::vector<int64_t>& labels, int64_t num_classes,
                                 int num_clients, uint64_t seed) {
  if (num_clients < 1) {
    return absl::InvalidArgumentError(absl::StrCat("clients: expected >= 1, got ", num_clients));
  }
  if (spec == "iid") return PartitionIid(labels.size(), num_clients, seed);
  double alpha = 0;
  if (spec.rfind("dirichlet:", 0) == 0 && absl::SimpleAtod(spec.substr(10), &alpha) && alpha > 0 &&
      std::isfinite(alpha)) {
    return PartitionDirichlet(labels, num_classes, num_clients, alpha, seed);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("partition: expected \"iid\" or \"dirichlet:ALPHA\" with ALPHA > 0, got \"", spec, "\""));
}

absl::StatusOr<Shards> PartitionByGroup(const std::vector<int64_t>& groups, size_t num_groups, int num_clients) {
  if (num_clients < 1) return absl::InvalidArgumentError(absl::StrCat("clients: expected >= 1, got ", num_clients));
  if (num_groups < static_cast<size_t>(num_clients)) {
    return absl::InvalidArgumentError(absl::StrCat("data.partition \"by_file\": ", num_groups, " file(s) for ",
                                                   num_clients, " sites; each site needs at least one file: list more "
                                                   "data.files or run fewer sites"));
  }
  Shards shards(static_cast<size_t>(num_clients));
  for (size_t i = 0; i < groups.size(); ++i) {
    shards[static_cast<size_t>(groups[i] % num_clients)].push_back(i);
  }
  return shards;
}

absl::StatusOr<Shards> PartitionDataset(const std::string& spec, const Dataset& data, int num_clients, uint64_t seed) {
  if (spec == "by_file") {
    if (data.groups.size() != data.size()) {
      return absl::InvalidArgumentError(
          "data.partition: \"by_file\" needs a data set read from files (\"dataset\": \"text\")");
    }
    return PartitionByGroup(data.groups, data.group_names.size(), num_clients);
  }
  if (!data.label_shape.empty() && spec != "iid") {
    return absl::InvalidArgumentError(absl::StrCat("data.partition: \"", spec,
                                                   "\" splits by class, and this data set has a label per position "
                                                   "(text); use \"iid\" or \"by_file\""));
  }
  if (!data.label_shape.empty()) return PartitionIid(data.size(), num_clients, seed);
  return Partition(spec, data.labels, data.num_classes, num_clients, seed);
}

HoldoutSplit SplitHoldout(std::vector<size_t> indices, double eval_fraction, uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x5bd1e995ull);
  std::shuffle(indices.begin(), indices.end(), rng);
  const size_t eval_count = static_cast<size_t>(eval_fraction * static_cast<double>(indices.size()));
  HoldoutSplit split;
  split.eval.assign(indices.begin(), indices.begin() + static_cast<std::ptrdiff_t>(eval_count));
  split.train.assign(indices.begin() + static_cast<std::ptrdiff_t>(eval_count), indices.end());
  return split;
}

}  // namespace cohort::training
