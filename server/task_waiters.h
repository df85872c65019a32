#pragma once
// The long polls (PullTask) waiting for a task, held as entries rather than threads.
//
// A poll is answered with the client's task as soon as FederatedJob::PollTask has one for
// it, or with a WAIT at its deadline. The job's change listener marks the set stale; one
// thread then re-polls every pending entry, and answers expired ones at their deadlines,
// so the cost of a waiting client is one entry here, whatever the number of clients.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/round_tracker.h"
#include "server/federated_job.h"

namespace cohort::server {

class TaskWaiters {
 public:
  // Receives the client's task: the one PollTask found, or what the job answers a poll at
  // its deadline (WAIT, unless a task came at that moment). Called exactly once per entry
  // not cancelled, on the waiters' thread or on the thread that called Add; it must not
  // block (start a write, post work).
  using Answer = std::function<void(Task)>;

  // Registers a change listener with `job`, which must outlive this object. The listener
  // may outlive it (the job keeps its listeners): it then does nothing.
  explicit TaskWaiters(FederatedJob& job);
  // Stops the thread. Entries still pending are dropped unanswered: destroy the waiters
  // only after the calls that own them have ended (after the gRPC server is shut down).
  ~TaskWaiters();
  TaskWaiters(const TaskWaiters&) = delete;
  TaskWaiters& operator=(const TaskWaiters&) = delete;

  // Polls for `client_id` at once and answers if there is a task or `deadline` has
  // passed; otherwise keeps the poll until one of them happens. Returns the ticket that
  // Cancel takes.
  uint64_t Add(const std::string& client_id, core::Clock::time_point deadline, Answer answer);

  // Withdraws a pending poll (its call was cancelled). True when it was still pending: its
  // answer will not be called. False when the answer was given or is being given.
  bool Cancel(uint64_t ticket);

  size_t pending() const;
  FederatedJob& job() { return job_; }

 private:
  struct Entry {
    std::string client_id;
    core::Clock::time_point deadline;
    Answer answer;
  };
  // What the job's listener reaches: it may outlive the waiters.
  struct Signal {
    std::mutex mu;
    std::condition_variable cv;
    bool changed = false;
    bool stopping = false;
  };

  void Loop();
  // Takes the entry out and answers it with `task`, unless it was answered or cancelled.
  void Deliver(uint64_t ticket, Task task);
  void RepollAll();
  void AnswerExpired(core::Clock::time_point now);

  FederatedJob& job_;
  const std::shared_ptr<Signal> signal_ = std::make_shared<Signal>();
  // Guarded by signal_->mu.
  std::map<uint64_t, Entry> entries_;
  uint64_t next_ticket_ = 1;
  std::thread thread_;
};

}  // namespace cohort::server
