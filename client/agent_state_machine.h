#pragma once
// The site agent's loop as a state machine: what to do next given what the last action
// came to. It knows no gRPC and no LibTorch: the agent (client/agent.cc) performs each
// state's action through wire::FederationClient and the trainer, turns the result into
// an AgentEvent and asks the machine for the next state.
//
//   joining  --Joined-------------------------------------------------> pulling
//   joining  --ServerUnavailable--> joining (backoff 0.2 s doubling to 5 s; gives up
//                                   after connect_timeout)
//   pulling  --Wait | DownloadFailed----------------------------------> pulling
//   pulling  --Train--------------------------------------------------> training
//   pulling  --NotJoined | Done(kNotJoined)---------------------------> joining
//                                   (the server restarted and forgot this client)
//   pulling  --ServerUnavailable--> pulling (every 1 s; gives up once the server was
//                                   unreachable for connect_timeout)
//   pulling  --Done(kFinished | kStopped)--> done (OK); Done(kFailed) --> done (Aborted)
//   training --Trained--> pushing;  --BudgetSpent--> declining
//   pushing  --Pushed | PushRefused-----------------------------------> pulling
//   declining --Declined----------------------------------------------> pulling
//                                   (the server selects this site no more; it waits
//                                   for the job to end)
//   any      --Failed(status)--> done (status)
//
// An event the current state cannot produce ends the machine with Internal.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "absl/status/status.h"

namespace cohort::client {

enum class AgentState { kJoining, kPulling, kTraining, kPushing, kDeclining, kDone };
std::string_view AgentStateName(AgentState state);

// Why the server ended the job for this client (cohort.v1.DoneReason).
enum class DoneReason { kUnspecified, kFinished, kStopped, kFailed, kNotJoined };

// What the current state's action came to.
namespace agent_event {
struct Joined {};                                   // joining: a session was agreed
struct ServerUnavailable { absl::Status status; };  // joining, pulling: no answer (restart?)
struct NotJoined { absl::Status status; };          // pulling: the server does not know us
struct Wait {};                                     // pulling: nothing for us yet
struct Train {};                                    // pulling: a task, its model whole
struct DownloadFailed { absl::Status status; };     // pulling: a task, its model not whole
struct Done {                                       // pulling: the job ended for us
  DoneReason reason = DoneReason::kUnspecified;
  std::string message;                              // the server's words, for logs
};
struct Trained {};                                  // training: a delta to push
struct BudgetSpent { std::string why; };            // training: the round would exceed the
                                                    // site's privacy budget
struct Pushed {};                                   // pushing: the server accepted it
struct PushRefused { absl::Status status; };        // pushing: refused or not delivered
struct Declined {};                                 // declining: told the server (or tried)
struct Failed { absl::Status status; };             // any: the agent cannot go on
}  // namespace agent_event

using AgentEvent =
    std::variant<agent_event::Joined, agent_event::ServerUnavailable, agent_event::NotJoined, agent_event::Wait,
                 agent_event::Train, agent_event::DownloadFailed, agent_event::Done, agent_event::Trained,
                 agent_event::BudgetSpent, agent_event::Pushed, agent_event::PushRefused, agent_event::Declined,
                 agent_event::Failed>;

struct AgentStep {
  AgentState next = AgentState::kDone;
  std::chrono::milliseconds pause{0};  // before the next state's action
};

class AgentStateMachine {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts in kJoining at `now`. `connect_timeout`: how long the server may stay
  // unreachable, at a join or between tasks, before the agent gives up.
  AgentStateMachine(std::chrono::milliseconds connect_timeout, Clock::time_point now);

  AgentState state() const { return state_; }
  // Applies `event`, what the current state's action came to at `now`.
  AgentStep On(const AgentEvent& event, Clock::time_point now);
  // Once kDone: OK when the job finished or was stopped, otherwise why the agent stopped.
  const absl::Status& result() const { return result_; }
  // True from the first ServerUnavailable while pulling until the server answers again.
  bool server_unreachable() const { return unreachable_since_.has_value(); }

 private:
  AgentStep Enter(AgentState next, Clock::time_point now, std::chrono::milliseconds pause = {});
  AgentStep Finish(absl::Status result);
  AgentStep Unexpected(const AgentEvent& event);
  AgentStep OnJoining(const AgentEvent& event, Clock::time_point now);
  AgentStep OnPulling(const AgentEvent& event, Clock::time_point now);

  std::chrono::milliseconds connect_timeout_;
  AgentState state_ = AgentState::kJoining;
  absl::Status result_;
  Clock::time_point join_deadline_;
  std::chrono::milliseconds join_backoff_;
  std::optional<Clock::time_point> unreachable_since_;
};

}  // namespace cohort::client
