#pragma once
// Who takes part in a job: enrollment (federation.sites; empty means any site of the
// federation), revocations, joins with their session keys (wire::SealedSession) and
// declared sample counts, liveness (last seen, lost) and declines.
//
// Not thread-safe: the job's lock guards it. It does no I/O; the job persists
// enrollment and revocations (server/job_store.h) and records them in the audit log
// before it changes the registry.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "core/round_tracker.h"
#include "wire/sealing.h"

namespace cohort::server {

class ParticipantRegistry {
 public:
  struct Participant {
    uint64_t declared_samples = 0;  // at its last Join: the most any of its updates may claim
    core::Clock::time_point last_seen{};
    bool lost = false;
    bool declined = false;  // left the job for good (Decline): never selected again
    uint64_t last_task_round = 0;
    // The session agreed at the last Join; null once revoked. A replaced session's keys
    // are wiped when the last download using it ends.
    std::shared_ptr<wire::SealedSession> session;
  };

  // `enrolled`: the sites that may take part (empty: any); `revoked`: sites excluded for good.
  ParticipantRegistry(std::string job, std::vector<std::string> enrolled, std::vector<std::string> revoked);

  // The site-name rule of provisioning (core::ValidateName).
  static absl::Status CheckName(std::string_view site);
  // PermissionDenied when `site` is revoked or not enrolled.
  absl::Status CheckMayTakePart(const std::string& site) const;
  // Name, enrollment and the declared count (at most `max_samples`, from
  // federation.max_samples_per_site), each refused with a message naming the value.
  absl::Status CheckJoin(const std::string& site, uint64_t samples, int64_t max_samples) const;
  // Registers (or re-registers) a site that passed CheckJoin; true for a re-join.
  bool Join(const std::string& site, uint64_t samples, std::shared_ptr<wire::SealedSession> session,
            core::Clock::time_point now);

  Participant* Find(const std::string& site);
  const Participant* Find(const std::string& site) const;
  // Marks a joined site seen; true when it had been lost (it is back).
  bool Touch(const std::string& site, core::Clock::time_point now);
  // Joined, not lost, not declined, and heard from within `timeout`.
  std::vector<std::string> Alive(core::Clock::time_point now, core::Clock::duration timeout) const;
  // Marks every site silent for `timeout` lost; returns the ones lost just now.
  std::vector<std::string> MarkLost(core::Clock::time_point now, core::Clock::duration timeout);
  // True when it declined just now (false: it had already).
  bool Decline(const std::string& site);
  size_t declined() const;
  size_t able() const;  // joined and not declined

  // Enrollment and revocation: Check* says why a change cannot be made, the verb makes it.
  absl::Status CheckEnroll(const std::string& site) const;
  void Enroll(const std::string& site);
  absl::Status CheckRevoke(const std::string& site) const;
  // Its calls are refused from now on; its session keys are dropped; it counts as lost.
  void Revoke(const std::string& site);

  const std::map<std::string, Participant>& joined() const { return joined_; }
  const std::vector<std::string>& enrolled() const { return enrolled_; }
  const std::vector<std::string>& revoked() const { return revoked_; }
  bool open_enrollment() const { return enrolled_.empty(); }
  bool IsRevoked(const std::string& site) const;

 private:
  std::string job_;
  std::vector<std::string> enrolled_;
  std::vector<std::string> revoked_;
  std::map<std::string, Participant> joined_;
};

}  // namespace cohort::server
