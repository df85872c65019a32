#include "client/site_ledger.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "privacy/ledger_format.h"

namespace cohort::client {

absl::StatusOr<std::unique_ptr<SiteLedger>> SiteLedger::Open(std::filesystem::path path, std::string site) {
  std::unique_ptr<SiteLedger> ledger(new SiteLedger(std::move(path), std::move(site)));
  std::error_code ec;
  if (!std::filesystem::exists(ledger->path_, ec) || std::filesystem::file_size(ledger->path_, ec) == 0) {
    return ledger;
  }
  // The budget lives in the header; opening under it replays and checks every line.
  std::ifstream in(ledger->path_);
  std::string first;
  std::getline(in, first);
  absl::StatusOr<privacy::ledger_format::Header> header = privacy::ledger_format::ParseHeader(first);
  if (!header.ok()) {
    return absl::DataLossError(absl::StrCat("privacy ledger ", ledger->path_.string(), " line 1: ",
                                            header.status().message(), "; the site will not train until it is restored"));
  }
  absl::StatusOr<std::unique_ptr<privacy::Ledger>> opened =
      privacy::Ledger::Open(ledger->path_.string(), ledger->site_, header->budget);
  if (!opened.ok()) {
    return absl::Status(opened.status().code(),
                        absl::StrCat(opened.status().message(), "; the site will not train until it is restored"));
  }
  ledger->ledger_ = std::move(*opened);
  return ledger;
}

v1::LedgerPosition SiteLedger::Position() const {
  v1::LedgerPosition position;
  if (ledger_ == nullptr) return position;  // no file yet: nothing spent on this site's record
  position.set_present(true);
  position.set_header_sha256(ledger_->header_hash());
  position.set_spends(static_cast<uint64_t>(ledger_->spend_count()));
  position.set_head_sha256(ledger_->head_hash());
  position.set_epsilon_spent(ledger_->spent_epsilon());
  return position;
}

absl::StatusOr<privacy::SpendCheck> SiteLedger::Reserve(const privacy::SpendRequest& request,
                                                        const privacy::PrivacyBudget& budget) {
  if (ledger_ == nullptr) {
    std::error_code ec;
    if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path(), ec);
    absl::StatusOr<std::unique_ptr<privacy::Ledger>> opened = privacy::Ledger::Open(path_.string(), site_, budget);
    if (!opened.ok()) return opened.status();
    ledger_ = std::move(*opened);
  }
  const privacy::PrivacyBudget& own = ledger_->budget();
  if (own.epsilon != budget.epsilon || own.delta != budget.delta) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the job declares a budget of (epsilon ", privacy::FormatNumber(budget.epsilon), ", delta ",
        privacy::FormatNumber(budget.delta), ") but this site's ledger ", path_.string(), " holds (epsilon ",
        privacy::FormatNumber(own.epsilon), ", delta ", privacy::FormatNumber(own.delta),
        "); a site's budget changes only with a new ledger"));
  }
  return ledger_->RecordSpend(request);
}

}  // namespace cohort::client
