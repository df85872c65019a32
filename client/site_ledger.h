#pragma once
// The site's privacy ledger as the agent uses it. The ledger file (privacy/ledger.h) outlives
// jobs: it is the site's record of every DP-SGD spend on its data, so a restarted agent, or
// the next job, cannot spend the budget again.
//
// The agent opens it at start-up and refuses to start when it is corrupt or was edited.
// Before it trains a DP-SGD round it reserves the round's spend: the entry is fsync'd
// before training starts, so no training ever runs on an unrecorded spend; a round that
// would exceed the budget is refused (ResourceExhausted) and the agent declines the job.

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "privacy/budget.h"
#include "privacy/ledger.h"
#include "proto/cohort.pb.h"

namespace cohort::client {

class SiteLedger {
 public:
  // An existing file is verified now (DataLoss naming the line when it is corrupt or was
  // edited; FailedPrecondition when it belongs to another site); a missing one is created
  // with the budget of the first DP-SGD job.
  static absl::StatusOr<std::unique_ptr<SiteLedger>> Open(std::filesystem::path path, std::string site);

  // Records `request` durably when it fits `budget` (the job's per-site budget, which
  // must be the ledger's). ResourceExhausted, with the epsilon it would reach, when it does
  // not; nothing is recorded then.
  absl::StatusOr<privacy::SpendCheck> Reserve(const privacy::SpendRequest& request,
                                              const privacy::PrivacyBudget& budget);

  // Where the ledger stands, as the site reports it at Join and with each DP-SGD update:
  // the server refuses a ledger behind its anchor (docs/privacy.md, "Anchoring").
  v1::LedgerPosition Position() const;

  // Whether this site's last spend is for `job`'s `round` (privacy::Ledger::LastSpendIs).
  bool LastSpendIs(std::string_view job, int64_t round) const {
    return ledger_ != nullptr && ledger_->LastSpendIs(job, round);
  }
  int64_t spend_count() const { return ledger_ ? ledger_->spend_count() : 0; }

  const std::filesystem::path& path() const { return path_; }
  // 0 before the first spend.
  double spent_epsilon() const { return ledger_ ? ledger_->spent_epsilon() : 0.0; }

 private:
  SiteLedger(std::filesystem::path path, std::string site) : path_(std::move(path)), site_(std::move(site)) {}

  std::filesystem::path path_;
  std::string site_;
  std::unique_ptr<privacy::Ledger> ledger_;
};

}  // namespace cohort::client
