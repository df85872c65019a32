// Data parallelism through Gloo with real worker processes: this test binary starts copies of
// itself (`--data-parallel-worker RANK WORLD PORT MODE`) as workers 1..W-1, and the test
// process is worker 0. Two workers with half batches must give the weights one worker gives
// with whole batches, and a worker that dies must make worker 0 fail with a clear error
// within the group's timeout.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "training/data_parallel.h"
#include "training/data_readers.h"
#include "training/model_spec.h"
#include "training/trainer.h"

namespace cohort::training {
namespace {

constexpr uint64_t kSeed = 7;
constexpr size_t kRows = 240;

Dataset SiteData() {
  absl::StatusOr<Dataset> data = ReadDataset("fashion-mnist", COHORT_FASHION_MNIST_DIR, Split::kTrain, "label");
  if (!data.ok()) {
    ADD_FAILURE() << data.status();
    return {};
  }
  return data->Head(kRows);
}

ModelSpec Model(const std::string& name) {
  std::ifstream in(std::string(COHORT_MODELS_DIR) + "/" + name);
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(nlohmann::json::parse(in));
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

GroupOptions Group(int rank, int world, uint16_t port, std::chrono::milliseconds timeout) {
  GroupOptions o;
  o.master_port = port;
  o.rank = rank;
  o.world_size = world;
  o.timeout = timeout;
  return o;
}

// Workers 1..W-1, in a process of their own. MODE "follow" trains until told to stop;
// "die" joins, takes the model and the first round's order, and is killed by SIGKILL.
int RunWorkerProcess(int rank, int world, uint16_t port, const std::string& mode) {
  absl::StatusOr<std::unique_ptr<Collective>> group =
      JoinGlooGroup(Group(rank, world, port, std::chrono::seconds(20)), nullptr);
  if (!group.ok()) {
    fprintf(stderr, "worker %d: %s\n", rank, std::string(group.status().message()).c_str());
    return 2;
  }
  if (mode == "die") {
    std::string hello;
    (void)BroadcastString(**group, hello, 0);
    core::ParameterSet global(Model("mlp.json").ParameterManifest());
    (void)ReceiveRoundOrder(**group, global);
    raise(SIGKILL);
  }
  TrainerOptions options;
  options.group = group->get();
  options.dp_sgd_seed_for_tests = 99;
  const absl::Status s = RunFollower(SiteData(), kSeed, options);
  if (!s.ok()) fprintf(stderr, "worker %d: %s\n", rank, std::string(s.message()).c_str());
  return s.ok() ? 0 : 1;
}

std::string SelfPath() {
  std::vector<char> buf(4096);
  const ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  return n > 0 ? std::string(buf.data(), static_cast<size_t>(n)) : std::string();
}

pid_t SpawnWorker(int rank, int world, uint16_t port, const std::string& mode) {
  const std::string self = SelfPath(), r = std::to_string(rank), w = std::to_string(world), p = std::to_string(port);
  const pid_t pid = fork();
  if (pid == 0) {
    execl(self.c_str(), self.c_str(), "--data-parallel-worker", r.c_str(), w.c_str(), p.c_str(), mode.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Worker 0 of a site of `world` processes (the others spawned here), and what they exit with.
class Site {
 public:
  Site(int world, const std::string& mode, std::chrono::milliseconds timeout) {
    absl::StatusOr<std::unique_ptr<Rendezvous>> rendezvous = ListenForWorkers(Group(0, world, 0, timeout));
    EXPECT_TRUE(rendezvous.ok()) << rendezvous.status();
    rendezvous_ = std::move(*rendezvous);
    for (int rank = 1; rank < world; ++rank) pids_.push_back(SpawnWorker(rank, world, rendezvous_->port(), mode));
    absl::StatusOr<std::unique_ptr<Collective>> group =
        JoinGlooGroup(Group(0, world, rendezvous_->port(), timeout), rendezvous_.get());
    EXPECT_TRUE(group.ok()) << group.status();
    if (group.ok()) group_ = std::move(*group);
  }
  ~Site() {
    for (pid_t pid : pids_) {
      if (pid > 0) kill(pid, SIGKILL);
    }
    (void)WaitAll();
  }
  Collective* group() { return group_.get(); }
  // Exit codes of the workers (-signal when killed).
  std::vector<int> WaitAll() {
    std::vector<int> codes;
    for (pid_t& pid : pids_) {
      if (pid <= 0) continue;
      int status = 0;
      waitpid(pid, &status, 0);
      codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
      pid = -1;
    }
    return codes;
  }

 private:
  std::unique_ptr<Rendezvous> rendezvous_;
  std::unique_ptr<Collective> group_;
  std::vector<pid_t> pids_;
};

core::TrainingConfig Config(const std::string& optimizer) {
  core::TrainingConfig c;
  c.optimizer = optimizer;
  c.learning_rate = optimizer == "sgd" ? 0.05 : 0.002;
  c.momentum = optimizer == "sgd" ? 0.9 : 0.0;
  c.batch_size = 25;  // odd: shards of 12 and 13 rows, and a last batch of 15
  c.local_epochs = 2;
  c.device = "cpu";
  return c;
}

core::ParameterSet TrainOnce(const ModelSpec& spec, const core::TrainingConfig& config,
                             const core::PrivacyConfig& privacy, Collective* group, uint64_t round = 1) {
  TrainerOptions options;
  options.group = group;
  options.dp_sgd_seed_for_tests = 99;
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer =
      LocalTrainer::Create(spec, SiteData(), Dataset{}, kSeed, options);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  absl::StatusOr<core::ParameterSet> global = InitialParameters(spec, 3);
  EXPECT_TRUE(global.ok());
  absl::StatusOr<RoundResult> result = (*trainer)->TrainRound(*global, config, round, 5, privacy);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? std::move(result->delta) : core::ParameterSet();
}

void ExpectSameWeights(const core::ParameterSet& one, const core::ParameterSet& two) {
  ASSERT_EQ(one.floats().size(), two.floats().size());
  double largest = 0, worst = 0;
  for (size_t i = 0; i < one.floats().size(); ++i) {
    largest = std::max(largest, static_cast<double>(std::fabs(one.floats()[i])));
    worst = std::max(worst, static_cast<double>(std::fabs(one.floats()[i] - two.floats()[i])));
  }
  EXPECT_GT(largest, 1e-3) << "the round changed nothing: the comparison would prove nothing";
  EXPECT_LE(worst, 1e-5) << "largest difference between 1 and 2 workers";
}

void ExpectTwoWorkersEqualOne(const std::string& model, const core::TrainingConfig& config,
                              const core::PrivacyConfig& privacy = {}) {
  const ModelSpec spec = Model(model);
  const core::ParameterSet alone = TrainOnce(spec, config, privacy, nullptr);
  core::ParameterSet together;
  std::vector<int> exits;
  {
    Site site(2, "follow", std::chrono::seconds(30));
    ASSERT_NE(site.group(), nullptr);
    together = TrainOnce(spec, config, privacy, site.group());
    // TrainOnce's trainer has stopped the follower on its way out.
    exits = site.WaitAll();
  }
  EXPECT_THAT(exits, ::testing::ElementsAre(0));
  ExpectSameWeights(alone, together);
}

TEST(DataParallelTest, ShardsCoverEveryRowOnceAndDifferByAtMostOne) {
  for (int64_t n : {0, 1, 7, 25, 64}) {
    for (int size : {1, 2, 3, 5}) {
      int64_t next = 0;
      for (int rank = 0; rank < size; ++rank) {
        const Shard s = ShardOf(n, rank, size);
        EXPECT_EQ(s.begin, next);
        EXPECT_LE(s.end - s.begin, (n + size - 1) / size);
        EXPECT_GE(s.end - s.begin, n / size);
        next = s.end;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(DataParallelTest, TwoWorkersWithHalfBatchesEqualOneWorkerForSgdWithMomentum) {
  ExpectTwoWorkersEqualOne("niid_cnn.json", Config("sgd"));
}

// Adam divides each coordinate by its own gradient scale, so where a gradient is a near-zero
// cancellation (|g| ~ eps) the rounding of a sum taken in another order shows up as a relative
// change of that coordinate's step, in proportion to the learning rate: at 0.002 the largest
// difference is about 1.1e-5, at 0.001 about half that.
TEST(DataParallelTest, TwoWorkersWithHalfBatchesEqualOneWorkerForAdam) {
  core::TrainingConfig config = Config("adam");
  config.learning_rate = 0.001;
  ExpectTwoWorkersEqualOne("mlp.json", config);
}

// The same seeded sampling and noise on both sides (dp_sgd_seed_for_tests): 1 worker adds the
// noise to its whole sum; of 2, worker 0 adds the same draw once, to its half.
TEST(DataParallelTest, TwoWorkersEqualOneWorkerForDpSgdClippedPerExampleWithNoiseAddedOnce) {
  core::TrainingConfig config = Config("sgd");
  config.batch_size = 60;  // sampling rate 0.25: Poisson batches of varying size
  config.local_epochs = 1;
  core::PrivacyConfig privacy;
  privacy.mechanism = "dp_sgd";
  privacy.target_epsilon = 1000;
  privacy.noise_multiplier = 0.5;
  privacy.clip_norm = 0.5;
  ExpectTwoWorkersEqualOne("niid_cnn.json", config, privacy);
}

TEST(DataParallelTest, AWorkerThatDiesMakesWorkerZeroFailWithinTheTimeout) {
  const ModelSpec spec = Model("mlp.json");
  Site site(2, "die", std::chrono::seconds(10));
  ASSERT_NE(site.group(), nullptr);
  TrainerOptions options;
  options.group = site.group();
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer =
      LocalTrainer::Create(spec, SiteData(), Dataset{}, kSeed, options);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  absl::StatusOr<core::ParameterSet> global = InitialParameters(spec, 3);
  ASSERT_TRUE(global.ok());
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<RoundResult> result = (*trainer)->TrainRound(*global, Config("sgd"), 1, 5);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(result.status().message()),
              ::testing::AllOf(::testing::HasSubstr("worker 0 of 2"), ::testing::HasSubstr("died or stalled")));
  EXPECT_LT(seconds, 15.0);
  EXPECT_THAT(site.WaitAll(), ::testing::ElementsAre(-SIGKILL));
}

}  // namespace
}  // namespace cohort::training

int main(int argc, char** argv) {
  if (argc == 6 && std::string(argv[1]) == "--data-parallel-worker") {
    return cohort::training::RunWorkerProcess(std::stoi(argv[2]), std::stoi(argv[3]),
                                              static_cast<uint16_t>(std::stoi(argv[4])), argv[5]);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
