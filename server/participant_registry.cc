#include "server/participant_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/quote.h"
#include "core/names.h"

namespace cohort::server {
namespace {

bool Contains(const std::vector<std::string>& list, const std::string& name) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

}  // namespace

ParticipantRegistry::ParticipantRegistry(std::string job, std::vector<std::string> enrolled,
                                         std::vector<std::string> revoked)
    : job_(std::move(job)), enrolled_(std::move(enrolled)), revoked_(std::move(revoked)) {}

absl::Status ParticipantRegistry::CheckName(std::string_view site) {
  return core::ValidateName("site", site);
}

bool ParticipantRegistry::IsRevoked(const std::string& site) const { return Contains(revoked_, site); }

absl::Status ParticipantRegistry::CheckMayTakePart(const std::string& site) const {
  if (IsRevoked(site)) {
    return absl::PermissionDeniedError(absl::StrCat("site ", site, " was revoked from job ", job_));
  }
  if (!enrolled_.empty() && !Contains(enrolled_, site)) {
    return absl::PermissionDeniedError(absl::StrCat("site ", core::QuotePrefix(site), " is not enrolled in job ", job_,
                                                    "; an admin can add it (cohort admin participants add)"));
  }
  return absl::OkStatus();
}

absl::Status ParticipantRegistry::CheckJoin(const std::string& site, uint64_t samples, int64_t max_samples) const {
  if (absl::Status s = CheckName(site); !s.ok()) return s;
  if (absl::Status s = CheckMayTakePart(site); !s.ok()) return s;
  if (max_samples > 0 && samples > static_cast<uint64_t>(max_samples)) {
    return absl::InvalidArgumentError(absl::StrCat("num_samples: site ", site, " declared ", samples,
                                                   " samples, more than federation.max_samples_per_site (",
                                                   max_samples, ") of job ", job_));
  }
  return absl::OkStatus();
}

bool ParticipantRegistry::Join(const std::string& site, uint64_t samples,
                               std::shared_ptr<wire::SealedSession> session, core::Clock::time_point now) {
  Participant& p = joined_[site];
  const bool rejoin = p.last_seen != core::Clock::time_point{};
  p.declared_samples = samples;
  p.last_seen = now;
  p.lost = false;
  p.session = std::move(session);
  return rejoin;
}

ParticipantRegistry::Participant* ParticipantRegistry::Find(const std::string& site) {
  auto it = joined_.find(site);
  return it == joined_.end() ? nullptr : &it->second;
}

const ParticipantRegistry::Participant* ParticipantRegistry::Find(const std::string& site) const {
  auto it = joined_.find(site);
  return it == joined_.end() ? nullptr : &it->second;
}

bool ParticipantRegistry::Touch(const std::string& site, core::Clock::time_point now) {
  Participant* p = Find(site);
  if (p == nullptr) return false;
  p->last_seen = now;
  // A revoked site stays out whatever it sends.
  if (!p->lost || IsRevoked(site)) return false;
  p->lost = false;
  return true;
}

std::vector<std::string> ParticipantRegistry::Alive(core::Clock::time_point now, core::Clock::duration timeout) const {
  std::vector<std::string> alive;
  for (const auto& [site, p] : joined_) {
    if (!p.lost && !p.declined && now - p.last_seen < timeout) alive.push_back(site);
  }
  return alive;
}

std::vector<std::string> ParticipantRegistry::MarkLost(core::Clock::time_point now, core::Clock::duration timeout) {
  std::vector<std::string> lost;
  for (auto& [site, p] : joined_) {
    // A site that left the job (declined) is gone, not lost.
    if (!p.lost && !p.declined && now - p.last_seen >= timeout) {
      p.lost = true;
      lost.push_back(site);
    }
  }
  return lost;
}

bool ParticipantRegistry::Decline(const std::string& site) {
  Participant* p = Find(site);
  if (p == nullptr || p->declined) return false;
  p->declined = true;
  return true;
}

size_t ParticipantRegistry::declined() const {
  return static_cast<size_t>(std::count_if(joined_.begin(), joined_.end(), [](const auto& e) { return e.second.declined; }));
}

size_t ParticipantRegistry::able() const { return joined_.size() - declined(); }

absl::Status ParticipantRegistry::CheckEnroll(const std::string& site) const {
  if (absl::Status s = CheckName(site); !s.ok()) return s;
  if (IsRevoked(site)) {
    return absl::FailedPreconditionError(
        absl::StrCat("site ", site, " was revoked from job ", job_, "; a revoked site cannot rejoin the job"));
  }
  if (enrolled_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_,
                                                      " has open enrollment (federation.sites is empty): every site "
                                                      "of the federation may already join"));
  }
  if (Contains(enrolled_, site)) {
    return absl::AlreadyExistsError(absl::StrCat("site ", site, " is already enrolled in job ", job_));
  }
  return absl::OkStatus();
}

void ParticipantRegistry::Enroll(const std::string& site) {
  if (!Contains(enrolled_, site)) enrolled_.push_back(site);
}

absl::Status ParticipantRegistry::CheckRevoke(const std::string& site) const {
  if (IsRevoked(site)) {
    return absl::AlreadyExistsError(absl::StrCat("site ", site, " is already revoked from job ", job_));
  }
  if (!joined_.contains(site) && !Contains(enrolled_, site)) {
    return absl::NotFoundError(
        absl::StrCat("site ", core::QuotePrefix(site), " has neither joined nor been enrolled in job ", job_));
  }
  return absl::OkStatus();
}

void ParticipantRegistry::Revoke(const std::string& site) {
  if (!IsRevoked(site)) revoked_.push_back(site);
  std::erase(enrolled_, site);
  if (Participant* p = Find(site)) {
    p->session.reset();  // its keys open nothing from now on
    p->lost = true;
  }
}

}  // namespace cohort::server
