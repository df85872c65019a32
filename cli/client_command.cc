// `cohort client`: the agent a data site runs.
#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "client/agent.h"
#include "training/data_readers.h"
#include "training/partition.h"

namespace cohort::cli {
namespace {

struct ClientFlags {
  std::string kit;
  bool insecure = false;
  std::string server, site, job, data = "/usr/share/datasets/fashion-mnist", dataset = "fashion-mnist";
  std::string label_column = "label", shard, partition = "iid";
  uint64_t seed = 42;
  double eval_fraction = 0.1;
  int64_t train_subset = 0;
  int threads = 0;
  double connect_timeout = 120;
  std::string ledger;
};

// "I/K": this site is shard I (0-based) of K.
absl::Status ParseShard(const std::string& text, int* index, int* count) {
  std::vector<std::string> parts = absl::StrSplit(text, '/');
  if (parts.size() == 2 && absl::SimpleAtoi(parts[0], index) && absl::SimpleAtoi(parts[1], count) && *count >= 1 &&
      *index >= 0 && *index < *count) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("--shard: expected I/K with 0 <= I < K, got \"", text, "\""));
}

}  // namespace

void AddClientCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("client", "Run a site's client agent: train locally, send updates");
  auto f = std::make_shared<ClientFlags>();
  cmd->add_option("--kit", f->kit, "This site's startup kit (from cohort provision): mutual TLS");
  cmd->add_flag("--insecure", f->insecure, "Plaintext gRPC without certificates (local experiments only)");
  cmd->add_option("--server", f->server, "Server address HOST:PORT (default: the kit's)");
  cmd->add_option("--site", f->site, "This site's name (default: the kit's certificate name)");
  cmd->add_option("--job", f->job, "Job id (default: the server's job)");
  cmd->add_option("--data", f->data, "Data: a directory of IDX files, or a CSV file")->capture_default_str();
  cmd->add_option("--dataset", f->dataset, "fashion-mnist | csv")->capture_default_str();
  cmd->add_option("--label-column", f->label_column, "CSV label column")->capture_default_str();
  cmd->add_option("--shard", f->shard, "Simulation: use shard I of K (\"I/K\") of the data");
  cmd->add_option("--partition", f->partition, "Simulation: iid | dirichlet:ALPHA")->capture_default_str();
  cmd->add_option("--seed", f->seed, "Seed for sharding, held-out split and batch order")->capture_default_str();
  cmd->add_option("--eval-fraction", f->eval_fraction, "Share of local data held out for evaluation")
      ->capture_default_str();
  cmd->add_option("--train-subset", f->train_subset, "Use only the first N rows before sharding (0: all)")
      ->capture_default_str();
  cmd->add_option("--threads", f->threads, "LibTorch threads (0: the job's training_config.threads)");
  cmd->add_option("--ledger", f->ledger,
                  "This site's privacy ledger, kept across jobs (default: ./privacy-ledger-SITE.jsonl)");
  cmd->add_option("--connect-timeout", f->connect_timeout, "Seconds to keep retrying an unreachable server")
      ->capture_default_str();
  cmd->callback([f, exit_code] {
    auto bad_input = [&](const absl::Status& s) {
      spdlog::error("{}", std::string(s.message()));
      *exit_code = 2;
    };
    if (f->kit.empty() == !f->insecure) {
      return bad_input(absl::InvalidArgumentError(
          "pass --kit DIR (mutual TLS with this site's startup kit) or --insecure (plaintext), exactly one"));
    }
    if (f->insecure && (f->server.empty() || f->site.empty())) {
      return bad_input(absl::InvalidArgumentError("--insecure needs --server HOST:PORT and --site NAME"));
    }
    if (!(f->eval_fraction >= 0 && f->eval_fraction < 1)) {
      return bad_input(absl::InvalidArgumentError(
          absl::StrCat("--eval-fraction: expected a number in [0, 1), got ", f->eval_fraction)));
    }
    absl::StatusOr<training::Dataset> data =
        training::ReadDataset(f->dataset, f->data, training::Split::kTrain, f->label_column);
    if (!data.ok()) return bad_input(data.status());
    training::Dataset all = data->Head(static_cast<size_t>(f->train_subset));
    std::vector<size_t> rows(all.size());
    std::iota(rows.begin(), rows.end(), 0);
    int shard_index = 0;
    if (!f->shard.empty()) {
      int shard_count = 1;
      if (absl::Status s = ParseShard(f->shard, &shard_index, &shard_count); !s.ok()) return bad_input(s);
      absl::StatusOr<training::Shards> shards =
          training::Partition(f->partition, all.labels, all.num_classes, shard_count, f->seed);
      if (!shards.ok()) return bad_input(shards.status());
      rows = (*shards)[static_cast<size_t>(shard_index)];
    }
    const training::HoldoutSplit split =
        training::SplitHoldout(rows, f->eval_fraction, f->seed + static_cast<uint64_t>(shard_index));
    client::AgentOptions options;
    options.server_address = f->server;
    options.kit_dir = f->kit;
    options.site = f->site;
    options.job_id = f->job;
    options.train = all.Subset(split.train);
    options.eval = all.Subset(split.eval);
    options.seed = f->seed + static_cast<uint64_t>(shard_index);
    options.threads = f->threads;
    options.connect_timeout_s = f->connect_timeout;
    options.ledger_path = f->ledger;
    const absl::Status result = client::RunAgent(std::move(options));
    if (!result.ok()) spdlog::error("site={} {}", f->site, std::string(result.message()));
    *exit_code = result.ok() ? 0 : 1;
  });
}

}  // namespace cohort::cli
