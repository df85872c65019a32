// The site agent's loop (client/agent_state_machine.h), driven by the events the agent's
// actions report, on a clock the test moves: no server, no training.
#include "client/agent_state_machine.h"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

namespace cohort::client {
namespace {

using namespace std::chrono_literals;
using Clock = AgentStateMachine::Clock;
namespace ev = agent_event;

constexpr std::chrono::milliseconds kConnectTimeout = 30s;

class AgentStateMachineTest : public ::testing::Test {
 protected:
  // Applies `event` after the pause the last step asked for (the agent sleeps it).
  AgentStep Step(const AgentEvent& event) {
    now_ += last_.pause;
    last_ = machine_.On(event, now_);
    EXPECT_EQ(last_.next, machine_.state());
    return last_;
  }
  void Advance(std::chrono::milliseconds by) { now_ += by; }

  Clock::time_point now_ = Clock::time_point{} + 1000h;
  AgentStateMachine machine_{kConnectTimeout, now_};
  AgentStep last_{AgentState::kJoining, 0ms};
};

absl::Status Unavailable() { return absl::UnavailableError("connection refused"); }

TEST_F(AgentStateMachineTest, ARoundGoesJoinPullTrainPushAndAFinishedJobEndsOk) {
  EXPECT_EQ(machine_.state(), AgentState::kJoining);
  EXPECT_EQ(Step(ev::Joined{}).next, AgentState::kPulling);
  EXPECT_EQ(Step(ev::Wait{}).next, AgentState::kPulling);
  EXPECT_EQ(Step(ev::Train{}).next, AgentState::kTraining);
  EXPECT_EQ(Step(ev::Trained{}).next, AgentState::kPushing);
  const AgentStep pushed = Step(ev::Pushed{});
  EXPECT_EQ(pushed.next, AgentState::kPulling);
  EXPECT_EQ(pushed.pause, 0ms);
  EXPECT_EQ(Step(ev::Done{DoneReason::kFinished, "job finished"}).next, AgentState::kDone);
  EXPECT_TRUE(machine_.result().ok()) << machine_.result();
}

TEST_F(AgentStateMachineTest, AStoppedJobEndsOkAndAFailedOneEndsAbortedWithTheServersWords) {
  Step(ev::Joined{});
  Step(ev::Done{DoneReason::kStopped, "job stopped"});
  EXPECT_TRUE(machine_.result().ok()) << machine_.result();

  AgentStateMachine failed(kConnectTimeout, now_);
  failed.On(ev::Joined{}, now_);
  failed.On(ev::Done{DoneReason::kFailed, "job failed: round 3 had 1 of 2 clients"}, now_);
  ASSERT_EQ(failed.state(), AgentState::kDone);
  EXPECT_EQ(failed.result().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(failed.result().message(), "job failed: round 3 had 1 of 2 clients");
}

TEST_F(AgentStateMachineTest, TheReasonDecidesNotTheMessage) {
  Step(ev::Joined{});
  // Words that once meant "join again" or "failed" change nothing without the reason.
  EXPECT_EQ(Step(ev::Done{DoneReason::kFinished, "job failed: client a has not joined"}).next, AgentState::kDone);
  EXPECT_TRUE(machine_.result().ok()) << machine_.result();

  AgentStateMachine unexplained(kConnectTimeout, now_);
  unexplained.On(ev::Joined{}, now_);
  unexplained.On(ev::Done{DoneReason::kUnspecified, "job finished"}, now_);
  ASSERT_EQ(unexplained.state(), AgentState::kDone);
  EXPECT_EQ(unexplained.result().code(), absl::StatusCode::kUnknown);
  EXPECT_NE(unexplained.result().message().find("without a reason"), std::string_view::npos);
}

TEST_F(AgentStateMachineTest, AServerThatForgotTheClientIsJoinedAgain) {
  Step(ev::Joined{});
  EXPECT_EQ(Step(ev::Done{DoneReason::kNotJoined, "client a has not joined job j"}).next, AgentState::kJoining);
  EXPECT_EQ(Step(ev::Joined{}).next, AgentState::kPulling);
  // The same when the server refuses the pull itself (NOT_FOUND).
  EXPECT_EQ(Step(ev::NotJoined{absl::NotFoundError("client a has not joined job j")}).next, AgentState::kJoining);
  EXPECT_EQ(Step(ev::Joined{}).next, AgentState::kPulling);
}

TEST_F(AgentStateMachineTest, ARestartingServerIsAskedEverySecondAndTheClientJoinsAgainWhenItIsBack) {
  Step(ev::Joined{});
  Step(ev::Train{});
  Step(ev::Trained{});
  // The push fails as the server goes down; the agent goes back to asking for work.
  EXPECT_EQ(Step(ev::PushRefused{Unavailable()}).next, AgentState::kPulling);
  for (int i = 0; i < 20; ++i) {
    const AgentStep step = Step(ev::ServerUnavailable{Unavailable()});
    ASSERT_EQ(step.next, AgentState::kPulling);
    EXPECT_EQ(step.pause, 1s);
    EXPECT_TRUE(machine_.server_unreachable());
  }
  // Back, with no memory of this client.
  EXPECT_EQ(Step(ev::Done{DoneReason::kNotJoined, ""}).next, AgentState::kJoining);
  EXPECT_FALSE(machine_.server_unreachable());
  EXPECT_EQ(Step(ev::Joined{}).next, AgentState::kPulling);
  EXPECT_EQ(Step(ev::Train{}).next, AgentState::kTraining);
}

TEST_F(AgentStateMachineTest, AServerUnreachableForLongerThanTheConnectTimeoutEndsTheAgent) {
  Step(ev::Joined{});
  Step(ev::ServerUnavailable{Unavailable()});
  Advance(kConnectTimeout - 2s);
  EXPECT_EQ(Step(ev::ServerUnavailable{Unavailable()}).next, AgentState::kPulling);
  Advance(2s);
  EXPECT_EQ(Step(ev::ServerUnavailable{Unavailable()}).next, AgentState::kDone);
  EXPECT_EQ(machine_.result().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(machine_.result().message().find("connection refused"), std::string_view::npos) << machine_.result();
}

TEST_F(AgentStateMachineTest, AnAnswerBetweenOutagesRestartsTheUnreachableClock) {
  Step(ev::Joined{});
  Step(ev::ServerUnavailable{Unavailable()});
  Advance(kConnectTimeout - 2s);
  Step(ev::Wait{});  // the server answered
  EXPECT_FALSE(machine_.server_unreachable());
  Step(ev::ServerUnavailable{Unavailable()});
  Advance(kConnectTimeout - 2s);
  EXPECT_EQ(Step(ev::ServerUnavailable{Unavailable()}).next, AgentState::kPulling);
}

TEST_F(AgentStateMachineTest, JoinRetriesBackOffFromAFifthOfASecondToFiveSecondsThenGiveUp) {
  std::vector<std::chrono::milliseconds> pauses;
  while (machine_.state() == AgentState::kJoining) pauses.push_back(Step(ev::ServerUnavailable{Unavailable()}).pause);
  ASSERT_GE(pauses.size(), 8u);
  EXPECT_EQ(pauses[0], 200ms);
  EXPECT_EQ(pauses[1], 400ms);
  EXPECT_EQ(pauses[2], 800ms);
  EXPECT_EQ(pauses[5], 5000ms);
  EXPECT_EQ(pauses[6], 5000ms);
  EXPECT_EQ(pauses.back(), 0ms);  // the failure that gave up
  EXPECT_EQ(machine_.state(), AgentState::kDone);
  EXPECT_EQ(machine_.result().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(machine_.result().message().find("gave up joining"), std::string_view::npos) << machine_.result();
  // It gave up at the first failure past the connect timeout, not before.
  std::chrono::milliseconds waited{0};
  for (std::chrono::milliseconds pause : pauses) waited += pause;
  EXPECT_GT(waited, kConnectTimeout);
  EXPECT_LE(waited - pauses[pauses.size() - 2], kConnectTimeout);
}

TEST_F(AgentStateMachineTest, ARejoinGetsAFreshConnectTimeoutAndBackoff) {
  Step(ev::Joined{});
  Advance(10 * kConnectTimeout);  // a long job
  Step(ev::Done{DoneReason::kNotJoined, ""});
  const AgentStep retry = Step(ev::ServerUnavailable{Unavailable()});
  EXPECT_EQ(retry.next, AgentState::kJoining);
  EXPECT_EQ(retry.pause, 200ms);
}

TEST_F(AgentStateMachineTest, ASpentBudgetDeclinesAndThenWaitsForTheJobToEnd) {
  Step(ev::Joined{});
  Step(ev::Train{});
  EXPECT_EQ(Step(ev::BudgetSpent{"privacy budget: epsilon 3.2 would exceed 3"}).next, AgentState::kDeclining);
  EXPECT_EQ(Step(ev::Declined{}).next, AgentState::kPulling);
  EXPECT_EQ(Step(ev::Wait{}).next, AgentState::kPulling);
  EXPECT_EQ(Step(ev::Done{DoneReason::kFinished, "job finished"}).next, AgentState::kDone);
  EXPECT_TRUE(machine_.result().ok());
}

TEST_F(AgentStateMachineTest, AFailedDownloadOrARefusedPushAsksForTheNextTask) {
  Step(ev::Joined{});
  EXPECT_EQ(Step(ev::DownloadFailed{absl::DataLossError("chunk 3 of 5: sealed chunk did not open")}).next,
            AgentState::kPulling);
  Step(ev::Train{});
  Step(ev::Trained{});
  EXPECT_EQ(Step(ev::PushRefused{absl::FailedPreconditionError("round 1 is closed")}).next, AgentState::kPulling);
}

TEST_F(AgentStateMachineTest, AFailureInAnyStateEndsTheAgentWithIt) {
  const absl::Status why = absl::InvalidArgumentError("training_config.learning_rate: expected a number");
  for (int at = 0; at < 4; ++at) {
    AgentStateMachine machine(kConnectTimeout, now_);
    const AgentEvent path[] = {ev::Joined{}, ev::Train{}, ev::Trained{}};
    for (int i = 0; i < at && i < 3; ++i) machine.On(path[i], now_);
    machine.On(ev::Failed{why}, now_);
    ASSERT_EQ(machine.state(), AgentState::kDone) << "after " << at << " steps";
    EXPECT_EQ(machine.result(), why);
  }
}

TEST_F(AgentStateMachineTest, AnEventTheStateCannotProduceEndsWithAnInternalErrorNamingBoth) {
  EXPECT_EQ(Step(ev::Pushed{}).next, AgentState::kDone);
  EXPECT_EQ(machine_.result().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(machine_.result().message(), "agent event Pushed cannot happen while joining");
}

TEST_F(AgentStateMachineTest, NothingMovesOnceDone) {
  Step(ev::Joined{});
  Step(ev::Done{DoneReason::kStopped, "job stopped"});
  EXPECT_EQ(Step(ev::Joined{}).next, AgentState::kDone);
  EXPECT_TRUE(machine_.result().ok());
}

}  // namespace
}  // namespace cohort::client
