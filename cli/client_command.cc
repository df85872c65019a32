// `cohort client`: the agent a data site runs.
#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/metrics_listener.h"
#include "client/site_metrics.h"
#include "observe/metrics_registry.h"
#include "observe/process_stats.h"
#include "cli/site_workers.h"
#include "client/agent.h"
#include "core/job_config.h"
#include "training/data_parallel.h"
#include "training/device.h"
#include "training/trainer.h"
#include "client/vertical_party.h"
#include "core/bounded_json.h"
#include "training/data_readers.h"
#include "training/partition.h"

namespace cohort::cli {
namespace {

struct ClientFlags {
  std::string kit;
  bool insecure = false;
  std::string server, site, job, data = "/usr/share/datasets/fashion-mnist", dataset = "fashion-mnist";
  std::string label_column = "label", shard, partition = "iid";
  std::vector<std::string> files;  // text: names in --data
  int64_t sequence_length = 64;    // text: tokens per window
  uint64_t seed = 42;
  double eval_fraction = 0.1;
  int64_t train_subset = 0;
  int threads = 0;
  double connect_timeout = 120;
  std::string ledger;
  std::string metrics_listen = "none";  // the site's /metrics (cli/metrics_listener.h)
  std::string vertical_data, out = "party-out";  // a party of a vertical job
  // Devices and data parallelism (training/data_parallel.h).
  std::string device;
  std::string base_model;  // a LoRA job's base model: this site's copy
  int workers = 1, nodes = 1, node_rank = 0, worker_rank = 0;
  std::string master;
  double worker_timeout = 30;
  int64_t dp_sgd_seed_for_tests = -1;  // < 0: DP-SGD randomness from the OS, as always outside tests
};

// "HOST:PORT" of --master.
absl::Status ParseMaster(const std::string& text, std::string* host, uint16_t* port) {
  const size_t colon = text.rfind(':');
  int value = -1;
  if (colon != std::string::npos && colon > 0 && absl::SimpleAtoi(text.substr(colon + 1), &value) && value > 0 &&
      value < 65536) {
    *host = text.substr(0, colon);
    *port = static_cast<uint16_t>(value);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("--master: expected HOST:PORT, got \"", text, "\""));
}

// "I/K": this site is shard I (0-based) of K.
absl::Status ParseShard(const std::string& text, int* index, int* count) {
  std::vector<std::string> parts = absl::StrSplit(text, '/');
  if (parts.size() == 2 && absl::SimpleAtoi(parts[0], index) && absl::SimpleAtoi(parts[1], count) && *count >= 1 &&
      *index >= 0 && *index < *count) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("--shard: expected I/K with 0 <= I < K, got \"", text, "\""));
}

// `cohort client --kit KIT --vertical-data PARTY.json --out DIR`: a party of a vertical job.
int RunVerticalPartyCommand(const ClientFlags& f) {
  if (f.kit.empty()) {
    spdlog::error("--vertical-data needs --kit DIR: a vertical party's introduction is signed with its kit");
    return 2;
  }
  absl::StatusOr<nlohmann::json> json =
      core::ReadBoundedJsonFile(f.vertical_data, core::kJobConfigJson, "--vertical-data");
  if (!json.ok()) {
    spdlog::error("{}", std::string(json.status().message()));
    return 2;
  }
  absl::StatusOr<training::VerticalDataSpec> spec = training::ParseVerticalDataSpec(*json);
  if (!spec.ok()) {
    spdlog::error("--vertical-data {}: {}", f.vertical_data, std::string(spec.status().message()));
    return 2;
  }
  client::VerticalPartyOptions options;
  options.kit_dir = f.kit;
  options.server_address = f.server;
  options.data = *spec;
  options.out_dir = f.out;
  options.threads = f.threads;
  options.connect_timeout_s = f.connect_timeout;
  const absl::Status result = client::RunVerticalParty(options);
  if (!result.ok()) spdlog::error("vertical party: {}", std::string(result.message()));
  return result.ok() ? 0 : 1;
}

// A site of --nodes x --workers worker processes (data parallelism over NCCL on GPUs, Gloo
// on CPUs; training::PlaceSiteWorker): global worker
// 0 runs the agent, every other worker follows it; each node's worker 0 starts that node's
// others. Returns the exit code.
int RunDataParallelSite(const ClientFlags& f, client::AgentOptions options) {
  const int world = f.workers * f.nodes;
  if (f.workers < 1 || f.nodes < 1 || f.node_rank < 0 || f.node_rank >= f.nodes || f.worker_rank < 0 ||
      f.worker_rank >= f.workers || !(f.worker_timeout > 0)) {
    spdlog::error("expected --workers >= 1, --nodes >= 1, 0 <= --node-rank < --nodes and --worker-timeout > 0, got "
                  "--workers {} --nodes {} --node-rank {} --worker-timeout {}",
                  f.workers, f.nodes, f.node_rank, f.worker_timeout);
    return 2;
  }
  training::GroupOptions group_options;
  group_options.world_size = world;
  group_options.rank = f.node_rank * f.workers + f.worker_rank;
  group_options.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.worker_timeout * 1000));
  if (!f.master.empty()) {
    if (absl::Status s = ParseMaster(f.master, &group_options.master_host, &group_options.master_port); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      return 2;
    }
  } else if (f.nodes > 1) {
    spdlog::error("--nodes > 1 needs --master HOST:PORT (node 0's address)");
    return 2;
  }
  // Each worker's device is fixed here, before the job's config arrives: the workers of a
  // node split its GPUs, and the collective engine follows the device.
  absl::StatusOr<training::WorkerPlacement> placement =
      training::PlaceSiteWorker(f.device.empty() ? "auto" : f.device, f.worker_rank, f.workers);
  if (!placement.ok()) {
    spdlog::error("site={} worker {} of {}: {}", f.site, group_options.rank, world,
                  std::string(placement.status().message()));
    return 2;
  }
  options.device = placement->device;
  const char* engine = placement->nccl ? "NCCL" : "Gloo";
  std::unique_ptr<training::Rendezvous> rendezvous;
  if (group_options.rank == 0) {
    absl::StatusOr<std::unique_ptr<training::Rendezvous>> listening = training::ListenForWorkers(group_options);
    if (!listening.ok()) {
      spdlog::error("site={} {}", f.site, std::string(listening.status().message()));
      return 1;
    }
    rendezvous = std::move(*listening);
    group_options.master_port = rendezvous->port();
  }
  SiteWorkers local_workers;  // this node's workers 1..W-1, started by its worker 0
  absl::Status result;
  if (f.worker_rank == 0 && f.workers > 1) {
    std::vector<std::string> extra;
    if (f.master.empty()) extra = {"--master", absl::StrCat(group_options.master_host, ":", group_options.master_port)};
    result = local_workers.Start(f.workers, group_options.rank, extra);
  }
  if (result.ok()) {
    absl::StatusOr<std::unique_ptr<training::Collective>> group =
        placement->nccl ? training::JoinNcclGroup(group_options, rendezvous.get(),
                                                  std::stoi(placement->device.substr(5)))
                        : training::JoinGlooGroup(group_options, rendezvous.get());
    if (!group.ok()) {
      result = group.status();
    } else if (group_options.rank == 0) {
      spdlog::info("site={} worker 0 of {}: data parallel over {} on {} ({} node(s) x {} worker(s))", f.site, world,
                   engine, placement->device, f.nodes, f.workers);
      options.group = group->get();
      result = client::RunAgent(std::move(options));
    } else {
      training::TrainerOptions trainer;
      trainer.device = placement->device;
      trainer.group = group->get();
      trainer.lora_base_model = options.base_model;
      result = training::RunFollower(std::move(options.train), options.seed, trainer);
    }
  }
  if (!result.ok()) {
    const std::string exits = local_workers.DescribeExits();
    spdlog::error("site={} worker {} of {}: {}{}", f.site, group_options.rank, world, std::string(result.message()),
                  exits.empty() ? "" : absl::StrCat(" (", exits, ")"));
  }
  return result.ok() ? 0 : 1;
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
  cmd->add_option("--dataset", f->dataset, "fashion-mnist | csv | text")->capture_default_str();
  cmd->add_option("--files", f->files, "Text: these files of the --data directory (default: all)")->delimiter(',');
  cmd->add_option("--sequence-length", f->sequence_length, "Text: tokens per training window")->capture_default_str();
  cmd->add_option("--label-column", f->label_column, "CSV label column")->capture_default_str();
  cmd->add_option("--shard", f->shard, "Simulation: use shard I of K (\"I/K\") of the data");
  cmd->add_option("--partition", f->partition, "Simulation: iid | dirichlet:ALPHA | by_file (text)")
      ->capture_default_str();
  cmd->add_option("--seed", f->seed, "Seed for sharding, held-out split and batch order")->capture_default_str();
  cmd->add_option("--eval-fraction", f->eval_fraction, "Share of local data held out for evaluation")
      ->capture_default_str();
  cmd->add_option("--train-subset", f->train_subset, "Use only the first N rows before sharding (0: all)")
      ->capture_default_str();
  cmd->add_option("--threads", f->threads, "LibTorch threads (0: the job's training_config.threads)");
  cmd->add_option("--ledger", f->ledger,
                  "This site's privacy ledger, kept across jobs (default: ./privacy-ledger-SITE.jsonl)");
  cmd->add_option("--metrics-listen", f->metrics_listen,
                  "HOST:PORT of this site's read-only Prometheus /metrics (port 0: a free one; off loopback, callers "
                  "need the token written beside the ledger as dashboard.token)")
      ->capture_default_str();
  cmd->add_option("--connect-timeout", f->connect_timeout, "Seconds to keep retrying an unreachable server")
      ->capture_default_str();
  cmd->add_option("--base-model", f->base_model,
                  "A LoRA job's base model: this site's copy of the state_dict file (default: the job's "
                  "model_config.lora.base_model); its SHA-256 must equal the job's");
  cmd->add_option("--device", f->device, "auto | cpu | cuda | cuda:N (default: the job's training_config.device)");
  cmd->add_option("--workers", f->workers, "Worker processes on this node: data parallelism, one GPU each over NCCL (device cuda or auto with GPUs), "
                  "else CPU processes over Gloo; the device is fixed at start and overrides training_config.device")
      ->capture_default_str();
  cmd->add_option("--nodes", f->nodes, "Nodes of this site, each running --workers workers")->capture_default_str();
  cmd->add_option("--node-rank", f->node_rank, "This node's index among --nodes (node 0 talks to the server)")
      ->capture_default_str();
  cmd->add_option("--master", f->master, "HOST:PORT of node 0's rendezvous (needed with --nodes > 1)");
  cmd->add_option("--worker-timeout", f->worker_timeout,
                  "Seconds a collective call waits for the other workers before the site reports an error")
      ->capture_default_str();
  cmd->add_option("--worker-rank", f->worker_rank, "Internal: this process's worker index on its node")
      ->group("");
  cmd->add_option("--dp-sgd-seed-for-tests", f->dp_sgd_seed_for_tests,
                  "Tests only, with --insecure: DP-SGD sampling and noise from this seed, so a run can be replayed")
      ->group("");
  cmd->add_option("--vertical-data", f->vertical_data,
                  "Vertical job: this party's data spec (JSON: dataset, path, id_column, feature_columns, "
                  "label_column; training/vertical_data.h). With --kit; --data and the sharding flags are unused");
  cmd->add_option("--out", f->out, "Vertical job: where this party saves model.pt (top.pt) and party.json")
      ->capture_default_str();
  cmd->callback([f, exit_code] {
    auto bad_input = [&](const absl::Status& s) {
      spdlog::error("{}", std::string(s.message()));
      *exit_code = 2;
    };
    if (!f->vertical_data.empty()) {
      *exit_code = RunVerticalPartyCommand(*f);
      return;
    }
    if (f->kit.empty() == !f->insecure) {
      return bad_input(absl::InvalidArgumentError(
          "pass --kit DIR (mutual TLS with this site's startup kit) or --insecure (plaintext), exactly one"));
    }
    if (f->insecure && (f->server.empty() || f->site.empty())) {
      return bad_input(absl::InvalidArgumentError("--insecure needs --server HOST:PORT and --site NAME"));
    }
    if (f->dp_sgd_seed_for_tests >= 0 && !f->insecure) {
      // Whoever knows the seed can subtract the noise: only for local experiments.
      return bad_input(absl::InvalidArgumentError(
          "--dp-sgd-seed-for-tests makes DP-SGD's noise predictable; it is accepted only with --insecure"));
    }
    if (!(f->eval_fraction >= 0 && f->eval_fraction < 1)) {
      return bad_input(absl::InvalidArgumentError(
          absl::StrCat("--eval-fraction: expected a number in [0, 1), got ", f->eval_fraction)));
    }
    core::DataConfig data_config;
    data_config.dataset = f->dataset;
    data_config.label_column = f->label_column;
    for (const std::string& name : f->files) {  // `cohort run` passes "" for "every file"
      if (!name.empty()) data_config.files.push_back(name);
    }
    data_config.sequence_length = f->sequence_length;
    absl::StatusOr<training::Dataset> data = training::ReadDataset(data_config, f->data, training::Split::kTrain);
    if (!data.ok()) return bad_input(data.status());
    training::Dataset all = data->Head(static_cast<size_t>(f->train_subset));
    std::vector<size_t> rows(all.size());
    std::iota(rows.begin(), rows.end(), 0);
    int shard_index = 0;
    if (!f->shard.empty()) {
      int shard_count = 1;
      if (absl::Status s = ParseShard(f->shard, &shard_index, &shard_count); !s.ok()) return bad_input(s);
      absl::StatusOr<training::Shards> shards =
          training::PartitionDataset(f->partition, all, shard_count, f->seed);
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
    options.device = f->device;
    options.base_model = f->base_model;
    if (f->dp_sgd_seed_for_tests >= 0) options.dp_sgd_seed_for_tests = static_cast<uint64_t>(f->dp_sgd_seed_for_tests);
    if (!f->device.empty()) {
      if (absl::Status s = core::CheckDeviceName(f->device, "--device"); !s.ok()) return bad_input(s);
    }
    // The site's metrics, served by the worker that talks to the server; declared before
    // the agent runs and stopped after it.
    client::SiteMetrics site_metrics;
    std::unique_ptr<observe::HttpListener> metrics_listener;
    if (f->worker_rank == 0 && f->node_rank == 0) {
      const std::filesystem::path ledger = f->ledger.empty() ? std::filesystem::path("privacy-ledger-" + f->site + ".jsonl")
                                                             : std::filesystem::path(f->ledger);
      absl::StatusOr<std::unique_ptr<observe::HttpListener>> listener = StartMetricsListener(
          f->metrics_listen, ledger.parent_path() / "dashboard.token",
          {{"/metrics", [&site_metrics] {
              return observe::HttpResponse{200, observe::kTextFormatContentType, site_metrics.Render()};
            }}});
      if (!listener.ok()) return bad_input(listener.status());
      metrics_listener = std::move(*listener);
      if (metrics_listener) options.metrics = &site_metrics;
    }
    if (f->workers * f->nodes > 1 || f->worker_rank > 0) {
      *exit_code = RunDataParallelSite(*f, std::move(options));
      return;
    }
    const absl::Status result = client::RunAgent(std::move(options));
    if (!result.ok()) spdlog::error("site={} {}", f->site, std::string(result.message()));
    spdlog::info("site={} peak resident memory: {} MiB", f->site, observe::ReadProcessStats().peak_resident_bytes >> 20);
    *exit_code = result.ok() ? 0 : 1;
  });
}

}  // namespace cohort::cli
