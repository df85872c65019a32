#pragma once
// Job configuration: what an admin submits and what every party validates the same way.
// Keys follow the names practitioners already write (`model_config`, `training_config`
// with `batch_size`, `learning_rate`, `warmup_steps`, `weight_decay`, `max_grad_norm`)
// beside the federation's own section. Every key, its meaning and its default is listed
// in docs/configuration.md. Unknown keys, wrong types and impossible values are refused
// with a message naming the key, the value and what is expected.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/update_compression.h"
#include "core/vertical_config.h"

namespace cohort::core {

struct TrainingConfig {
  std::string optimizer = "sgd";        // sgd | adam | adamw
  double learning_rate = 0.01;
  double momentum = 0.0;                // sgd only
  bool nesterov = false;                // sgd only
  double beta1 = 0.9, beta2 = 0.999;    // adam, adamw
  double eps = 1e-8;                    // adam, adamw
  double weight_decay = 0.0;
  // constant | cosine | linear (after warmup) | plateau (learning_rate times plateau_factor
  // each time the site's held-out loss has not improved for plateau_patience rounds; the
  // state lives in the site's trainer, across rounds)
  std::string lr_scheduler = "constant";
  double plateau_factor = 0.5;          // plateau only: in (0, 1)
  int64_t plateau_patience = 1;         // plateau only: rounds without improvement before a cut
  int64_t warmup_steps = 0;             // linear warmup from 0, counted over the whole job
  double min_learning_rate = 0.0;       // floor of cosine / linear decay
  double max_grad_norm = 0.0;           // 0: no clipping
  int64_t local_epochs = 1;
  int64_t batch_size = 64;
  int64_t max_steps_per_round = 0;      // 0: no cap
  // Optimizer steps each site takes over the whole job, spread evenly over the rounds (round
  // r ends at step floor(max_steps * r / rounds)), replacing local_epochs; the learning-rate
  // schedule (warmup_steps, decay) then spans exactly max_steps. 0: local_epochs decide.
  int64_t max_steps = 0;
  // Batches whose gradients are summed before one optimizer step: the step sees
  // batch_size * gradient_accumulation_steps examples. Steps count optimizer steps.
  int64_t gradient_accumulation_steps = 1;
  // Cross-entropy against (1 - s) one-hot + s / classes (Szegedy et al. 2016). 0: off.
  double label_smoothing = 0.0;
  // Small enough that a convolution's unfolded input stays in cache on a CPU: 10,000
  // Fashion-MNIST images through the zoo's CNN take 0.25 s in batches of 100 and 0.41 s in
  // batches of 1000 on one core here (docs/benchmarks.md, "Rounds against the compute floor").
  int64_t eval_batch_size = 100;
  int64_t threads = 1;                  // LibTorch intra-op threads per client
  // Where a site trains: "auto" (the first CUDA device when this LibTorch sees one, else
  // the CPU), "cpu", "cuda" (device 0) or "cuda:N". `cohort client --device` overrides it.
  std::string device = "auto";
  // Arithmetic of the forward and backward passes; weights and optimizer state stay fp32.
  // fp32 | bf16 (autocast, CPU or CUDA) | fp16 (CUDA only, with dynamic loss scaling).
  std::string precision = "fp32";
};

// OK when `device` is auto, cpu, cuda or cuda:N (N a decimal index < 1024); else
// InvalidArgument naming `key` and the value.
absl::Status CheckDeviceName(std::string_view device, std::string_view key);

struct FederationConfig {
  int64_t rounds = 20;
  int64_t clients_per_round = 2;
  int64_t min_clients = 2;              // needed to start a round and to close it
  double round_timeout_s = 600;         // a round closes (or is retried) after this long
  double heartbeat_timeout_s = 30;      // a client silent this long is lost
  double join_grace_s = 3;              // with min_clients live, wait this long for clients_per_round
  int64_t max_round_retries = 3;
  std::string strategy = "fedavg";
  double max_update_norm = 0.0;         // reject updates with a larger L2 norm; 0: off
  // The most samples a site may declare at Join; an update may claim no more than its
  // site declared, and that claim is its FedAvg weight.
  int64_t max_samples_per_site = 10'000'000;
  // No site's FedAvg weight exceeds this share of a round's total (clamped by water-filling;
  // the cap in force is max(share, 1 / sites reporting)). 1: no cap.
  double max_weight_share = 0.5;
  // 512 KiB: each upload in flight holds about two chunks in gRPC's receive path, so the
  // chunk size sets what every extra concurrent upload costs the server (1 MiB chunks:
  // 0.60 model sizes from 2 to 32 clients of a 92 MB model, 512 KiB: 0.34; the sealed
  // upload over mutual TLS 2-5% slower; docs/benchmarks.md).
  int64_t chunk_bytes = 512 << 10;
  // How sites compress their updates before sealing them (core/update_compression.h);
  // fixed for the life of a job, like the chunk size.
  CompressionConfig compression;
  std::vector<std::string> sites;          // enrolled sites; empty: any site of the federation
  std::vector<std::string> revoked_sites;  // excluded from the job: their calls are refused
};

struct DataConfig {
  std::string dataset = "fashion-mnist";  // fashion-mnist | csv | text
  std::string path = "/usr/share/datasets/fashion-mnist";
  std::string partition = "iid";        // iid | dirichlet:ALPHA | by_file (text: whole files per site)
  double eval_fraction = 0.1;           // per client held-out share
  int64_t train_subset = 0;             // use only the first N training rows; 0: all
  std::string label_column = "label";   // csv only
  std::vector<std::string> files;       // text only: names in path; empty: every text file
  int64_t sequence_length = 64;         // text only: tokens per window (training/text_data.h)
};

struct EvaluationConfig {
  std::string test_data;                // server-side test set; empty: no server evaluation
  int64_t max_samples = 0;              // 0: the whole test set
};

// The "privacy" section. Which keys apply depends on the mechanism, and a key that does not
// apply is refused rather than ignored: a budget written under mechanism "none" (or adaptive
// clipping asked of DP-SGD) would otherwise silently go unenforced. With "none" the section is
// just {"mechanism": "none"}; ToJson writes only the keys that apply, so it round-trips.
struct PrivacyConfig {
  std::string mechanism = "none";  // none | dp_sgd (example-level, local) | client_dp (DP-FedAvg)
  // The budget: per site for dp_sgd (each site's own data), per job for client_dp. Required
  // unless mechanism is none.
  double target_epsilon = 0.0;
  double target_delta = 1e-5;
  // Noise stddev / clip norm. 0: the smallest multiplier that meets the budget over the whole
  // job (every round, as if the site were selected in each one).
  double noise_multiplier = 0.0;
  // L2 bound: of each example's gradient (dp_sgd), or of each client's update (client_dp; the
  // initial bound when adaptive).
  double clip_norm = 1.0;
  // client_dp only: the bound follows a quantile of update norms (Andrew et al. 2021).
  bool adaptive_clipping = false;
  double target_quantile = 0.5;     // adaptive only: the quantile of update norms to track
  double clip_learning_rate = 0.2;  // adaptive only: geometric step of the bound per round
  double count_noise_stddev = 0.0;  // adaptive only: noise on the count of clipped updates; 0: clients_per_round / 20

  bool enabled() const { return mechanism != "none"; }
};

struct JobConfig {
  // "horizontal": sites hold the same columns of different rows (rounds of FedAvg);
  // "vertical": parties hold different columns of the same people (PSI, split learning;
  // `vertical` then says who they are and model_config is not used).
  std::string job_type = "horizontal";
  std::string name = "job";
  uint64_t seed = 42;
  nlohmann::json model_config = nlohmann::json::object();  // validated by the training layer
  TrainingConfig training;
  FederationConfig federation;
  DataConfig data;
  EvaluationConfig evaluation;
  PrivacyConfig privacy;
  VerticalConfig vertical;  // job_type "vertical" only
};

// A parameter an admin may change while a job runs (`cohort admin set`), applied at the
// next round boundary. This table is the one list of them: SetParameter checks a key
// against it and the boundary copies exactly these fields. Everything else (the model,
// the data, the job's name and seed, the chunk size, the heartbeat timeout, the privacy
// mechanism and budget) is fixed for the life of a job: changing it midway would make
// earlier rounds, or the privacy accounting, mean something else.
struct SettableParameter {
  std::string_view key;  // full key: "training_config.learning_rate"
  // Copies this parameter's value from a validated configuration into the one in force.
  void (*copy)(const JobConfig& from, JobConfig& to);
};
std::span<const SettableParameter> SettableParameters();
// Null when `key` (a full key) is not settable.
const SettableParameter* FindSettableParameter(std::string_view key);

// Strict parse of a whole job file. The error names the key: `federation.rounds: expected
// an integer >= 1, got "ten"`.
absl::StatusOr<JobConfig> ParseJobConfig(const nlohmann::json& json);
absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path);

absl::StatusOr<TrainingConfig> ParseTrainingConfig(const nlohmann::json& json);
// The "privacy" section alone (a client reads it from its task); errors name
// `privacy.<key>` with the messages of privacy/budget.h:
// `privacy.target_epsilon: expected a number > 0, got -1`.
absl::StatusOr<PrivacyConfig> ParsePrivacyConfig(const nlohmann::json& json);
nlohmann::json ToJson(const PrivacyConfig& config);
nlohmann::json ToJson(const TrainingConfig& config);
nlohmann::json ToJson(const JobConfig& config);

}  // namespace cohort::core
