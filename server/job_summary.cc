#include "server/job_summary.h"

#include <utility>

namespace cohort::server {
namespace {

constexpr std::string_view kRounds = "rounds";

// An entry's compact JSON, holding no more memory than its length.
std::shared_ptr<const std::string> Compact(const nlohmann::json& entry) {
  std::string text = entry.dump();
  text.shrink_to_fit();
  return std::make_shared<const std::string>(std::move(text));
}

}  // namespace

std::vector<std::string_view> JobSummary::Snapshot::Parts() const {
  std::vector<std::string_view> parts;
  parts.reserve(2 * rounds.size() + 2);
  parts.push_back(head);
  for (size_t i = 0; i < rounds.size(); ++i) {
    if (i > 0) parts.push_back(",");
    parts.push_back(*rounds[i]);
  }
  parts.push_back(tail);
  return parts;
}

std::string JobSummary::Snapshot::Text() const {
  const std::vector<std::string_view> parts = Parts();
  size_t size = 0;
  for (std::string_view part : parts) size += part.size();
  std::string text;
  text.reserve(size);
  for (std::string_view part : parts) text += part;
  return text;
}

JobSummary::JobSummary(const std::string& job, nlohmann::json summary) {
  if (summary.is_object() && summary.contains(kRounds) && summary[kRounds].is_array()) {
    rounds_.reserve(summary[kRounds].size());
    for (const nlohmann::json& entry : summary[kRounds]) rounds_.push_back(Compact(entry));
    summary.erase(kRounds);
    members_ = std::move(summary);
  } else {
    members_ = {{"job", job}, {"status", "running"}};
  }
}

void JobSummary::SetMember(const std::string& key, nlohmann::json value) { members_[key] = std::move(value); }

void JobSummary::AppendRound(const nlohmann::json& entry) { rounds_.push_back(Compact(entry)); }

nlohmann::json JobSummary::LastRound() const {
  return rounds_.empty() ? nlohmann::json() : nlohmann::json::parse(*rounds_.back());
}

bool JobSummary::UpdateLastRound(const std::function<void(nlohmann::json& entry)>& change) {
  if (rounds_.empty()) return false;
  nlohmann::json entry = nlohmann::json::parse(*rounds_.back());
  change(entry);
  rounds_.back() = Compact(entry);
  return true;
}

bool JobSummary::UpdateRound(uint64_t round, const std::function<void(nlohmann::json& entry)>& change) {
  for (size_t i = rounds_.size(); i-- > 0;) {
    nlohmann::json entry = nlohmann::json::parse(*rounds_[i]);
    const uint64_t number = entry.value("round", uint64_t{0});
    if (number == round) {
      change(entry);
      rounds_[i] = Compact(entry);
      return true;
    }
    if (number < round) return false;
  }
  return false;
}

JobSummary::Snapshot JobSummary::Take() const {
  // json objects keep their members sorted by key (and dump them so), so "rounds" goes
  // between the members that sort before it and those after it ("status").
  Snapshot s;
  s.head = "{";
  s.tail = "]";
  for (auto it = members_.begin(); it != members_.end(); ++it) {
    const std::string member = nlohmann::json(it.key()).dump() + ":" + it.value().dump();
    if (std::string_view(it.key()) < kRounds) {
      s.head.append(member).append(",");
    } else {
      s.tail.append(",").append(member);
    }
  }
  s.head.append("\"").append(kRounds).append("\":[");
  s.tail += '}';
  s.rounds = rounds_;
  return s;
}

nlohmann::json JobSummary::Tree() const {
  nlohmann::json tree = members_;
  nlohmann::json& rounds = tree[std::string(kRounds)] = nlohmann::json::array();
  for (const std::shared_ptr<const std::string>& entry : rounds_) rounds.push_back(nlohmann::json::parse(*entry));
  return tree;
}

}  // namespace cohort::server
