#include "server/denial_aggregator.h"

#include <algorithm>

namespace cohort::server {

DenialAggregator::DenialAggregator(Options options, Sink sink) : options_(std::move(options)), sink_(std::move(sink)) {}

DenialAggregator::~DenialAggregator() { FlushAll(); }

RepeatedDenials DenialAggregator::Summarize(const Key& key, const Window& window, absl::Duration length) {
  const auto& [identity, role, method, code] = key;
  return {.actor = {identity, role},
          .method = method,
          .code = code,
          .count = window.count,
          .window_start = window.start,
          .window = length,
          .first = window.first,
          .last = window.last,
          .last_reason = window.last_reason};
}

template <typename Done>
void DenialAggregator::TakeLocked(Done done, std::vector<RepeatedDenials>& out) {
  for (auto it = windows_.begin(); it != windows_.end();) {
    if (!done(it->second)) {
      ++it;
      continue;
    }
    if (it->second.count > 0) out.push_back(Summarize(it->first, it->second, options_.window));
    it = windows_.erase(it);
  }
}

void DenialAggregator::WriteAll(const std::vector<RepeatedDenials>& summaries) const {
  if (!sink_.repeated) return;
  for (const RepeatedDenials& s : summaries) sink_.repeated(s);
}

void DenialAggregator::Record(const Actor& actor, const std::string& method, const absl::Status& why) {
  const absl::Time now = options_.now();
  Key key{actor.identity, actor.role, method, why.code()};
  std::vector<RepeatedDenials> ended;
  bool opens_window = false;
  {
    std::lock_guard lock(mu_);
    auto it = windows_.find(key);
    if (it != windows_.end() && now - it->second.start >= options_.window) {
      if (it->second.count > 0) ended.push_back(Summarize(it->first, it->second, options_.window));
      windows_.erase(it);
      it = windows_.end();
    }
    if (it == windows_.end()) {
      if (windows_.size() >= options_.max_keys) {
        auto oldest = std::min_element(windows_.begin(), windows_.end(), [](const auto& a, const auto& b) {
          return a.second.start < b.second.start;
        });
        if (oldest->second.count > 0) ended.push_back(Summarize(oldest->first, oldest->second, options_.window));
        windows_.erase(oldest);
      }
      windows_.emplace(std::move(key), Window{.start = now});
      opens_window = true;
    } else {
      Window& window = it->second;
      if (window.count++ == 0) window.first = now;
      window.last = now;
      window.last_reason = std::string(why.message());
    }
  }
  WriteAll(ended);
  if (opens_window && sink_.full) sink_.full(actor, method, why);
}

void DenialAggregator::FlushExpired() {
  const absl::Time now = options_.now();
  std::vector<RepeatedDenials> ended;
  {
    std::lock_guard lock(mu_);
    TakeLocked([&](const Window& w) { return now - w.start >= options_.window; }, ended);
  }
  WriteAll(ended);
}

void DenialAggregator::FlushAll() {
  std::vector<RepeatedDenials> ended;
  {
    std::lock_guard lock(mu_);
    TakeLocked([](const Window&) { return true; }, ended);
  }
  WriteAll(ended);
}

std::size_t DenialAggregator::tracked_keys() const {
  std::lock_guard lock(mu_);
  return windows_.size();
}

}  // namespace cohort::server
