// TaskWaiters (server/task_waiters.h) over a real FederatedJob: a long poll is answered
// with WAIT at its deadline and not before, with TRAIN as soon as the round opens, at once
// when there is an answer already, never after it is cancelled, and any number of polls
// wait on the one thread the waiters own.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "crypto/key_agreement.h"
#include "server/federated_job.h"
#include "server/task_waiters.h"

namespace cohort::server {
namespace {

using std::chrono::milliseconds;

size_t ThreadsOfThisProcess() {
  return static_cast<size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/task"),
                                           std::filesystem::directory_iterator()));
}

// Collects one answer.
struct Answered {
  std::promise<Task> promise;
  std::future<Task> future = promise.get_future();
  TaskWaiters::Answer answer() {
    return [this](Task task) { promise.set_value(std::move(task)); };
  }
  bool ready(milliseconds within = milliseconds(0)) { return future.wait_for(within) == std::future_status::ready; }
};

class HeldJob : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-waiters-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    core::JobConfig config;
    config.name = "waiters-job";
    config.federation.rounds = 1;
    config.federation.clients_per_round = 1;
    config.federation.min_clients = 1;
    config.federation.join_grace_s = 0;
    JobOptions options;
    options.config = config;
    options.initial_model = core::ParameterSet(core::Manifest({{"w", core::DType::kFloat32, {16}}}));
    options.out_dir = dir_ / "out";
    options.hold = true;  // no round opens until Start
    auto job = FederatedJob::Create(std::move(options));
    ASSERT_TRUE(job.ok()) << job.status().message();
    job_ = std::move(*job);
    running_ = std::thread([this] { (void)job_->Run(); });
  }
  void TearDown() override {
    waiters_.reset();
    job_->Cancel();
    running_.join();
    std::filesystem::remove_all(dir_);
  }
  void Join(const std::string& site) {
    const crypto::X25519KeyPair keys = crypto::GenerateX25519KeyPair();
    const std::string public_key(reinterpret_cast<const char*>(keys.public_key.data()), keys.public_key.size());
    ASSERT_TRUE(job_->Join(site, 10, public_key).ok());
  }

  std::filesystem::path dir_;
  std::unique_ptr<FederatedJob> job_;
  std::thread running_;
  std::unique_ptr<TaskWaiters> waiters_;
};

TEST_F(HeldJob, APollWithNothingToDoIsAnsweredWaitAtItsDeadlineAndNotBefore) {
  Join("a");
  waiters_ = std::make_unique<TaskWaiters>(*job_);
  Answered answered;
  const auto start = core::Clock::now();
  waiters_->Add("a", start + milliseconds(400), answered.answer());
  EXPECT_FALSE(answered.ready(milliseconds(200)));
  EXPECT_EQ(waiters_->pending(), 1u);
  ASSERT_TRUE(answered.ready(milliseconds(5000)));
  EXPECT_GE(core::Clock::now() - start, milliseconds(400));
  const Task task = answered.future.get();
  EXPECT_EQ(task.kind, Task::Kind::kWait);
  EXPECT_EQ(task.total_rounds, 1u);
  EXPECT_EQ(waiters_->pending(), 0u);
}

TEST_F(HeldJob, AWaitingPollIsAnsweredTrainAsSoonAsTheRoundOpens) {
  Join("a");
  waiters_ = std::make_unique<TaskWaiters>(*job_);
  Answered answered;
  waiters_->Add("a", core::Clock::now() + std::chrono::seconds(30), answered.answer());
  EXPECT_FALSE(answered.ready(milliseconds(300)));
  ASSERT_TRUE(job_->Start({"alice", "admin"}).ok());
  // Far sooner than the 30 s deadline: the round's opening re-polls the waiting entry.
  ASSERT_TRUE(answered.ready(milliseconds(10000)));
  const Task task = answered.future.get();
  EXPECT_EQ(task.kind, Task::Kind::kTrain);
  EXPECT_EQ(task.round, 1u);
  ASSERT_NE(task.model, nullptr);
  EXPECT_NE(task.session, nullptr);
}

TEST_F(HeldJob, APollThatHasItsAnswerAlreadyIsAnsweredBeforeAddReturns) {
  waiters_ = std::make_unique<TaskWaiters>(*job_);
  Answered answered;
  waiters_->Add("never-joined", core::Clock::now() + std::chrono::seconds(30), answered.answer());
  ASSERT_TRUE(answered.ready());
  EXPECT_EQ(answered.future.get().kind, Task::Kind::kDone);
  EXPECT_EQ(waiters_->pending(), 0u);
}

TEST_F(HeldJob, APollWithNoTimeToWaitIsAnsweredWaitBeforeAddReturns) {
  Join("a");
  waiters_ = std::make_unique<TaskWaiters>(*job_);
  Answered answered;
  waiters_->Add("a", core::Clock::now(), answered.answer());
  ASSERT_TRUE(answered.ready());
  EXPECT_EQ(answered.future.get().kind, Task::Kind::kWait);
}

TEST_F(HeldJob, ACancelledPollIsNeverAnswered) {
  Join("a");
  waiters_ = std::make_unique<TaskWaiters>(*job_);
  std::atomic<bool> called = false;
  const uint64_t ticket =
      waiters_->Add("a", core::Clock::now() + milliseconds(200), [&called](Task) { called = true; });
  EXPECT_TRUE(waiters_->Cancel(ticket));
  EXPECT_EQ(waiters_->pending(), 0u);
  ASSERT_TRUE(job_->Start({"alice", "admin"}).ok());  // a change, and then the deadline, pass
  std::this_thread::sleep_for(milliseconds(600));
  EXPECT_FALSE(called);
  EXPECT_FALSE(waiters_->Cancel(ticket));
}

TEST_F(HeldJob, AnsweredPollsCannotBeCancelled) {
  waiters_ = std::make_unique<TaskWaiters>(*job_);
  Answered answered;
  const uint64_t ticket = waiters_->Add("never-joined", core::Clock::now(), answered.answer());
  ASSERT_TRUE(answered.ready());
  EXPECT_FALSE(waiters_->Cancel(ticket));
}

TEST_F(HeldJob, FiveHundredWaitingPollsShareTheWaitersOneThread) {
  constexpr int kPolls = 500;
  for (int i = 0; i < kPolls; ++i) Join("site-" + std::to_string(i));
  waiters_ = std::make_unique<TaskWaiters>(*job_);
  const size_t threads_before = ThreadsOfThisProcess();
  std::vector<Answered> answered(kPolls);
  const auto start = core::Clock::now();
  for (int i = 0; i < kPolls; ++i) {
    // Deadlines spread over 0.5-1.5 s, so the one thread answers them one after another.
    waiters_->Add("site-" + std::to_string(i), start + milliseconds(500 + 2 * i), answered[i].answer());
  }
  EXPECT_EQ(waiters_->pending(), static_cast<size_t>(kPolls));
  EXPECT_EQ(ThreadsOfThisProcess(), threads_before);
  for (int i = 0; i < kPolls; ++i) {
    ASSERT_TRUE(answered[i].ready(milliseconds(10000))) << i;
    EXPECT_EQ(answered[i].future.get().kind, Task::Kind::kWait) << i;
  }
  EXPECT_EQ(waiters_->pending(), 0u);
}

}  // namespace
}  // namespace cohort::server
