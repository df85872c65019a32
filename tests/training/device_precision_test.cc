// Device choice and mixed precision through the trainer's narrow interface. On a machine
// without CUDA the CUDA cases check the refusal; where a GPU is visible they train on it
// (and the refusal cases skip, saying why).
#include <cmath>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

#include "core/job_config.h"
#include "training/data_readers.h"
#include "training/data_parallel.h"
#include "training/device.h"
#include "training/model_spec.h"
#include "training/trainer.h"

namespace cohort::training {
namespace {

using ::testing::HasSubstr;

Dataset Rows(size_t n) {
  absl::StatusOr<Dataset> data = ReadDataset("fashion-mnist", COHORT_FASHION_MNIST_DIR, Split::kTrain, "label");
  if (!data.ok()) {
    ADD_FAILURE() << data.status();
    return {};
  }
  return data->Head(n);
}

ModelSpec Model(const std::string& name) {
  std::ifstream in(std::string(COHORT_MODELS_DIR) + "/" + name);
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(nlohmann::json::parse(in));
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

core::TrainingConfig Config(const std::string& device, const std::string& precision) {
  core::TrainingConfig c;
  c.learning_rate = 0.05;
  c.momentum = 0.9;
  c.batch_size = 32;
  c.device = device;
  c.precision = precision;
  return c;
}

TEST(DeviceTest, ConfigAcceptsDeviceNamesAndRefusesOthersNamingTheKey) {
  for (const char* ok : {"auto", "cpu", "cuda", "cuda:0", "cuda:7"}) {
    EXPECT_TRUE(core::ParseTrainingConfig({{"device", ok}}).ok()) << ok;
  }
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda:99999"}) {
    absl::StatusOr<core::TrainingConfig> c = core::ParseTrainingConfig({{"device", bad}});
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr("training_config.device"));
  }
  absl::StatusOr<core::TrainingConfig> fp16_cpu = core::ParseTrainingConfig({{"device", "cpu"}, {"precision", "fp16"}});
  ASSERT_FALSE(fp16_cpu.ok());
  EXPECT_THAT(std::string(fp16_cpu.status().message()), HasSubstr("bf16"));
  EXPECT_FALSE(core::ParseTrainingConfig({{"precision", "fp8"}}).ok());
  const core::TrainingConfig round_trip = *core::ParseTrainingConfig(core::ToJson(Config("cuda:1", "bf16")));
  EXPECT_EQ(round_trip.device, "cuda:1");
  EXPECT_EQ(round_trip.precision, "bf16");
}

TEST(DeviceTest, AutoPicksCudaWhenVisibleElseCpu) {
  absl::StatusOr<std::string> device = ResolveDevice("auto");
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(*device, CudaAvailable() ? "cuda:0" : "cpu");
  EXPECT_EQ(*ResolveDevice("cpu"), "cpu");
}

TEST(DeviceTest, CudaWithoutAGpuIsAClearError) {
  if (CudaAvailable()) GTEST_SKIP() << "a GPU is visible: the refusal cannot be shown here";
  for (const char* requested : {"cuda", "cuda:1"}) {
    absl::StatusOr<std::string> device = ResolveDevice(requested);
    ASSERT_FALSE(device.ok());
    EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(device.status().message()),
                ::testing::AllOf(HasSubstr(std::string("device ") + requested + " requested but"),
                                 HasSubstr("no CUDA support"), HasSubstr("no GPU is visible")));
  }
  // Through the trainer: the round fails, and --device cpu overrides the job's "cuda".
  const ModelSpec spec = Model("mlp.json");
  const core::ParameterSet global = *InitialParameters(spec, 1);
  auto trainer = LocalTrainer::Create(spec, Rows(64), Dataset{}, 1);
  ASSERT_TRUE(trainer.ok());
  absl::StatusOr<RoundResult> refused = (*trainer)->TrainRound(global, Config("cuda", "fp32"), 1, 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("no GPU is visible"));
  TrainerOptions on_cpu;
  on_cpu.device = "cpu";
  auto overridden = LocalTrainer::Create(spec, Rows(64), Dataset{}, 1, on_cpu);
  ASSERT_TRUE(overridden.ok());
  ASSERT_TRUE((*overridden)->TrainRound(global, Config("cuda", "fp32"), 1, 1).ok());
  EXPECT_EQ((*overridden)->device(), "cpu");
}

// A site's workers split the node's GPUs, one each, and all-reduce over NCCL where the
// build has it; on the CPU they stay on the CPU over Gloo.
TEST(DeviceTest, SiteWorkersEachTakeTheirOwnGpuOrStayOnTheCpu) {
  for (int rank : {0, 1, 2}) {
    absl::StatusOr<WorkerPlacement> cpu = PlaceSiteWorker("cpu", rank, 3);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    EXPECT_EQ(cpu->device, "cpu");
    EXPECT_FALSE(cpu->nccl);
  }
  const int gpus = CudaDeviceCount();
  absl::StatusOr<WorkerPlacement> automatic = PlaceSiteWorker("auto", 1, 2);
  if (gpus == 0) {
    ASSERT_TRUE(automatic.ok()) << automatic.status();
    EXPECT_EQ(automatic->device, "cpu");
    EXPECT_FALSE(automatic->nccl);
  } else if (gpus >= 2) {
    ASSERT_TRUE(automatic.ok()) << automatic.status();
    EXPECT_EQ(automatic->device, "cuda:1");
    EXPECT_EQ(automatic->nccl, NcclCompiledIn());
  }
  // More workers than GPUs (none here, or a handful on a GPU machine) is refused, naming both.
  absl::StatusOr<WorkerPlacement> too_many = PlaceSiteWorker("cuda", 0, gpus + 1);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kFailedPrecondition);
  if (gpus > 0) {
    EXPECT_THAT(std::string(too_many.status().message()),
                HasSubstr(absl::StrCat(gpus + 1, " workers on cuda:0 need one GPU each")));
  }
}

TEST(DeviceTest, Fp16IsRefusedOnTheCpu) {
  if (CudaAvailable()) GTEST_SKIP() << "a GPU is visible: auto resolves to it";
  const ModelSpec spec = Model("mlp.json");
  auto trainer = LocalTrainer::Create(spec, Rows(64), Dataset{}, 1);
  ASSERT_TRUE(trainer.ok());
  absl::StatusOr<RoundResult> r = (*trainer)->TrainRound(*InitialParameters(spec, 1), Config("auto", "fp16"), 1, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("use \"bf16\""));
}

// Trains `rounds` rounds from the same start, feeding each round's result to the next, and
// returns the training loss of each.
std::vector<double> Losses(const ModelSpec& spec, const core::TrainingConfig& config, int rounds,
                           const core::PrivacyConfig& privacy = {}) {
  auto trainer = LocalTrainer::Create(spec, Rows(512), Dataset{}, 3);
  EXPECT_TRUE(trainer.ok());
  core::ParameterSet model = *InitialParameters(spec, 2);
  std::vector<double> losses;
  for (int round = 1; round <= rounds; ++round) {
    absl::StatusOr<RoundResult> r = (*trainer)->TrainRound(model, config, round, rounds, privacy);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) break;
    losses.push_back(r->metrics.train_loss);
    for (size_t i = 0; i < model.floats().size(); ++i) model.floats()[i] += r->delta.floats()[i];
  }
  return losses;
}

TEST(PrecisionTest, Bf16OnTheCpuTrainsAndStaysCloseToFp32) {
  const ModelSpec spec = Model("niid_cnn.json");
  const std::vector<double> bf16 = Losses(spec, Config("cpu", "bf16"), 3);
  const std::vector<double> fp32 = Losses(spec, Config("cpu", "fp32"), 3);
  ASSERT_EQ(bf16.size(), 3u);
  ASSERT_EQ(fp32.size(), 3u);
  EXPECT_TRUE(std::isfinite(bf16[2]));
  EXPECT_LT(bf16[2], bf16[0] * 0.8) << "bf16 training did not reduce the loss";
  EXPECT_NEAR(bf16[2], fp32[2], 0.15 * fp32[2]);
}

TEST(PrecisionTest, Bf16DpSgdTrains) {
  const ModelSpec spec = Model("niid_cnn.json");
  core::PrivacyConfig privacy;
  privacy.mechanism = "dp_sgd";
  privacy.target_epsilon = 1000;
  privacy.noise_multiplier = 0.3;
  privacy.clip_norm = 1.0;
  core::TrainingConfig config = Config("cpu", "bf16");
  config.learning_rate = 0.2;
  config.momentum = 0.5;
  const std::vector<double> losses = Losses(spec, config, 3, privacy);
  ASSERT_EQ(losses.size(), 3u);
  EXPECT_LT(losses[2], losses[0]);
}

// Where a GPU is visible: fp32, bf16 and fp16 train on it, and fp32 on the GPU lands near fp32
// on the CPU.
TEST(GpuTest, TrainsOnCudaInEveryPrecision) {
  if (!CudaAvailable()) GTEST_SKIP() << "no CUDA: this LibTorch has no CUDA support or no GPU is visible";
  const ModelSpec spec = Model("niid_cnn.json");
  const std::vector<double> cpu = Losses(spec, Config("cpu", "fp32"), 2);
  for (const char* precision : {"fp32", "bf16", "fp16"}) {
    const std::vector<double> gpu = Losses(spec, Config("cuda", precision), 2);
    ASSERT_EQ(gpu.size(), 2u) << precision;
    EXPECT_LT(gpu[1], gpu[0]) << precision;
    EXPECT_NEAR(gpu[1], cpu[1], 0.15 * cpu[1]) << precision;
  }
}

TEST(GpuTest, DpSgdOnCuda) {
  if (!CudaAvailable()) GTEST_SKIP() << "no CUDA: this LibTorch has no CUDA support or no GPU is visible";
  const ModelSpec spec = Model("niid_cnn.json");
  core::PrivacyConfig privacy;
  privacy.mechanism = "dp_sgd";
  privacy.target_epsilon = 1000;
  privacy.noise_multiplier = 0.3;
  for (const char* precision : {"fp32", "bf16"}) {
    core::TrainingConfig config = Config("cuda", precision);
    config.learning_rate = 0.2;
    const std::vector<double> losses = Losses(spec, config, 2, privacy);
    ASSERT_EQ(losses.size(), 2u) << precision;
    EXPECT_TRUE(std::isfinite(losses[1])) << precision;
  }
}

}  // namespace
}  // namespace cohort::training
