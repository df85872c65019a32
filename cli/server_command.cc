// `cohort server`: runs the aggregation server for one job.
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/job_loading.h"
#include "crypto/startup_kit.h"
#include "proto/credentials.h"
#include "server/federated_job.h"
#include "server/server.h"
#include "training/data_readers.h"
#include "training/state_dict_io.h"
#include "training/trainer.h"

namespace cohort::cli {

void AddServerCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("server", "Run the aggregation server for a job");
  struct Flags {
    std::string kit;
    bool insecure = false;
    std::string config, listen = "0.0.0.0:7878", out = "cohort-out";
    int threads = 1;
  };
  auto flags = std::make_shared<Flags>();
  cmd->add_option("--config", flags->config, "Job config (JSON)")->required();
  cmd->add_option("--kit", flags->kit, "The server's startup kit (from cohort provision): mutual TLS");
  cmd->add_flag("--insecure", flags->insecure, "Plaintext gRPC without certificates (local experiments only)");
  cmd->add_option("--listen", flags->listen, "Address to listen on")->capture_default_str();
  cmd->add_option("--out", flags->out, "Output directory: checkpoint, model.pt, model.json, summary.json")
      ->capture_default_str();
  cmd->add_option("--threads", flags->threads, "LibTorch threads for server-side evaluation")->capture_default_str();
  cmd->callback([flags, exit_code] {
    if (flags->kit.empty() == !flags->insecure) {
      spdlog::error("pass --kit DIR (mutual TLS with the server's startup kit) or --insecure (plaintext), exactly one");
      *exit_code = 2;
      return;
    }
    std::shared_ptr<grpc::ServerCredentials> credentials;
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
    absl::StatusOr<core::ParameterSet> initial = training::InitialParameters(loaded->model, loaded->config.seed);
    if (!initial.ok()) {
      spdlog::error("{}", std::string(initial.status().message()));
      *exit_code = 1;
      return;
    }
    options.initial_model = std::move(*initial);
    const core::EvaluationConfig& eval = loaded->config.evaluation;
    if (!eval.test_data.empty()) {
      absl::StatusOr<training::Dataset> test = training::ReadDataset(
          loaded->config.data.dataset, eval.test_data, training::Split::kTest, loaded->config.data.label_column);
      if (!test.ok()) {
        spdlog::error("evaluation.test_data: {}", std::string(test.status().message()));
        *exit_code = 2;
        return;
      }
      auto test_set = std::make_shared<training::Dataset>(test->Head(static_cast<size_t>(eval.max_samples)));
      auto spec = loaded->model;
      const int64_t batch = loaded->config.training.eval_batch_size;
      options.evaluate = [test_set, spec, batch](const core::ParameterSet& model) {
        return training::Evaluate(spec, model, *test_set, batch);
      };
    }
    options.write_model = [](const core::ParameterSet& model, const std::filesystem::path& path) {
      return training::WriteStateDict(model, path.string());
    };
    absl::StatusOr<std::unique_ptr<server::FederatedJob>> job = server::FederatedJob::Create(std::move(options));
    if (!job.ok()) {
      spdlog::error("{}", std::string(job.status().message()));
      *exit_code = 1;
      return;
    }
    server::ServerOptions server_options;
    server_options.listen_address = flags->listen;
    server_options.credentials = credentials;
    const absl::Status result = server::ServeJob(**job, server_options);
    *exit_code = result.ok() ? 0 : 1;
  });
}

}  // namespace cohort::cli
