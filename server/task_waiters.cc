#include "server/task_waiters.h"

#include <utility>
#include <vector>

namespace cohort::server {

TaskWaiters::TaskWaiters(FederatedJob& job) : job_(job) {
  job_.AddChangeListener([weak = std::weak_ptr<Signal>(signal_)] {
    // Only marks the set stale: the job's listeners must not call back into the job.
    if (std::shared_ptr<Signal> signal = weak.lock()) {
      {
        std::lock_guard lock(signal->mu);
        signal->changed = true;
      }
      signal->cv.notify_one();
    }
  });
  thread_ = std::thread([this] { Loop(); });
}

TaskWaiters::~TaskWaiters() {
  {
    std::lock_guard lock(signal_->mu);
    signal_->stopping = true;
  }
  signal_->cv.notify_one();
  thread_.join();
}

uint64_t TaskWaiters::Add(const std::string& client_id, core::Clock::time_point deadline, Answer answer) {
  uint64_t ticket = 0;
  {
    std::lock_guard lock(signal_->mu);
    ticket = next_ticket_++;
    entries_.emplace(ticket, Entry{client_id, deadline, std::move(answer)});
  }
  // Polled after the entry is in: a change from here on re-polls it as well, so no change
  // falls between this poll and the wait.
  if (std::optional<Task> task = job_.PollTask(client_id)) {
    Deliver(ticket, std::move(*task));
  } else if (deadline <= core::Clock::now()) {
    Deliver(ticket, job_.WaitForTask(client_id, std::chrono::milliseconds(0)));
  } else {
    signal_->cv.notify_one();  // its deadline may be the earliest now
  }
  return ticket;
}

bool TaskWaiters::Cancel(uint64_t ticket) {
  std::lock_guard lock(signal_->mu);
  return entries_.erase(ticket) == 1;
}

size_t TaskWaiters::pending() const {
  std::lock_guard lock(signal_->mu);
  return entries_.size();
}

void TaskWaiters::Deliver(uint64_t ticket, Task task) {
  Answer answer;
  {
    std::lock_guard lock(signal_->mu);
    auto it = entries_.find(ticket);
    if (it == entries_.end()) return;  // cancelled, or answered by another poll of the same change
    answer = std::move(it->second.answer);
    entries_.erase(it);
  }
  answer(std::move(task));
}

void TaskWaiters::RepollAll() {
  std::vector<std::pair<uint64_t, std::string>> polls;
  {
    std::lock_guard lock(signal_->mu);
    polls.reserve(entries_.size());
    for (const auto& [ticket, entry] : entries_) polls.emplace_back(ticket, entry.client_id);
  }
  for (const auto& [ticket, client_id] : polls) {
    if (std::optional<Task> task = job_.PollTask(client_id)) Deliver(ticket, std::move(*task));
  }
}

void TaskWaiters::AnswerExpired(core::Clock::time_point now) {
  std::vector<std::pair<uint64_t, std::string>> expired;
  {
    std::lock_guard lock(signal_->mu);
    for (const auto& [ticket, entry] : entries_) {
      if (entry.deadline <= now) expired.emplace_back(ticket, entry.client_id);
    }
  }
  // WaitForTask with no wait: a last poll, and the job's own WAIT when there is nothing.
  for (const auto& [ticket, client_id] : expired) {
    Deliver(ticket, job_.WaitForTask(client_id, std::chrono::milliseconds(0)));
  }
}

void TaskWaiters::Loop() {
  std::unique_lock lock(signal_->mu);
  while (!signal_->stopping) {
    if (signal_->changed) {
      signal_->changed = false;
      lock.unlock();
      RepollAll();
      lock.lock();
      continue;
    }
    const core::Clock::time_point now = core::Clock::now();
    core::Clock::time_point earliest = core::Clock::time_point::max();
    for (const auto& [ticket, entry] : entries_) earliest = std::min(earliest, entry.deadline);
    if (earliest <= now) {
      lock.unlock();
      AnswerExpired(now);
      lock.lock();
      continue;
    }
    // Woken early by a change, a new entry or the destructor; the loop re-reads all three.
    if (earliest == core::Clock::time_point::max()) {
      signal_->cv.wait(lock);
    } else {
      signal_->cv.wait_until(lock, earliest);
    }
  }
}

}  // namespace cohort::server
