#include "core/job_config.h"

#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/temp_dir.h"

namespace cohort::core {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

// Every key of every section, each set to a value other than its default.
json FullConfig() {
  return json::parse(R"({
    "job_type": "horizontal",
    "job": {"name": "fmnist-cnn", "seed": 7},
    "model_config": {"name": "niid_cnn", "input_shape": [1, 28, 28], "num_classes": 10,
                     "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 10}]},
    "training_config": {
      "optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": true,
      "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.0005,
      "lr_scheduler": "cosine", "warmup_steps": 100, "min_learning_rate": 0.001,
      "max_grad_norm": 1.5, "local_epochs": 2, "batch_size": 32, "max_steps_per_round": 50,
      "eval_batch_size": 500, "threads": 2, "device": "cpu", "precision": "bf16"
    },
    "federation": {
      "rounds": 30, "clients_per_round": 10, "min_clients": 8, "round_timeout_s": 120.5,
      "heartbeat_timeout_s": 15, "join_grace_s": 7.5, "max_round_retries": 5, "strategy": "fedavg",
      "max_update_norm": 25.0, "chunk_bytes": 65536, "max_samples_per_site": 50000, "max_weight_share": 0.4,
      "sites": ["a", "b"], "revoked_sites": ["c"]
    },
    "data": {
      "dataset": "csv", "path": "/data/adult.csv", "partition": "dirichlet:0.5",
      "eval_fraction": 0.2, "train_subset": 5000, "label_column": "income"
    },
    "evaluation": {"test_data": "/data/adult_test.csv", "max_samples": 2000},
    "privacy": {
      "mechanism": "client_dp", "target_epsilon": 4.5, "target_delta": 1e-6, "noise_multiplier": 1.2,
      "clip_norm": 0.3, "adaptive_clipping": true, "target_quantile": 0.7, "clip_learning_rate": 0.1,
      "count_noise_stddev": 2.5
    }
  })");
}

// Parses `config` and returns the error message, failing the test when it parses.
std::string ErrorOf(const json& config) {
  absl::StatusOr<JobConfig> parsed = ParseJobConfig(config);
  if (parsed.ok()) {
    ADD_FAILURE() << "parsed, but should have been refused: " << config.dump();
    return "";
  }
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

TEST(ParseJobConfigTest, AFullConfigSetsEveryField) {
  absl::StatusOr<JobConfig> parsed = ParseJobConfig(FullConfig());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const JobConfig& c = *parsed;
  EXPECT_EQ(c.name, "fmnist-cnn");
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.model_config, FullConfig()["model_config"]);

  const TrainingConfig& t = c.training;
  EXPECT_EQ(t.optimizer, "sgd");
  EXPECT_EQ(t.learning_rate, 0.05);
  EXPECT_EQ(t.momentum, 0.9);
  EXPECT_TRUE(t.nesterov);
  EXPECT_EQ(t.beta1, 0.8);
  EXPECT_EQ(t.beta2, 0.99);
  EXPECT_EQ(t.eps, 1e-6);
  EXPECT_EQ(t.weight_decay, 0.0005);
  EXPECT_EQ(t.lr_scheduler, "cosine");
  EXPECT_EQ(t.warmup_steps, 100);
  EXPECT_EQ(t.min_learning_rate, 0.001);
  EXPECT_EQ(t.max_grad_norm, 1.5);
  EXPECT_EQ(t.local_epochs, 2);
  EXPECT_EQ(t.batch_size, 32);
  EXPECT_EQ(t.max_steps_per_round, 50);
  EXPECT_EQ(t.eval_batch_size, 500);
  EXPECT_EQ(t.threads, 2);

  const FederationConfig& f = c.federation;
  EXPECT_EQ(f.rounds, 30);
  EXPECT_EQ(f.clients_per_round, 10);
  EXPECT_EQ(f.min_clients, 8);
  EXPECT_EQ(f.round_timeout_s, 120.5);
  EXPECT_EQ(f.heartbeat_timeout_s, 15);
  EXPECT_EQ(f.join_grace_s, 7.5);
  EXPECT_EQ(f.max_round_retries, 5);
  EXPECT_EQ(f.strategy, "fedavg");
  EXPECT_EQ(f.max_update_norm, 25.0);
  EXPECT_EQ(f.chunk_bytes, 65536);
  EXPECT_EQ(f.max_samples_per_site, 50000);
  EXPECT_EQ(f.max_weight_share, 0.4);

  EXPECT_EQ(c.data.dataset, "csv");
  EXPECT_EQ(c.data.path, "/data/adult.csv");
  EXPECT_EQ(c.data.partition, "dirichlet:0.5");
  EXPECT_EQ(c.data.eval_fraction, 0.2);
  EXPECT_EQ(c.data.train_subset, 5000);
  EXPECT_EQ(c.data.label_column, "income");

  EXPECT_EQ(c.evaluation.test_data, "/data/adult_test.csv");
  EXPECT_EQ(c.evaluation.max_samples, 2000);

  const PrivacyConfig& p = c.privacy;
  EXPECT_EQ(p.mechanism, "client_dp");
  EXPECT_EQ(p.target_epsilon, 4.5);
  EXPECT_EQ(p.target_delta, 1e-6);
  EXPECT_EQ(p.noise_multiplier, 1.2);
  EXPECT_EQ(p.clip_norm, 0.3);
  EXPECT_TRUE(p.adaptive_clipping);
  EXPECT_EQ(p.target_quantile, 0.7);
  EXPECT_EQ(p.clip_learning_rate, 0.1);
  EXPECT_EQ(p.count_noise_stddev, 2.5);
}

TEST(ParseJobConfigTest, AbsentSectionsTakeTheDocumentedDefaults) {
  absl::StatusOr<JobConfig> parsed = ParseJobConfig(json{{"model_config", json::object()}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const JobConfig& c = *parsed;
  EXPECT_EQ(c.name, "job");
  EXPECT_EQ(c.seed, 42u);
  EXPECT_EQ(c.training.optimizer, "sgd");
  EXPECT_EQ(c.training.learning_rate, 0.01);
  EXPECT_EQ(c.training.momentum, 0.0);
  EXPECT_FALSE(c.training.nesterov);
  EXPECT_EQ(c.training.lr_scheduler, "constant");
  EXPECT_EQ(c.training.warmup_steps, 0);
  EXPECT_EQ(c.training.max_grad_norm, 0.0);
  EXPECT_EQ(c.training.local_epochs, 1);
  EXPECT_EQ(c.training.batch_size, 64);
  EXPECT_EQ(c.training.max_steps_per_round, 0);
  EXPECT_EQ(c.training.eval_batch_size, 100);
  EXPECT_EQ(c.training.threads, 1);
  EXPECT_EQ(c.federation.rounds, 20);
  EXPECT_EQ(c.federation.clients_per_round, 2);
  EXPECT_EQ(c.federation.min_clients, 2);
  EXPECT_EQ(c.federation.round_timeout_s, 600);
  EXPECT_EQ(c.federation.heartbeat_timeout_s, 30);
  EXPECT_EQ(c.federation.join_grace_s, 3);
  EXPECT_EQ(c.federation.max_round_retries, 3);
  EXPECT_EQ(c.federation.strategy, "fedavg");
  EXPECT_EQ(c.federation.max_update_norm, 0.0);
  EXPECT_EQ(c.federation.chunk_bytes, 512 << 10);
  EXPECT_EQ(c.federation.max_samples_per_site, 10'000'000);
  EXPECT_EQ(c.federation.max_weight_share, 0.5);
  EXPECT_EQ(c.data.dataset, "fashion-mnist");
  EXPECT_EQ(c.data.path, "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(c.data.partition, "iid");
  EXPECT_EQ(c.data.eval_fraction, 0.1);
  EXPECT_EQ(c.data.train_subset, 0);
  EXPECT_EQ(c.data.label_column, "label");
  EXPECT_EQ(c.evaluation.test_data, "");
  EXPECT_EQ(c.evaluation.max_samples, 0);
}

TEST(ParseJobConfigTest, AbsentKeysInAPresentSectionKeepTheirDefaults) {
  json config = {{"model_config", json::object()}, {"training_config", {{"batch_size", 16}}}};
  absl::StatusOr<JobConfig> parsed = ParseJobConfig(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->training.batch_size, 16);
  EXPECT_EQ(parsed->training.learning_rate, 0.01);
  EXPECT_EQ(parsed->training.local_epochs, 1);
}

TEST(ParseJobConfigTest, AnUnknownTopLevelKeyIsNamed) {
  json config = FullConfig();
  config["trainng_config"] = json::object();
  const std::string msg = ErrorOf(config);
  EXPECT_THAT(msg, HasSubstr("trainng_config: unknown key"));
  EXPECT_THAT(msg, HasSubstr("training_config")) << "the message lists the known keys";
}

TEST(ParseJobConfigTest, AnUnknownNestedKeyIsNamedWithItsFullPath) {
  json config = FullConfig();
  config["training_config"]["learnin_rate"] = 0.1;
  const std::string msg = ErrorOf(config);
  EXPECT_THAT(msg, HasSubstr("training_config.learnin_rate: unknown key"));
  EXPECT_THAT(msg, HasSubstr("learning_rate")) << "the message lists the known keys";

  json federation = FullConfig();
  federation["federation"]["round"] = 3;
  EXPECT_THAT(ErrorOf(federation), HasSubstr("federation.round: unknown key"));
  json data = FullConfig();
  data["data"]["partitions"] = "iid";
  EXPECT_THAT(ErrorOf(data), HasSubstr("data.partitions: unknown key"));
  json job = FullConfig();
  job["job"]["owner"] = "alice";
  EXPECT_THAT(ErrorOf(job), HasSubstr("job.owner: unknown key"));
  json evaluation = FullConfig();
  evaluation["evaluation"]["samples"] = 5;
  EXPECT_THAT(ErrorOf(evaluation), HasSubstr("evaluation.samples: unknown key"));
}

TEST(ParseJobConfigTest, AWrongTypeNamesTheKeyTheValueAndTheExpectedType) {
  json config = FullConfig();
  config["federation"]["rounds"] = "ten";
  EXPECT_EQ(ErrorOf(config), "federation.rounds: expected an integer in [1, 1000000], got \"ten\"");

  json flag = FullConfig();
  flag["training_config"]["nesterov"] = "yes";
  EXPECT_THAT(ErrorOf(flag), HasSubstr("training_config.nesterov: expected true or false, got \"yes\""));

  json rate = FullConfig();
  rate["training_config"]["learning_rate"] = "0.1";
  EXPECT_THAT(ErrorOf(rate), HasSubstr("training_config.learning_rate: expected a number in (0, 10], got \"0.1\""));

  json fractional = FullConfig();
  fractional["training_config"]["batch_size"] = 32.5;
  EXPECT_THAT(ErrorOf(fractional), HasSubstr("training_config.batch_size: expected an integer"));
  EXPECT_THAT(ErrorOf(fractional), HasSubstr("got 32.5"));

  json seed = FullConfig();
  seed["job"]["seed"] = -1;
  EXPECT_THAT(ErrorOf(seed), HasSubstr("job.seed: expected an integer >= 0, got -1"));

  json section = FullConfig();
  section["federation"] = json::array({1, 2});
  EXPECT_THAT(ErrorOf(section), HasSubstr("federation: expected a JSON object, got [1,2]"));
}

TEST(ParseJobConfigTest, AnOutOfRangeValueNamesTheKeyTheValueAndTheRange) {
  json batch = FullConfig();
  batch["training_config"]["batch_size"] = 0;
  EXPECT_EQ(ErrorOf(batch), "training_config.batch_size: expected an integer in [1, 1048576], got 0");

  json rate = FullConfig();
  rate["training_config"]["learning_rate"] = -1;
  EXPECT_EQ(ErrorOf(rate), "training_config.learning_rate: expected a number in (0, 10], got -1");

  json zero_rate = FullConfig();
  zero_rate["training_config"]["learning_rate"] = 0;
  EXPECT_THAT(ErrorOf(zero_rate), HasSubstr("training_config.learning_rate: expected a number in (0, 10], got 0"));

  json timeout = FullConfig();
  timeout["federation"]["round_timeout_s"] = 0;
  EXPECT_THAT(ErrorOf(timeout), HasSubstr("federation.round_timeout_s: expected a number > 0, got 0"));

  json fraction = FullConfig();
  fraction["data"]["eval_fraction"] = 0.95;
  EXPECT_THAT(ErrorOf(fraction), HasSubstr("data.eval_fraction: expected a number in [0, 0.9], got 0.95"));

  json chunk = FullConfig();
  chunk["federation"]["chunk_bytes"] = 1024;
  EXPECT_THAT(ErrorOf(chunk), HasSubstr("federation.chunk_bytes: expected an integer in [4096, 3145728], got 1024"));

  json unaligned = FullConfig();
  unaligned["federation"]["chunk_bytes"] = 65537;
  EXPECT_THAT(ErrorOf(unaligned), HasSubstr("federation.chunk_bytes: expected a multiple of 4, got 65537"));

  json share = FullConfig();
  share["federation"]["max_weight_share"] = 0;
  EXPECT_THAT(ErrorOf(share), HasSubstr("federation.max_weight_share: expected a number in (0, 1], got 0"));
  share["federation"]["max_weight_share"] = 1.5;
  EXPECT_THAT(ErrorOf(share), HasSubstr("federation.max_weight_share: expected a number in (0, 1], got 1.5"));

  json samples = FullConfig();
  samples["federation"]["max_samples_per_site"] = 0;
  EXPECT_THAT(ErrorOf(samples), HasSubstr("federation.max_samples_per_site: expected an integer"));

  json optimizer = FullConfig();
  optimizer["training_config"]["optimizer"] = "rmsprop";
  EXPECT_THAT(ErrorOf(optimizer), HasSubstr("training_config.optimizer: expected one of \"sgd\", \"adam\", \"adamw\", "
                                            "got \"rmsprop\""));
}

TEST(ParseJobConfigTest, MinClientsAboveClientsPerRoundIsRefusedWithBothValues) {
  json config = FullConfig();
  config["federation"]["clients_per_round"] = 4;
  config["federation"]["min_clients"] = 5;
  EXPECT_EQ(ErrorOf(config), "federation.min_clients: expected <= clients_per_round (4), got 5");
  config["federation"]["min_clients"] = 4;
  EXPECT_TRUE(ParseJobConfig(config).ok()) << "min_clients == clients_per_round is allowed";
}

TEST(ParseJobConfigTest, ABadPartitionStringIsQuoted) {
  for (const char* bad : {"dirichlet", "dirichlet:", "dirichlet:abc", "dirichlet:0", "dirichlet:-1",
                          "dirichlet:inf", "dirichlet:nan", "IID", "shards:2"}) {
    json config = FullConfig();
    config["data"]["partition"] = bad;
    EXPECT_THAT(ErrorOf(config), HasSubstr(std::string("data.partition: expected \"iid\", \"by_file\" or \"dirichlet:ALPHA\" "
                                                       "with ALPHA > 0, got \"") + bad + "\""));
  }
  for (const char* good : {"iid", "dirichlet:0.1", "dirichlet:100"}) {
    json config = FullConfig();
    config["data"]["partition"] = good;
    EXPECT_TRUE(ParseJobConfig(config).ok()) << good;
  }
}

TEST(ParseJobConfigTest, AMissingModelConfigIsRefused) {
  json config = FullConfig();
  config.erase("model_config");
  EXPECT_THAT(ErrorOf(config), HasSubstr("model_config: missing"));
}

TEST(ParseJobConfigTest, NesterovNeedsSgdWithMomentum) {
  json config = FullConfig();
  config["training_config"]["momentum"] = 0;
  EXPECT_THAT(ErrorOf(config), HasSubstr("training_config.nesterov"));
  config["training_config"]["momentum"] = 0.9;
  config["training_config"]["optimizer"] = "adam";
  EXPECT_THAT(ErrorOf(config), HasSubstr("training_config.nesterov"));
}

TEST(ParseJobConfigTest, MinLearningRateAboveLearningRateIsRefused) {
  json config = FullConfig();
  config["training_config"]["min_learning_rate"] = 0.1;
  EXPECT_EQ(ErrorOf(config), "training_config.min_learning_rate: expected <= learning_rate (0.05), got 0.1");
}

TEST(ParseJobConfigTest, AJobNameWithSpacesOrSlashesIsRefused) {
  for (const char* bad : {"", "my job", "a/b", "a\\b"}) {
    json config = FullConfig();
    config["job"]["name"] = bad;
    EXPECT_THAT(ErrorOf(config), HasSubstr("job.name: expected 1 to 64 characters of A-Z a-z 0-9 . _ -"));
  }
}

TEST(ParseJobConfigTest, ToJsonThenParseGivesTheSameConfig) {
  absl::StatusOr<JobConfig> first = ParseJobConfig(FullConfig());
  ASSERT_TRUE(first.ok()) << first.status();
  const json written = ToJson(*first);
  EXPECT_EQ(written, FullConfig()) << "a config with every key set writes back as itself";
  absl::StatusOr<JobConfig> second = ParseJobConfig(written);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(ToJson(*second), written);
  EXPECT_EQ(second->training.eps, 1e-6);
  EXPECT_EQ(second->federation.round_timeout_s, 120.5);
  EXPECT_EQ(second->data.partition, "dirichlet:0.5");

  // Defaults survive the trip too: a printed default config parses back to the same.
  absl::StatusOr<JobConfig> defaults = ParseJobConfig(json{{"model_config", json::object()}});
  ASSERT_TRUE(defaults.ok());
  absl::StatusOr<JobConfig> reparsed = ParseJobConfig(ToJson(*defaults));
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  EXPECT_EQ(ToJson(*reparsed), ToJson(*defaults));
}

TEST(ParseTrainingConfigTest, ParsesTheTrainingSectionAloneWithItsOwnKeyPaths) {
  absl::StatusOr<TrainingConfig> t = ParseTrainingConfig(FullConfig()["training_config"]);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(ToJson(*t), FullConfig()["training_config"]);
  absl::StatusOr<TrainingConfig> bad = ParseTrainingConfig(json{{"local_epochs", 0}});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("training_config.local_epochs"));
}

// The "privacy" section.

json WithPrivacy(const json& privacy) {
  json config = FullConfig();
  config["training_config"]["max_grad_norm"] = 0.0;
  config["privacy"] = privacy;
  return config;
}

TEST(ParsePrivacyConfigTest, AbsentPrivacyMeansNoneAndWritesOnlyTheMechanism) {
  absl::StatusOr<JobConfig> parsed = ParseJobConfig(json{{"model_config", json::object()}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->privacy.mechanism, "none");
  EXPECT_FALSE(parsed->privacy.enabled());
  EXPECT_EQ(ToJson(parsed->privacy), json({{"mechanism", "none"}}));
  EXPECT_EQ(ToJson(*parsed)["privacy"], json({{"mechanism", "none"}}));
}

TEST(ParsePrivacyConfigTest, DpSgdTakesTheBudgetWithDefaultsForTheRest) {
  absl::StatusOr<JobConfig> parsed =
      ParseJobConfig(WithPrivacy({{"mechanism", "dp_sgd"}, {"target_epsilon", 3}}));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const PrivacyConfig& p = parsed->privacy;
  EXPECT_EQ(p.mechanism, "dp_sgd");
  EXPECT_EQ(p.target_epsilon, 3.0);
  EXPECT_EQ(p.target_delta, 1e-5);
  EXPECT_EQ(p.noise_multiplier, 0.0) << "0: calibrated to the budget";
  EXPECT_EQ(p.clip_norm, 1.0);
  EXPECT_FALSE(p.adaptive_clipping);
  EXPECT_EQ(ToJson(p), json::parse(R"({"mechanism": "dp_sgd", "target_epsilon": 3.0, "target_delta": 1e-5,
                                       "noise_multiplier": 0.0, "clip_norm": 1.0})"));
}

TEST(ParsePrivacyConfigTest, EveryMechanismRoundTripsThroughToJson) {
  for (const json& privacy : {json::parse(R"({"mechanism": "none"})"),
                              json::parse(R"({"mechanism": "dp_sgd", "target_epsilon": 1.5, "target_delta": 1e-6,
                                              "noise_multiplier": 1.1, "clip_norm": 0.5})"),
                              json::parse(R"({"mechanism": "client_dp", "target_epsilon": 8.0, "target_delta": 1e-5,
                                              "noise_multiplier": 0.0, "clip_norm": 2.0,
                                              "adaptive_clipping": false})"),
                              FullConfig()["privacy"]}) {
    SCOPED_TRACE(privacy.dump());
    absl::StatusOr<PrivacyConfig> first = ParsePrivacyConfig(privacy);
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(ToJson(*first), privacy);
    absl::StatusOr<PrivacyConfig> second = ParsePrivacyConfig(ToJson(*first));
    ASSERT_TRUE(second.ok()) << second.status();
    EXPECT_EQ(ToJson(*second), privacy);
  }
}

TEST(ParsePrivacyConfigTest, BadBudgetsNoiseAndClipNormsAreRefusedNamingTheKey) {
  const json dp = {{"mechanism", "dp_sgd"}, {"target_epsilon", 3}};
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"target_epsilon", -1}}, "privacy.target_epsilon: expected a number > 0, got -1"},
      {{{"target_epsilon", 0}}, "privacy.target_epsilon: expected a number > 0, got 0"},
      {{{"target_epsilon", "3"}}, "privacy.target_epsilon: expected a number > 0, got \"3\""},
      {{{"target_delta", 0}}, "privacy.target_delta: expected a number in (0, 1), got 0"},
      {{{"target_delta", 1}}, "privacy.target_delta: expected a number in (0, 1), got 1"},
      {{{"target_delta", 1.5}}, "privacy.target_delta: expected a number in (0, 1), got 1.5"},
      {{{"noise_multiplier", -0.5}}, "privacy.noise_multiplier: expected a number >= 0, got -0.5"},
      {{{"clip_norm", 0}}, "privacy.clip_norm: expected a number > 0, got 0"},
      {{{"clip_norm", -2}}, "privacy.clip_norm: expected a number > 0, got -2"},
      {{{"mechanism", "dp-sgd"}},
       "privacy.mechanism: expected one of \"none\", \"dp_sgd\", \"client_dp\", got \"dp-sgd\""},
      {{{"epsilon", 3}}, "privacy.epsilon: unknown key"},
  };
  for (const auto& [change, message] : cases) {
    json privacy = dp;
    privacy.update(change);
    EXPECT_THAT(ErrorOf(WithPrivacy(privacy)), HasSubstr(message)) << privacy.dump();
  }
}

TEST(ParsePrivacyConfigTest, AMechanismWithoutABudgetIsRefused) {
  for (const char* mechanism : {"dp_sgd", "client_dp"}) {
    EXPECT_THAT(ErrorOf(WithPrivacy({{"mechanism", mechanism}})),
                HasSubstr(std::string("privacy.target_epsilon: missing; mechanism \"") + mechanism +
                          "\" needs a budget"));
  }
}

TEST(ParsePrivacyConfigTest, KeysThatDoNotApplyToTheMechanismAreRefusedNotIgnored) {
  // A budget written without a mechanism would otherwise train without privacy.
  EXPECT_EQ(ErrorOf(WithPrivacy({{"target_epsilon", 3}})),
            "privacy.target_epsilon: does not apply when privacy.mechanism is \"none\"; remove it");
  EXPECT_EQ(ErrorOf(WithPrivacy({{"mechanism", "none"}, {"clip_norm", 1}})),
            "privacy.clip_norm: does not apply when privacy.mechanism is \"none\"; remove it");
  EXPECT_EQ(ErrorOf(WithPrivacy({{"mechanism", "dp_sgd"}, {"target_epsilon", 3}, {"adaptive_clipping", true}})),
            "privacy.adaptive_clipping: does not apply when privacy.mechanism is \"dp_sgd\"; remove it");
  EXPECT_EQ(ErrorOf(WithPrivacy({{"mechanism", "client_dp"}, {"target_epsilon", 3}, {"target_quantile", 0.5}})),
            "privacy.target_quantile: does not apply when privacy.adaptive_clipping is false; remove it");
}

TEST(ParsePrivacyConfigTest, DpSgdRefusesGlobalGradientClipping) {
  json config = WithPrivacy({{"mechanism", "dp_sgd"}, {"target_epsilon", 3}});
  config["training_config"]["max_grad_norm"] = 1.5;
  EXPECT_THAT(ErrorOf(config), HasSubstr("training_config.max_grad_norm: expected 0 with privacy.mechanism "
                                         "\"dp_sgd\" (it clips each example's gradient to privacy.clip_norm "
                                         "instead), got 1.5"));
  // Client-level DP clips the update, not the gradient: global clipping stays allowed.
  config["privacy"] = {{"mechanism", "client_dp"}, {"target_epsilon", 3}};
  EXPECT_TRUE(ParseJobConfig(config).ok());
}

// A server must refuse the job when it loads, not each site when it trains: fp16's loss
// scale would multiply every per-example gradient before DP-SGD clips it.
TEST(ParsePrivacyConfigTest, DpSgdRefusesFp16AtConfigTimeAndAcceptsBf16) {
  json config = WithPrivacy({{"mechanism", "dp_sgd"}, {"target_epsilon", 3}});
  config["training_config"]["device"] = "cuda";
  config["training_config"]["precision"] = "fp16";
  EXPECT_THAT(ErrorOf(config), HasSubstr("training_config.precision: \"fp16\" is not supported with "
                                         "privacy.mechanism \"dp_sgd\""));
  config["training_config"]["precision"] = "bf16";
  EXPECT_TRUE(ParseJobConfig(config).ok());
  config["training_config"]["precision"] = "fp16";
  config["privacy"] = {{"mechanism", "none"}};
  EXPECT_TRUE(ParseJobConfig(config).ok());
}

TEST(ParsePrivacyConfigTest, AdaptiveClippingNeedsCountNoiseAboveHalfTheNoiseMultiplier) {
  json privacy = FullConfig()["privacy"];
  privacy["count_noise_stddev"] = 0.6;  // noise_multiplier 1.2: the count would take all of it
  EXPECT_THAT(ErrorOf(WithPrivacy(privacy)),
              HasSubstr("privacy.count_noise_stddev: expected > noise_multiplier / 2 (0.6), got 0.6"));
  privacy["count_noise_stddev"] = 0.0;  // 0: clients_per_round / 20, checked where the round runs
  EXPECT_TRUE(ParseJobConfig(WithPrivacy(privacy)).ok());
}

TEST(LoadJobConfigTest, ReadsAFileAndPrefixesErrorsWithItsPath) {
  cohort::testing::TempDir dir;
  const std::string good = (dir.path() / "job.json").string();
  std::ofstream(good) << FullConfig().dump(2);
  absl::StatusOr<JobConfig> loaded = LoadJobConfig(good);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->name, "fmnist-cnn");

  const std::string bad = (dir.path() / "bad.json").string();
  json config = FullConfig();
  config["federation"]["rounds"] = 0;
  std::ofstream(bad) << config.dump();
  absl::StatusOr<JobConfig> refused = LoadJobConfig(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr(bad + ": federation.rounds"));

  const std::string broken = (dir.path() / "broken.json").string();
  std::ofstream(broken) << "{\"job\": ";
  absl::StatusOr<JobConfig> not_json = LoadJobConfig(broken);
  ASSERT_FALSE(not_json.ok());
  EXPECT_THAT(std::string(not_json.status().message()), HasSubstr(broken + ": not valid JSON"));

  EXPECT_EQ(LoadJobConfig((dir.path() / "absent.json").string()).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cohort::core

namespace cohort::core {
namespace {

// A job's name goes into every sealing context, audit entry and request: a name that
// parsed and then failed every Join (control bytes, non-UTF-8, 10 KB long) is refused at
// load, by the same rule as participant names.
TEST(ParseJobConfigTest, AJobNameFollowsTheParticipantNameRule) {
  for (const std::string& bad : std::vector<std::string>{std::string("has space"), std::string("a/b"), std::string("-dash-first"),
                                std::string("tab\there"), std::string("caf\xc3\xa9"), std::string("\xff\xfe"),
                                std::string(65, 'a'), std::string(10000, 'x'), std::string("")}) {
    nlohmann::json config = FullConfig();
    config["job"]["name"] = bad;
    absl::StatusOr<JobConfig> parsed = ParseJobConfig(config);
    ASSERT_FALSE(parsed.ok()) << "accepted job name of " << bad.size() << " bytes";
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find("job.name"), std::string_view::npos) << parsed.status().message();
    EXPECT_LT(parsed.status().message().size(), 300u) << "the error echoes the whole name";
  }
  for (const std::string& good : std::vector<std::string>{"a", "fmnist-cnn-iid", "Job_2.v1", std::string(64, 'z')}) {
    nlohmann::json config = FullConfig();
    config["job"]["name"] = good;
    EXPECT_TRUE(ParseJobConfig(config).ok()) << good;
  }
}

TEST(TrainingKnobsTest, MaxStepsAccumulationSmoothingAndPlateauParseAndRoundTrip) {
  json config = FullConfig();
  json& t = config["training_config"];
  t.erase("max_steps_per_round");
  t["max_steps"] = 500;
  t["gradient_accumulation_steps"] = 4;
  t["label_smoothing"] = 0.1;
  t["lr_scheduler"] = "plateau";
  t["plateau_factor"] = 0.3;
  t["plateau_patience"] = 2;
  absl::StatusOr<JobConfig> parsed = ParseJobConfig(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->training.max_steps, 500);
  EXPECT_EQ(parsed->training.gradient_accumulation_steps, 4);
  EXPECT_DOUBLE_EQ(parsed->training.label_smoothing, 0.1);
  EXPECT_EQ(parsed->training.lr_scheduler, "plateau");
  EXPECT_DOUBLE_EQ(parsed->training.plateau_factor, 0.3);
  EXPECT_EQ(parsed->training.plateau_patience, 2);
  absl::StatusOr<TrainingConfig> again = ParseTrainingConfig(ToJson(parsed->training));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->max_steps, 500);
  EXPECT_DOUBLE_EQ(again->plateau_factor, 0.3);
  // Without plateau, the plateau keys are not written, so a task's config parses again.
  parsed->training.lr_scheduler = "cosine";
  EXPECT_FALSE(ToJson(parsed->training).contains("plateau_factor"));
  EXPECT_TRUE(ParseTrainingConfig(ToJson(parsed->training)).ok());
}

TEST(TrainingKnobsTest, BadKnobsAreRefusedNamingTheKey) {
  auto with = [](const char* key, json value) {
    json config = FullConfig();
    config["training_config"].erase("max_steps_per_round");
    config["training_config"][key] = std::move(value);
    return config;
  };
  EXPECT_THAT(ErrorOf(with("gradient_accumulation_steps", 0)),
              HasSubstr("training_config.gradient_accumulation_steps: expected an integer in [1,"));
  EXPECT_THAT(ErrorOf(with("label_smoothing", 1.0)), HasSubstr("training_config.label_smoothing"));
  EXPECT_THAT(ErrorOf(with("max_steps", -1)), HasSubstr("training_config.max_steps"));
  EXPECT_THAT(ErrorOf(with("max_steps", 50)), HasSubstr("training_config.warmup_steps: expected <= max_steps (50)"));
  EXPECT_THAT(ErrorOf(with("lr_scheduler", "step")), HasSubstr("training_config.lr_scheduler"));
  EXPECT_THAT(ErrorOf(with("plateau_factor", 0.5)),
              HasSubstr("training_config.plateau_factor: applies only with lr_scheduler \"plateau\""));
  json plateau = with("lr_scheduler", "plateau");
  plateau["training_config"]["plateau_factor"] = 1.0;
  EXPECT_THAT(ErrorOf(plateau), HasSubstr("training_config.plateau_factor: expected a number in (0, 1)"));
  json both = FullConfig();
  both["training_config"]["max_steps"] = 1000;
  EXPECT_THAT(ErrorOf(both), HasSubstr("set one of them, not both"));
  json dp = with("gradient_accumulation_steps", 2);
  dp["privacy"] = {{"mechanism", "dp_sgd"}, {"target_epsilon", 3}};
  dp["training_config"]["max_grad_norm"] = 0;
  EXPECT_THAT(ErrorOf(dp), HasSubstr("not supported with privacy.mechanism \"dp_sgd\""));
}

TEST(TextDataConfigTest, TextKeysApplyToTextOnly) {
  json config = FullConfig();
  config["data"] = {{"dataset", "text"}, {"path", "/usr/share/games/fortunes"}, {"files", {"art", "food"}},
                    {"partition", "by_file"}, {"sequence_length", 32}};
  absl::StatusOr<JobConfig> parsed = ParseJobConfig(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->data.files, (std::vector<std::string>{"art", "food"}));
  EXPECT_EQ(parsed->data.sequence_length, 32);
  absl::StatusOr<JobConfig> again = ParseJobConfig(ToJson(*parsed));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->data.files, parsed->data.files);
  EXPECT_EQ(again->data.partition, "by_file");

  json csv = FullConfig();
  csv["data"]["sequence_length"] = 32;
  EXPECT_THAT(ErrorOf(csv), HasSubstr("data.sequence_length: applies only to \"dataset\": \"text\""));
  json by_file = FullConfig();
  by_file["data"]["partition"] = "by_file";
  EXPECT_THAT(ErrorOf(by_file), HasSubstr("data.partition: \"by_file\" splits a text data set by file"));
}

}  // namespace
}  // namespace cohort::core
