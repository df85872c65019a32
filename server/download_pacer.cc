#include "server/download_pacer.h"

#include <utility>

namespace cohort::server {

using Clock = std::chrono::steady_clock;

DownloadPacer::DownloadPacer(size_t max_in_flight, std::chrono::milliseconds stall_after)
    : max_in_flight_(max_in_flight), stall_after_(stall_after) {
  if (max_in_flight_ > 0) thread_ = std::thread([this] { Loop(); });
}

DownloadPacer::~DownloadPacer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

uint64_t DownloadPacer::Acquire(Resume resume) {
  uint64_t turn = 0;
  std::vector<Waiting> granted;
  {
    std::lock_guard lock(mu_);
    turn = next_turn_++;
    waiting_.push_back({turn, std::move(resume)});
    granted = GrantLocked(Clock::now());
  }
  cv_.notify_one();  // a turn left waiting may stall out first: the thread times it
  ResumeAll(std::move(granted));
  return turn;
}

void DownloadPacer::Release(uint64_t turn) {
  std::vector<Waiting> granted;
  {
    std::lock_guard lock(mu_);
    if (holders_.erase(turn) == 0) return;  // it stalled out; its place was given away then
    granted = GrantLocked(Clock::now());
  }
  ResumeAll(std::move(granted));
}

bool DownloadPacer::Cancel(uint64_t turn) {
  std::lock_guard lock(mu_);
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if (it->turn == turn) {
      waiting_.erase(it);
      return true;
    }
  }
  return false;
}

size_t DownloadPacer::in_flight() const {
  std::lock_guard lock(mu_);
  return holders_.size();
}

size_t DownloadPacer::waiting() const {
  std::lock_guard lock(mu_);
  return waiting_.size();
}

std::vector<DownloadPacer::Waiting> DownloadPacer::GrantLocked(Clock::time_point now) {
  std::vector<Waiting> granted;
  if (max_in_flight_ > 0 && !waiting_.empty() && holders_.size() >= max_in_flight_) {
    for (auto it = holders_.begin(); it != holders_.end();) {
      it = now - it->second >= stall_after_ ? holders_.erase(it) : std::next(it);
    }
  }
  while (!waiting_.empty() && (max_in_flight_ == 0 || holders_.size() < max_in_flight_)) {
    if (max_in_flight_ > 0) holders_.emplace(waiting_.front().turn, now);
    granted.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  return granted;
}

void DownloadPacer::ResumeAll(std::vector<Waiting> granted) {
  for (Waiting& w : granted) w.resume(w.turn);
}

void DownloadPacer::Loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (waiting_.empty() || holders_.empty()) {
      cv_.wait(lock);
      continue;
    }
    // The earliest moment a holder stalls out.
    Clock::time_point oldest = Clock::time_point::max();
    for (const auto& [turn, since] : holders_) oldest = std::min(oldest, since);
    if (cv_.wait_until(lock, oldest + stall_after_) == std::cv_status::timeout) {
      std::vector<Waiting> granted = GrantLocked(Clock::now());
      lock.unlock();
      ResumeAll(std::move(granted));
      lock.lock();
    }
  }
}

}  // namespace cohort::server
