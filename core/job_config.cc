#include "core/job_config.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "core/config_reader.h"
#include "core/names.h"
#include "core/limits.h"
#include "core/quote.h"

namespace cohort::core {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();

absl::Status CheckPartition(const std::string& key, const std::string& partition) {
  if (partition == "iid" || partition == "by_file") return absl::OkStatus();
  double alpha = 0;
  if (partition.rfind("dirichlet:", 0) == 0 && absl::SimpleAtod(partition.substr(10), &alpha) && alpha > 0 &&
      alpha < kInf) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(key, ": expected \"iid\", \"by_file\" or \"dirichlet:ALPHA\" with ALPHA > 0, got \"", partition,
                   "\""));
}

// The range rules of privacy/budget.h (core cannot link cohort_privacy), with its message
// format: `privacy.target_delta: expected a number in (0, 1), got 1`.
absl::Status CheckOpenUnitInterval(const nlohmann::json& section, const std::string& key, double* out) {
  if (!section.is_object() || !section.contains(key)) return absl::OkStatus();
  const nlohmann::json& v = section.at(key);
  if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() <= 0 || v.get<double>() >= 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("privacy.", key, ": expected a number in (0, 1), got ", JsonPrefix(v)));
  }
  *out = v.get<double>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PrivacyConfig> ParsePrivacyConfig(const nlohmann::json& json) {
  PrivacyConfig c;
  ConfigReader r("privacy", json);
  r.String("mechanism", &c.mechanism, {"none", "dp_sgd", "client_dp"});
  r.Number("target_epsilon", &c.target_epsilon, 0, kInf, /*min_exclusive=*/true);
  r.Known("target_delta");
  r.Number("noise_multiplier", &c.noise_multiplier, 0, kInf);
  r.Number("clip_norm", &c.clip_norm, 0, kInf, /*min_exclusive=*/true);
  r.Bool("adaptive_clipping", &c.adaptive_clipping);
  r.Number("target_quantile", &c.target_quantile, 0, 1);
  r.Number("clip_learning_rate", &c.clip_learning_rate, 0, kInf, /*min_exclusive=*/true);
  r.Number("count_noise_stddev", &c.count_noise_stddev, 0, kInf);
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  if (absl::Status s = CheckOpenUnitInterval(json, "target_delta", &c.target_delta); !s.ok()) return s;

  // Keys that apply to each mechanism; any other key present is refused (see job_config.h).
  std::vector<std::string> applicable = {"mechanism"};
  if (c.enabled()) {
    applicable.insert(applicable.end(), {"target_epsilon", "target_delta", "noise_multiplier", "clip_norm"});
  }
  if (c.mechanism == "client_dp") applicable.push_back("adaptive_clipping");
  if (c.adaptive_clipping) {
    applicable.insert(applicable.end(), {"target_quantile", "clip_learning_rate", "count_noise_stddev"});
  }
  for (const auto& [key, value] : json.items()) {
    if (std::find(applicable.begin(), applicable.end(), key) != applicable.end()) continue;
    const bool only_adaptive = c.mechanism == "client_dp" && key != "adaptive_clipping";
    const std::string why = only_adaptive ? std::string("privacy.adaptive_clipping is false")
                                          : absl::StrCat("privacy.mechanism is \"", c.mechanism, "\"");
    return absl::InvalidArgumentError(absl::StrCat("privacy.", key, ": does not apply when ", why, "; remove it"));
  }
  if (c.enabled() && !json.contains("target_epsilon")) {
    return absl::InvalidArgumentError(absl::StrCat("privacy.target_epsilon: missing; mechanism \"", c.mechanism,
                                                   "\" needs a budget (a number > 0, with target_delta)"));
  }
  if (c.adaptive_clipping && c.noise_multiplier > 0 && c.count_noise_stddev > 0 &&
      2 * c.count_noise_stddev <= c.noise_multiplier) {
    // The count's noise takes its share of the round's noise (privacy/client_dp.h).
    return absl::InvalidArgumentError(absl::StrCat("privacy.count_noise_stddev: expected > noise_multiplier / 2 (",
                                                   c.noise_multiplier / 2, "), got ", c.count_noise_stddev));
  }
  return c;
}

nlohmann::json ToJson(const PrivacyConfig& c) {
  nlohmann::json j = {{"mechanism", c.mechanism}};
  if (!c.enabled()) return j;
  j["target_epsilon"] = c.target_epsilon;
  j["target_delta"] = c.target_delta;
  j["noise_multiplier"] = c.noise_multiplier;
  j["clip_norm"] = c.clip_norm;
  if (c.mechanism == "client_dp") j["adaptive_clipping"] = c.adaptive_clipping;
  if (c.adaptive_clipping) {
    j["target_quantile"] = c.target_quantile;
    j["clip_learning_rate"] = c.clip_learning_rate;
    j["count_noise_stddev"] = c.count_noise_stddev;
  }
  return j;
}

absl::Status CheckDeviceName(std::string_view device, std::string_view key) {
  if (device == "auto" || device == "cpu" || device == "cuda") return absl::OkStatus();
  if (device.substr(0, 5) == "cuda:") {
    const std::string index(device.substr(5));
    if (!index.empty() && index.size() <= 4 &&
        std::all_of(index.begin(), index.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) &&
        std::stoi(index) < 1024) {
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(std::string(key),
                                                 ": expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got ",
                                                 QuotePrefix(device)));
}

absl::StatusOr<TrainingConfig> ParseTrainingConfig(const nlohmann::json& json) {
  TrainingConfig c;
  ConfigReader r("training_config", json);
  r.String("optimizer", &c.optimizer, {"sgd", "adam", "adamw"});
  r.Number("learning_rate", &c.learning_rate, 0, 10, /*min_exclusive=*/true);
  r.Number("momentum", &c.momentum, 0, 0.999999);
  r.Bool("nesterov", &c.nesterov);
  r.Number("beta1", &c.beta1, 0, 0.999999);
  r.Number("beta2", &c.beta2, 0, 0.999999);
  r.Number("eps", &c.eps, 0, 1, /*min_exclusive=*/true);
  r.Number("weight_decay", &c.weight_decay, 0, 1);
  r.String("lr_scheduler", &c.lr_scheduler, {"constant", "cosine", "linear", "plateau"});
  r.Number("plateau_factor", &c.plateau_factor, 0, 1, /*min_exclusive=*/true);
  r.Integer("plateau_patience", &c.plateau_patience, 0, 1000);
  r.Integer("max_steps", &c.max_steps, 0, kMaxInt);
  r.Integer("gradient_accumulation_steps", &c.gradient_accumulation_steps, 1, 1 << 16);
  r.Number("label_smoothing", &c.label_smoothing, 0, 1);
  r.Integer("warmup_steps", &c.warmup_steps, 0, kMaxInt);
  r.Number("min_learning_rate", &c.min_learning_rate, 0, 10);
  r.Number("max_grad_norm", &c.max_grad_norm, 0, kInf);
  r.Integer("local_epochs", &c.local_epochs, 1, 10000);
  r.Integer("batch_size", &c.batch_size, 1, 1 << 20);
  r.Integer("max_steps_per_round", &c.max_steps_per_round, 0, kMaxInt);
  r.Integer("eval_batch_size", &c.eval_batch_size, 1, 1 << 20);
  r.Integer("threads", &c.threads, 1, 256);
  r.String("device", &c.device);
  r.String("precision", &c.precision, {"fp32", "bf16", "fp16"});
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  if (absl::Status s = CheckDeviceName(c.device, "training_config.device"); !s.ok()) return s;
  if (c.precision == "fp16" && c.device == "cpu") {
    return absl::InvalidArgumentError(
        "training_config.precision: \"fp16\" needs a CUDA device (training_config.device \"cuda\", \"cuda:N\" or "
        "\"auto\"), got device \"cpu\"; use \"bf16\" on the CPU");
  }
  if (c.nesterov && (c.optimizer != "sgd" || c.momentum <= 0)) {
    return absl::InvalidArgumentError(
        "training_config.nesterov: true needs optimizer \"sgd\" with momentum > 0");
  }
  if (c.plateau_factor >= 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training_config.plateau_factor: expected a number in (0, 1) (the learning rate is multiplied by it), got ",
        c.plateau_factor));
  }
  if (c.label_smoothing >= 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("training_config.label_smoothing: expected a number in [0, 1), got ", c.label_smoothing));
  }
  for (const char* key : {"plateau_factor", "plateau_patience"}) {
    if (json.is_object() && json.contains(key) && c.lr_scheduler != "plateau") {
      return absl::InvalidArgumentError(absl::StrCat("training_config.", key,
                                                     ": applies only with lr_scheduler \"plateau\", got lr_scheduler \"",
                                                     c.lr_scheduler, "\""));
    }
  }
  if (c.max_steps > 0 && c.max_steps_per_round > 0) {
    return absl::InvalidArgumentError(
        "training_config.max_steps: counts steps over the whole job and max_steps_per_round caps each round; "
        "set one of them, not both");
  }
  if (c.max_steps > 0 && c.warmup_steps > c.max_steps) {
    return absl::InvalidArgumentError(absl::StrCat("training_config.warmup_steps: expected <= max_steps (",
                                                   c.max_steps, "), got ", c.warmup_steps));
  }
  if (c.min_learning_rate > c.learning_rate) {
    return absl::InvalidArgumentError(absl::StrCat("training_config.min_learning_rate: expected <= learning_rate (",
                                                   c.learning_rate, "), got ", c.min_learning_rate));
  }
  return c;
}

absl::StatusOr<JobConfig> ParseJobConfig(const nlohmann::json& json) {
  JobConfig c;
  ConfigReader top("", json);
  nlohmann::json job = nlohmann::json::object(), training = nlohmann::json::object();
  nlohmann::json federation = nlohmann::json::object(), data = nlohmann::json::object();
  nlohmann::json evaluation = nlohmann::json::object(), privacy = nlohmann::json::object();
  nlohmann::json vertical = nlohmann::json::object();
  top.String("job_type", &c.job_type, {"horizontal", "vertical"});
  top.Object("vertical", &vertical);
  top.Object("job", &job);
  top.Object("model_config", &c.model_config);
  top.Object("training_config", &training);
  top.Object("federation", &federation);
  top.Object("data", &data);
  top.Object("evaluation", &evaluation);
  top.Object("privacy", &privacy);
  if (absl::Status s = top.Finish(); !s.ok()) return s;
  if (c.job_type == "vertical") {
    if (!json.contains("vertical")) {
      return absl::InvalidArgumentError(
          "vertical: missing; job_type \"vertical\" needs the parties, the label party and the models");
    }
    absl::StatusOr<VerticalConfig> v = ParseVerticalConfig(vertical);
    if (!v.ok()) return v.status();
    c.vertical = std::move(*v);
  } else if (json.contains("vertical")) {
    return absl::InvalidArgumentError("vertical: applies only with \"job_type\": \"vertical\"; add it or remove this section");
  }
  if (c.job_type == "horizontal" && !json.contains("model_config")) {
    return absl::InvalidArgumentError("model_config: missing; the job must say which model to train");
  }

  ConfigReader j("job", job);
  j.String("name", &c.name);
  j.Unsigned("seed", &c.seed);
  if (absl::Status s = j.Finish(); !s.ok()) return s;
  // The job's name is part of every sealing context, audit entry and request: the same
  // rule as the participants' names, so a name accepted here never fails a Join later.
  if (absl::Status s = ValidateName("job.name", c.name); !s.ok()) return s;

  absl::StatusOr<TrainingConfig> t = ParseTrainingConfig(training);
  if (!t.ok()) return t.status();
  c.training = *t;

  FederationConfig& f = c.federation;
  ConfigReader fr("federation", federation);
  fr.Integer("rounds", &f.rounds, 1, 1000000);
  fr.Integer("clients_per_round", &f.clients_per_round, 1, 100000);
  fr.Integer("min_clients", &f.min_clients, 1, 100000);
  fr.Number("round_timeout_s", &f.round_timeout_s, 0, kInf, /*min_exclusive=*/true);
  fr.Number("heartbeat_timeout_s", &f.heartbeat_timeout_s, 0, kInf, /*min_exclusive=*/true);
  fr.Number("join_grace_s", &f.join_grace_s, 0, kInf);
  fr.Integer("max_round_retries", &f.max_round_retries, 0, 1000);
  fr.String("strategy", &f.strategy, {"fedavg"});
  fr.Number("max_update_norm", &f.max_update_norm, 0, kInf);
  fr.Integer("max_samples_per_site", &f.max_samples_per_site, 1, kMaxInt);
  fr.Number("max_weight_share", &f.max_weight_share, 0, 1, /*min_exclusive=*/true);
  fr.Integer("chunk_bytes", &f.chunk_bytes, static_cast<int64_t>(kMinChunkBytes),
             static_cast<int64_t>(kMaxChunkBytes));
  fr.NameList("sites", &f.sites);
  fr.NameList("revoked_sites", &f.revoked_sites);
  nlohmann::json compression = nlohmann::json::object();
  fr.Object("compression", &compression);
  if (absl::Status s = fr.Finish(); !s.ok()) return s;
  absl::StatusOr<CompressionConfig> compression_config = ParseCompressionConfig(compression);
  if (!compression_config.ok()) return compression_config.status();
  f.compression = *compression_config;
  if (f.min_clients > f.clients_per_round) {
    return absl::InvalidArgumentError(absl::StrCat("federation.min_clients: expected <= clients_per_round (",
                                                   f.clients_per_round, "), got ", f.min_clients));
  }
  if (f.chunk_bytes % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("federation.chunk_bytes: expected a multiple of 4, got ", f.chunk_bytes));
  }

  DataConfig& d = c.data;
  ConfigReader dr("data", data);
  dr.String("dataset", &d.dataset, {"fashion-mnist", "csv", "text"});
  dr.String("path", &d.path);
  dr.String("partition", &d.partition);
  dr.Number("eval_fraction", &d.eval_fraction, 0, 0.9);
  dr.Integer("train_subset", &d.train_subset, 0, kMaxInt);
  dr.String("label_column", &d.label_column);
  dr.NameList("files", &d.files);
  dr.Integer("sequence_length", &d.sequence_length, 1, 1 << 14);
  if (absl::Status s = dr.Finish(); !s.ok()) return s;
  for (const char* key : {"files", "sequence_length"}) {
    if (data.is_object() && data.contains(key) && d.dataset != "text") {
      return absl::InvalidArgumentError(
          absl::StrCat("data.", key, ": applies only to \"dataset\": \"text\", got dataset \"", d.dataset, "\""));
    }
  }
  if (d.partition == "by_file" && d.dataset != "text") {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.partition: \"by_file\" splits a text data set by file; dataset \"", d.dataset,
        "\" has no files to split by: use \"iid\" or \"dirichlet:ALPHA\""));
  }
  if (absl::Status s = CheckPartition("data.partition", d.partition); !s.ok()) return s;

  ConfigReader er("evaluation", evaluation);
  er.String("test_data", &c.evaluation.test_data);
  er.Integer("max_samples", &c.evaluation.max_samples, 0, kMaxInt);
  if (absl::Status s = er.Finish(); !s.ok()) return s;

  absl::StatusOr<PrivacyConfig> p = ParsePrivacyConfig(privacy);
  if (!p.ok()) return p.status();
  c.privacy = *p;
  if (c.privacy.mechanism == "dp_sgd" &&
      (c.training.max_steps > 0 || c.training.gradient_accumulation_steps > 1 || c.training.label_smoothing > 0)) {
    // DP-SGD's accounting plans its own steps on Poisson-sampled batches of plain cross-entropy.
    return absl::InvalidArgumentError(
        "training_config: max_steps, gradient_accumulation_steps and label_smoothing are not supported with "
        "privacy.mechanism \"dp_sgd\" (its accountant plans each round's steps from local_epochs and "
        "max_steps_per_round); remove them");
  }
  if (c.privacy.mechanism == "dp_sgd" && c.training.max_grad_norm > 0) {
    // DP-SGD bounds each example's gradient by privacy.clip_norm; clipping the noised batch
    // gradient again would change nothing the accounting relies on, only confuse the two.
    return absl::InvalidArgumentError(absl::StrCat(
        "training_config.max_grad_norm: expected 0 with privacy.mechanism \"dp_sgd\" (it clips each example's "
        "gradient to privacy.clip_norm instead), got ",
        c.training.max_grad_norm));
  }
  if (c.privacy.mechanism == "dp_sgd" && c.training.precision == "fp16") {
    // fp16's loss scaling multiplies every per-example gradient before DP-SGD clips it, so
    // the clip bound (and with it the accounting) would be off by the scale.
    return absl::InvalidArgumentError(
        "training_config.precision: \"fp16\" is not supported with privacy.mechanism \"dp_sgd\" (its loss scaling "
        "would scale the per-example gradients before clipping); use \"bf16\" or \"fp32\"");
  }
  return c;
}

namespace {

template <auto Section, auto Field>
void CopyField(const JobConfig& from, JobConfig& to) {
  (to.*Section).*Field = (from.*Section).*Field;
}
template <auto Field>
constexpr auto kTraining = &CopyField<&JobConfig::training, Field>;
template <auto Field>
constexpr auto kFederation = &CopyField<&JobConfig::federation, Field>;
template <auto Field>
constexpr auto kPrivacy = &CopyField<&JobConfig::privacy, Field>;

constexpr SettableParameter kSettable[] = {
    {"training_config.optimizer", kTraining<&TrainingConfig::optimizer>},
    {"training_config.learning_rate", kTraining<&TrainingConfig::learning_rate>},
    {"training_config.momentum", kTraining<&TrainingConfig::momentum>},
    {"training_config.nesterov", kTraining<&TrainingConfig::nesterov>},
    {"training_config.beta1", kTraining<&TrainingConfig::beta1>},
    {"training_config.beta2", kTraining<&TrainingConfig::beta2>},
    {"training_config.eps", kTraining<&TrainingConfig::eps>},
    {"training_config.weight_decay", kTraining<&TrainingConfig::weight_decay>},
    {"training_config.lr_scheduler", kTraining<&TrainingConfig::lr_scheduler>},
    {"training_config.warmup_steps", kTraining<&TrainingConfig::warmup_steps>},
    {"training_config.min_learning_rate", kTraining<&TrainingConfig::min_learning_rate>},
    {"training_config.max_grad_norm", kTraining<&TrainingConfig::max_grad_norm>},
    {"training_config.local_epochs", kTraining<&TrainingConfig::local_epochs>},
    {"training_config.batch_size", kTraining<&TrainingConfig::batch_size>},
    {"training_config.max_steps_per_round", kTraining<&TrainingConfig::max_steps_per_round>},
    {"training_config.eval_batch_size", kTraining<&TrainingConfig::eval_batch_size>},
    {"federation.rounds", kFederation<&FederationConfig::rounds>},
    {"federation.clients_per_round", kFederation<&FederationConfig::clients_per_round>},
    {"federation.min_clients", kFederation<&FederationConfig::min_clients>},
    {"federation.round_timeout_s", kFederation<&FederationConfig::round_timeout_s>},
    {"federation.join_grace_s", kFederation<&FederationConfig::join_grace_s>},
    {"federation.max_round_retries", kFederation<&FederationConfig::max_round_retries>},
    {"federation.max_update_norm", kFederation<&FederationConfig::max_update_norm>},
    {"federation.max_samples_per_site", kFederation<&FederationConfig::max_samples_per_site>},
    {"federation.max_weight_share", kFederation<&FederationConfig::max_weight_share>},
    {"federation.strategy", kFederation<&FederationConfig::strategy>},
    {"privacy.noise_multiplier", kPrivacy<&PrivacyConfig::noise_multiplier>},
    {"privacy.clip_norm", kPrivacy<&PrivacyConfig::clip_norm>},
};

}  // namespace

std::span<const SettableParameter> SettableParameters() { return kSettable; }

const SettableParameter* FindSettableParameter(std::string_view key) {
  for (const SettableParameter& p : kSettable) {
    if (p.key == key) return &p;
  }
  return nullptr;
}

absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path) {
  absl::StatusOr<nlohmann::json> json = ReadBoundedJsonFile(path, kJobConfigJson, "job config");
  if (!json.ok()) return json.status();
  absl::StatusOr<JobConfig> config = ParseJobConfig(*json);
  if (!config.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

nlohmann::json ToJson(const TrainingConfig& c) {
  nlohmann::json j = {{"optimizer", c.optimizer},       {"learning_rate", c.learning_rate},
          {"momentum", c.momentum},         {"nesterov", c.nesterov},
          {"beta1", c.beta1},               {"beta2", c.beta2},
          {"eps", c.eps},                   {"weight_decay", c.weight_decay},
          {"lr_scheduler", c.lr_scheduler}, {"warmup_steps", c.warmup_steps},
          {"min_learning_rate", c.min_learning_rate},
          {"max_grad_norm", c.max_grad_norm}, {"local_epochs", c.local_epochs},
          {"batch_size", c.batch_size},     {"max_steps_per_round", c.max_steps_per_round},
          {"eval_batch_size", c.eval_batch_size}, {"threads", c.threads},
          {"device", c.device},             {"precision", c.precision}};
  // Written only when set, so a config without them reads as it did before the keys existed;
  // the plateau keys only where they apply (the parser refuses them under another scheduler).
  if (c.max_steps > 0) j["max_steps"] = c.max_steps;
  if (c.gradient_accumulation_steps > 1) j["gradient_accumulation_steps"] = c.gradient_accumulation_steps;
  if (c.label_smoothing > 0) j["label_smoothing"] = c.label_smoothing;
  if (c.lr_scheduler == "plateau") {
    j["plateau_factor"] = c.plateau_factor;
    j["plateau_patience"] = c.plateau_patience;
  }
  return j;
}

nlohmann::json ToJson(const JobConfig& c) {
  const FederationConfig& f = c.federation;
  nlohmann::json j = {{"job_type", c.job_type},
          {"job", {{"name", c.name}, {"seed", c.seed}}},
          {"model_config", c.model_config},
          {"training_config", ToJson(c.training)},
          {"federation",
           {{"rounds", f.rounds},
            {"clients_per_round", f.clients_per_round},
            {"min_clients", f.min_clients},
            {"round_timeout_s", f.round_timeout_s},
            {"heartbeat_timeout_s", f.heartbeat_timeout_s},
            {"join_grace_s", f.join_grace_s},
            {"max_round_retries", f.max_round_retries},
            {"strategy", f.strategy},
            {"max_update_norm", f.max_update_norm},
            {"max_samples_per_site", f.max_samples_per_site},
            {"max_weight_share", f.max_weight_share},
            {"chunk_bytes", f.chunk_bytes},
            {"sites", f.sites},
            {"revoked_sites", f.revoked_sites}}},
          {"data",
           {{"dataset", c.data.dataset},
            {"path", c.data.path},
            {"partition", c.data.partition},
            {"eval_fraction", c.data.eval_fraction},
            {"train_subset", c.data.train_subset},
            {"label_column", c.data.label_column}}},
          {"evaluation", {{"test_data", c.evaluation.test_data}, {"max_samples", c.evaluation.max_samples}}},
          {"privacy", ToJson(c.privacy)}};
  // Written only when set, so a job without compression reads as it did before the key existed.
  if (f.compression.enabled()) j["federation"]["compression"] = ToJson(f.compression);
  if (c.data.dataset == "text") {
    j["data"]["files"] = c.data.files;
    j["data"]["sequence_length"] = c.data.sequence_length;
  }
  if (c.job_type == "vertical") j["vertical"] = ToJson(c.vertical);
  return j;
}

}  // namespace cohort::core
