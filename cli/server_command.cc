// `cohort server`: runs the aggregation server for one job.
#include <spdlog/spdlog.h>

#include <mutex>

#include "audit/writer.h"
#include "cli/commands.h"
#include "crypto/signing.h"
#include "cli/job_loading.h"
#include "cli/metrics_listener.h"
#include "core/bounded_json.h"
#include "server/vertical_job.h"
#include "absl/strings/str_cat.h"
#include "crypto/startup_kit.h"
#include "wire/credentials.h"
#include "observe/metrics_registry.h"
#include "observe/process_stats.h"
#include "server/checkpoint_key.h"
#include "server/federated_job.h"
#include "server/server.h"
#include "server/tensorboard_writer.h"
#include "training/data_readers.h"
#include "training/lora.h"
#include "training/state_dict_io.h"
#include "training/trainer.h"

namespace cohort::cli {
namespace {

// The server's audit signing key: the file given, or OUT/audit/audit.key, created with
// its public half (audit.pub, for auditors) on the first start and reused afterwards.
absl::StatusOr<crypto::SigningKey> LoadOrCreateAuditKey(const std::string& given, const std::filesystem::path& out) {
  if (!given.empty()) return crypto::ReadSigningKeyFile(given);
  const std::filesystem::path dir = out / "audit";
  const std::filesystem::path key_path = dir / "audit.key";
  if (std::filesystem::exists(key_path)) return crypto::ReadSigningKeyFile(key_path);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError("cannot create " + dir.string() + ": " + ec.message());
  crypto::SigningKey key = crypto::SigningKey::Generate();
  if (absl::Status s = crypto::WriteSigningKeyFile(key_path, key); !s.ok()) return s;
  if (absl::Status s = crypto::WritePublicKeyFile(dir / "audit.pub", key.public_key()); !s.ok()) return s;
  spdlog::info("created the audit signing key {}; auditors verify with {}", key_path.string(),
               (dir / "audit.pub").string());
  return key;
}

// `--initial-model`: the weights to start from, laid out as the job's model (every tensor,
// by name; the file may order them differently).
absl::StatusOr<core::ParameterSet> ReadInitialModel(const std::string& path, const training::ModelSpec& model) {
  absl::StatusOr<core::ParameterSet> read = training::ReadStateDict(path);
  if (!read.ok()) return absl::Status(read.status().code(), absl::StrCat("--initial-model: ", read.status().message()));
  return training::ArrangeStateDict(*read, model.ParameterManifest(), absl::StrCat("--initial-model ", path),
                                    "give a state_dict of the job's model_config");
}

// The job at `path` when it is a vertical one, its models checked by the training layer
// (each bottom model, the top model, and that the bottom outputs add up to the top
// model's input); any other job as parsed, for LoadJob to check the usual way.
absl::StatusOr<core::JobConfig> LoadVerticalJob(const std::string& path) {
  absl::StatusOr<nlohmann::json> json = core::ReadBoundedJsonFile(path, core::kJobConfigJson, "job config");
  if (!json.ok()) return json.status();
  if (!json->is_object() || !json->contains("job_type")) return core::JobConfig();
  absl::StatusOr<core::JobConfig> config = core::ParseJobConfig(*json);
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", config.status().message()));
  if (config->job_type != "vertical") return config;
  const core::VerticalConfig& v = config->vertical;
  int64_t bottom_outputs = 0;
  for (size_t i = 0; i < v.parties.size(); ++i) {
    absl::StatusOr<training::ModelSpec> bottom = training::ParseModelSpec(v.parties[i].bottom_model);
    if (!bottom.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": vertical.parties[", i, "].bottom_model: ", bottom.status().message()));
    }
    const std::vector<int64_t>& out = bottom->layers.empty() ? bottom->input_shape : bottom->layers.back().output_shape;
    int64_t size = 1;
    for (int64_t d : out) size *= d;
    bottom_outputs += size;
  }
  absl::StatusOr<training::ModelSpec> top = training::ParseModelSpec(v.top_model);
  if (!top.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": vertical.top_model: ", top.status().message()));
  if (top->input_shape.size() != 1 || top->input_shape[0] != bottom_outputs) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": vertical.top_model.input_shape: expected [", bottom_outputs,
                                                   "] (the bottom models' outputs together), got ",
                                                   v.top_model["input_shape"].dump()));
  }
  return config;
}

template <typename Flags>
int ServeVertical(const core::JobConfig& config, const Flags& flags, std::shared_ptr<grpc::ServerCredentials> credentials,
                  const server::Actor& launched_by) {
  absl::StatusOr<crypto::SigningKey> audit_key = LoadOrCreateAuditKey(flags.audit_key, flags.out);
  if (!audit_key.ok()) {
    spdlog::error("--audit-key: {}", std::string(audit_key.status().message()));
    return 2;
  }
  const std::filesystem::path audit_path =
      flags.audit_log.empty() ? std::filesystem::path(flags.out) / "audit.log" : std::filesystem::path(flags.audit_log);
  std::error_code ec;
  if (audit_path.has_parent_path()) std::filesystem::create_directories(audit_path.parent_path(), ec);
  absl::StatusOr<std::unique_ptr<audit::Writer>> audit_log = audit::Writer::Open(audit_path, std::move(*audit_key));
  if (!audit_log.ok()) {
    spdlog::error("audit log {}: {}", audit_path.string(), std::string(audit_log.status().message()));
    return 1;
  }
  server::VerticalJobOptions options;
  options.config = config;
  options.out_dir = flags.out;
  options.audit = audit_log->get();
  options.launched_by = launched_by;
  absl::StatusOr<std::unique_ptr<server::VerticalJob>> job = server::VerticalJob::Create(std::move(options));
  if (!job.ok()) {
    spdlog::error("{}", std::string(job.status().message()));
    return 2;
  }
  server::ServerOptions server_options;
  server_options.listen_address = flags.listen;
  server_options.credentials = std::move(credentials);
  server_options.linger_seconds = 1;
  return server::ServeVerticalJob(**job, server_options).ok() ? 0 : 1;
}

}  // namespace

void AddServerCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("server", "Run the aggregation server for a job");
  struct Flags {
    std::string kit;
    bool insecure = false;
    std::string config, listen = "0.0.0.0:7878", out = "cohort-out";
    std::string audit_key, audit_log, state;
    bool hold = false;
    int threads = 1;
    std::string tensorboard;  // empty: no TensorBoard event file
    std::string metrics_listen = "127.0.0.1:0";
    std::string initial_model;  // empty: the seed's initialization
    size_t downloads_in_flight = server::ServerOptions().downloads_in_flight;
  };
  auto flags = std::make_shared<Flags>();
  cmd->add_option("--config", flags->config, "Job config (JSON)")->required();
  cmd->add_option("--kit", flags->kit, "The server's startup kit (from cohort provision): mutual TLS");
  cmd->add_flag("--insecure", flags->insecure, "Plaintext gRPC without certificates (local experiments only)");
  cmd->add_option("--listen", flags->listen, "Address to listen on")->capture_default_str();
  cmd->add_option("--out", flags->out, "Output directory: checkpoint, model.pt, model.json, summary.json")
      ->capture_default_str();
  cmd->add_option("--threads", flags->threads, "LibTorch threads for server-side evaluation")->capture_default_str();
  cmd->add_option("--downloads-in-flight", flags->downloads_in_flight,
                  "Most model chunks all downloads hand to gRPC at once (each ~2.5 chunk sizes of memory); 0: no bound")
      ->capture_default_str();
  cmd->add_option("--audit-key", flags->audit_key,
                  "Ed25519 key that signs the audit log (default: OUT/audit/audit.key, created on first start)");
  cmd->add_option("--audit-log", flags->audit_log, "The audit log (default: OUT/audit.log)");
  cmd->add_option("--state", flags->state,
                  "The server's own state, kept across jobs: the anchors of the sites' privacy ledgers "
                  "(default: KIT.state beside the kit, or ./cohort-server-state with --insecure)");
  cmd->add_flag("--hold", flags->hold, "Wait for an admin's `cohort admin start` before the first round");
  cmd->add_option("--metrics-listen", flags->metrics_listen,
                  "HOST:PORT of the read-only dashboard and Prometheus /metrics (port 0: a free one; `none`: off; "
                  "off loopback, callers need the token in OUT/dashboard.token)")
      ->capture_default_str();
  cmd->add_option("--initial-model", flags->initial_model,
                  "Start from these weights (a state_dict file, e.g. an earlier job's model.pt) instead of the "
                  "seed's initialization: fine-tuning a trained model");
  cmd->add_option("--tensorboard", flags->tensorboard,
                  "Also write each round's scalars as a TensorBoard event file in this directory");
  cmd->callback([flags, exit_code] {
    if (flags->kit.empty() == !flags->insecure) {
      spdlog::error("pass --kit DIR (mutual TLS with the server's startup kit) or --insecure (plaintext), exactly one");
      *exit_code = 2;
      return;
    }
    std::shared_ptr<grpc::ServerCredentials> credentials;
    server::Actor launched_by{"local", "unauthenticated"};
    std::optional<core::CheckpointKey> checkpoint_key;
    if (!flags->kit.empty()) {
      absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(flags->kit);
      if (!kit.ok() || kit->role != crypto::Role::kServer) {
        spdlog::error("--kit {}: {}", flags->kit,
                      kit.ok() ? "not a server kit (its role is " + std::string(crypto::RoleName(kit->role)) + ")"
                               : std::string(kit.status().message()));
        *exit_code = 2;
        return;
      }
      credentials = wire::ServerCredentialsFromKit(*kit, flags->kit);
      launched_by = {kit->name, std::string(crypto::RoleName(kit->role))};
      absl::StatusOr<core::CheckpointKey> derived = server::DeriveCheckpointKey(kit->private_key_pem, kit->name);
      if (!derived.ok()) {
        spdlog::error("--kit {}: cannot derive the checkpoint key: {}", flags->kit, std::string(derived.status().message()));
        *exit_code = 1;
        return;
      }
      checkpoint_key = *derived;
    }
    if (absl::StatusOr<core::JobConfig> vertical = LoadVerticalJob(flags->config); !vertical.ok()) {
      spdlog::error("{}", std::string(vertical.status().message()));
      *exit_code = 2;
      return;
    } else if (vertical->job_type == "vertical") {
      *exit_code = ServeVertical(*vertical, *flags, credentials, launched_by);
      return;
    }
    absl::StatusOr<LoadedJob> loaded = LoadJob(flags->config);
    if (!loaded.ok()) {
      spdlog::error("{}", std::string(loaded.status().message()));
      *exit_code = 2;
      return;
    }
    training::SetTrainingThreads(flags->threads);
    server::JobOptions options;
    options.config = loaded->config;
    options.out_dir = flags->out;
    absl::StatusOr<core::ParameterSet> initial =
        flags->initial_model.empty() ? training::InitialParameters(loaded->model, loaded->config.seed)
                                     : ReadInitialModel(flags->initial_model, loaded->model);
    if (!initial.ok()) {
      spdlog::error("{}", std::string(initial.status().message()));
      *exit_code = 1;
      return;
    }
    options.initial_model = std::move(*initial);
    absl::StatusOr<crypto::SigningKey> audit_key = LoadOrCreateAuditKey(flags->audit_key, flags->out);
    if (!audit_key.ok()) {
      spdlog::error("--audit-key: {}", std::string(audit_key.status().message()));
      *exit_code = 2;
      return;
    }
    const std::filesystem::path audit_path =
        flags->audit_log.empty() ? std::filesystem::path(flags->out) / "audit.log" : std::filesystem::path(flags->audit_log);
    std::error_code ec;
    if (audit_path.has_parent_path()) std::filesystem::create_directories(audit_path.parent_path(), ec);
    absl::StatusOr<std::unique_ptr<audit::Writer>> audit_log = audit::Writer::Open(audit_path, std::move(*audit_key));
    if (!audit_log.ok()) {
      spdlog::error("audit log {}: {}", audit_path.string(), std::string(audit_log.status().message()));
      *exit_code = 1;
      return;
    }
    spdlog::info("audit log {}: {} entries, head {}", audit_path.string(), (*audit_log)->entry_count(),
                 (*audit_log)->head_hash());
    options.audit = audit_log->get();
    // Outlives every job's --out: a site's spend must survive the job that recorded it.
    std::string kit_dir = flags->kit;
    while (kit_dir.size() > 1 && kit_dir.back() == '/') kit_dir.pop_back();
    const std::filesystem::path state_dir = !flags->state.empty() ? std::filesystem::path(flags->state)
                                            : !kit_dir.empty()    ? std::filesystem::path(kit_dir + ".state")
                                                                  : std::filesystem::path("cohort-server-state");
    absl::StatusOr<std::unique_ptr<server::LedgerAnchors>> anchors = server::LedgerAnchors::Open(state_dir);
    if (!anchors.ok()) {
      spdlog::error("--state {}: {}", state_dir.string(), std::string(anchors.status().message()));
      *exit_code = 1;
      return;
    }
    options.ledger_anchors = anchors->get();
    if (!checkpoint_key) {
      absl::StatusOr<core::CheckpointKey> key = server::LoadOrCreateCheckpointKeyFile(state_dir / "checkpoint.key");
      if (!key.ok()) {
        spdlog::error("--state {}: {}", state_dir.string(), std::string(key.status().message()));
        *exit_code = 1;
        return;
      }
      checkpoint_key = *key;
    }
    options.checkpoint_key = checkpoint_key;
    options.launched_by = launched_by;
    options.hold = flags->hold;
    if (!flags->tensorboard.empty()) {
      absl::StatusOr<std::unique_ptr<server::TensorBoardWriter>> tensorboard =
          server::TensorBoardWriter::Create(flags->tensorboard);
      if (!tensorboard.ok()) {
        spdlog::error("--tensorboard {}: {}", flags->tensorboard, std::string(tensorboard.status().message()));
        *exit_code = 2;
        return;
      }
      spdlog::info("TensorBoard events: {}", (*tensorboard)->path().string());
      // The curves are a view of the record, not part of it: a failed write is logged and
      // the job goes on.
      options.on_round_recorded = [writer = std::shared_ptr<server::TensorBoardWriter>(std::move(*tensorboard))](
                                      const nlohmann::json& round_entry) {
        if (absl::Status s = writer->WriteRound(round_entry); !s.ok()) {
          spdlog::warn("TensorBoard {}: {}", writer->path().string(), std::string(s.message()));
        }
      };
    }
    const core::EvaluationConfig& eval = loaded->config.evaluation;
    if (!eval.test_data.empty()) {
      absl::StatusOr<training::Dataset> test =
          training::ReadDataset(loaded->config.data, eval.test_data, training::Split::kTest);
      if (!test.ok()) {
        spdlog::error("evaluation.test_data: {}", std::string(test.status().message()));
        *exit_code = 2;
        return;
      }
      // Built once; each round's model is evaluated where it lies (no copy of it).
      absl::StatusOr<std::unique_ptr<training::TestSetEvaluator>> evaluator = training::TestSetEvaluator::Create(
          loaded->model, test->Head(static_cast<size_t>(eval.max_samples)), loaded->config.training.eval_batch_size);
      if (!evaluator.ok()) {
        spdlog::error("evaluation.test_data: {}", std::string(evaluator.status().message()));
        *exit_code = 2;
        return;
      }
      options.evaluate = [evaluator = std::shared_ptr<training::TestSetEvaluator>(std::move(*evaluator)),
                          mu = std::make_shared<std::mutex>()](const core::ParameterSet& model) {
        std::lock_guard lock(*mu);  // one evaluation at a time on the one module
        return evaluator->Evaluate(model);
      };
    }
    options.write_model = [spec = loaded->model](const core::ParameterSet& model, const std::filesystem::path& path) {
      if (absl::Status s = training::WriteStateDict(model, path.string()); !s.ok() || !spec.uses_lora()) return s;
      // A LoRA job's model.pt holds the adapters (load it over the base model); beside it,
      // the base with the adapters merged in, loadable as the transformer without "lora".
      absl::StatusOr<core::ParameterSet> merged = training::MergeLora(spec, model);
      if (!merged.ok()) return merged.status();
      std::filesystem::path merged_path = path;
      merged_path.replace_filename(path.stem().string() + "_merged" + path.extension().string());
      return training::WriteStateDict(*merged, merged_path.string());
    };
    absl::StatusOr<std::unique_ptr<server::FederatedJob>> job = server::FederatedJob::Create(std::move(options));
    if (!job.ok()) {
      spdlog::error("{}", std::string(job.status().message()));
      *exit_code = 1;
      return;
    }
    // Declared after the job, so it stops before the job its handlers read goes away.
    server::FederatedJob* served = job->get();
    absl::StatusOr<std::unique_ptr<observe::HttpListener>> dashboard = StartMetricsListener(
        flags->metrics_listen, std::filesystem::path(flags->out) / "dashboard.token",
        {{"/metrics",
          [served] { return observe::HttpResponse{200, observe::kTextFormatContentType, served->MetricsPage()}; }},
         {"/api/state",
          [served] { return observe::HttpResponse{200, "application/json", served->DashboardState()}; }}});
    if (!dashboard.ok()) {
      spdlog::error("{}", std::string(dashboard.status().message()));
      *exit_code = 2;
      return;
    }
    server::ServerOptions server_options;
    server_options.listen_address = flags->listen;
    server_options.credentials = credentials;
    server_options.downloads_in_flight = flags->downloads_in_flight;
    const absl::Status result = server::ServeJob(**job, server_options);
    spdlog::info("peak resident memory of the server: {} MiB", observe::ReadProcessStats().peak_resident_bytes >> 20);
    *exit_code = result.ok() ? 0 : 1;
  });
}

}  // namespace cohort::cli
