#include "client/agent_state_machine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace cohort::client {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kFirstJoinBackoff{200};
constexpr milliseconds kMaxJoinBackoff{5000};
constexpr milliseconds kUnreachablePollEvery{1000};

template <typename T>
const T* As(const AgentEvent& event) {
  return std::get_if<T>(&event);
}

std::string_view EventName(const AgentEvent& event) {
  static constexpr std::string_view kNames[] = {"Joined",  "ServerUnavailable", "NotJoined",   "Wait",
                                                "Train",   "DownloadFailed",    "Done",        "Trained",
                                                "BudgetSpent", "Pushed",        "PushRefused", "Declined",
                                                "Failed"};
  static_assert(std::size(kNames) == std::variant_size_v<AgentEvent>);
  return kNames[event.index()];
}

}  // namespace

std::string_view AgentStateName(AgentState state) {
  switch (state) {
    case AgentState::kJoining: return "joining";
    case AgentState::kPulling: return "pulling";
    case AgentState::kTraining: return "training";
    case AgentState::kPushing: return "pushing";
    case AgentState::kDeclining: return "declining";
    case AgentState::kDone: return "done";
  }
  return "unknown";
}

AgentStateMachine::AgentStateMachine(milliseconds connect_timeout, Clock::time_point now)
    : connect_timeout_(connect_timeout), join_deadline_(now + connect_timeout), join_backoff_(kFirstJoinBackoff) {}

AgentStep AgentStateMachine::Enter(AgentState next, Clock::time_point now, milliseconds pause) {
  if (next == AgentState::kJoining && state_ != AgentState::kJoining) {
    join_deadline_ = now + connect_timeout_;
    join_backoff_ = kFirstJoinBackoff;
  }
  state_ = next;
  return {next, pause};
}

AgentStep AgentStateMachine::Finish(absl::Status result) {
  state_ = AgentState::kDone;
  result_ = std::move(result);
  return {AgentState::kDone, {}};
}

AgentStep AgentStateMachine::On(const AgentEvent& event, Clock::time_point now) {
  if (const auto* failed = As<agent_event::Failed>(event)) {
    return Finish(failed->status.ok() ? absl::InternalError("an agent action failed without a status")
                                      : failed->status);
  }
  switch (state_) {
    case AgentState::kJoining:
      return OnJoining(event, now);
    case AgentState::kPulling:
      return OnPulling(event, now);
    case AgentState::kTraining:
      if (As<agent_event::Trained>(event)) return Enter(AgentState::kPushing, now);
      if (As<agent_event::BudgetSpent>(event)) return Enter(AgentState::kDeclining, now);
      break;
    case AgentState::kPushing:
      if (As<agent_event::Pushed>(event) || As<agent_event::PushRefused>(event)) return Enter(AgentState::kPulling, now);
      break;
    case AgentState::kDeclining:
      if (As<agent_event::Declined>(event)) return Enter(AgentState::kPulling, now);
      break;
    case AgentState::kDone:
      return {AgentState::kDone, {}};
  }
  return Unexpected(event);
}

AgentStep AgentStateMachine::Unexpected(const AgentEvent& event) {
  return Finish(absl::InternalError(
      absl::StrCat("agent event ", std::string(EventName(event)), " cannot happen while ",
                   std::string(AgentStateName(state_)))));
}

AgentStep AgentStateMachine::OnJoining(const AgentEvent& event, Clock::time_point now) {
  if (As<agent_event::Joined>(event)) {
    unreachable_since_.reset();
    return Enter(AgentState::kPulling, now);
  }
  if (const auto* away = As<agent_event::ServerUnavailable>(event)) {
    if (now > join_deadline_) {
      return Finish(absl::UnavailableError(absl::StrCat("gave up joining after ", connect_timeout_.count(),
                                                        " ms: ", away->status.message())));
    }
    const milliseconds pause = join_backoff_;
    join_backoff_ = std::min(join_backoff_ * 2, kMaxJoinBackoff);
    return Enter(AgentState::kJoining, now, pause);
  }
  return Unexpected(event);
}

AgentStep AgentStateMachine::OnPulling(const AgentEvent& event, Clock::time_point now) {
  if (const auto* away = As<agent_event::ServerUnavailable>(event)) {
    // The server may be restarting: keep asking, and join again once it is back and has
    // forgotten this client.
    if (!unreachable_since_) unreachable_since_ = now;
    if (now - *unreachable_since_ > connect_timeout_) {
      return Finish(absl::UnavailableError(absl::StrCat("server unreachable for more than ", connect_timeout_.count(),
                                                        " ms: ", away->status.message())));
    }
    return Enter(AgentState::kPulling, now, kUnreachablePollEvery);
  }
  unreachable_since_.reset();
  if (As<agent_event::Wait>(event) || As<agent_event::DownloadFailed>(event)) return Enter(AgentState::kPulling, now);
  if (As<agent_event::Train>(event)) return Enter(AgentState::kTraining, now);
  if (As<agent_event::NotJoined>(event)) return Enter(AgentState::kJoining, now);
  if (const auto* done = As<agent_event::Done>(event)) {
    switch (done->reason) {
      case DoneReason::kFinished:
      case DoneReason::kStopped:
        return Finish(absl::OkStatus());
      case DoneReason::kFailed:
        return Finish(absl::AbortedError(done->message));
      case DoneReason::kNotJoined:
        return Enter(AgentState::kJoining, now);
      case DoneReason::kUnspecified:
        break;
    }
    return Finish(absl::UnknownError(absl::StrCat("the server ended the job without a reason: ", done->message)));
  }
  return Unexpected(event);
}

}  // namespace cohort::client
