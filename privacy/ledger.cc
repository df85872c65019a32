#include "privacy/ledger.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace cohort::privacy {
namespace {

using ledger_format::QuotedForLog;

// DataLoss for line `number` (1-based) of the ledger at `path`.
absl::Status LineError(const std::string& path, uint64_t number,
                       absl::string_view why) {
  return absl::DataLossError(
      absl::StrCat("privacy ledger ", path, ": line ", number, ": ", why));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Ledger>> Ledger::Open(
    const std::string& path, std::string_view site,
    const PrivacyBudget& budget) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "ledger path: expected a file path, got \"\"");
  }
  if (absl::Status s = ValidateText(site, "site"); !s.ok()) return s;
  if (absl::Status s = ValidatePrivacyBudget(budget); !s.ok()) return s;

  std::unique_ptr<Ledger> ledger(new Ledger(path, std::string(site), budget));
  std::lock_guard<std::mutex> lock(ledger->mu_);
  storage::AppendLogOptions options;
  options.kind = "privacy ledger";
  options.mode = 0600;
  options.max_line_bytes = ledger_format::kMaxLineBytes;
  options.chain_hash = ledger_format::HashLine;
  absl::StatusOr<std::unique_ptr<storage::AppendLog>> log = storage::AppendLog::Open(
      path, std::move(options),
      [&ledger](const storage::LogLine& line) { return ledger->ReplayLine(line); });
  if (!log.ok()) return log.status();
  ledger->log_ = *std::move(log);

  if (ledger->log_->cut_tail_bytes() > 0) {
    // A torn trailing line: see ledger.h for why dropping it is safe.
    ledger->dropped_partial_bytes_ = static_cast<int64_t>(ledger->log_->cut_tail_bytes());
    spdlog::warn(
        "privacy ledger {}: dropped a torn trailing line ({} bytes, no "
        "newline) left by an interrupted write; site={}",
        path, ledger->dropped_partial_bytes_, ledger->site_);
  }
  if (ledger->log_->line_count() == 0) {
    const std::string header = ledger_format::EncodeHeader(
        {ledger->site_, budget, ledger_format::NowRfc3339(), ledger_format::ZeroHash()});
    if (absl::Status s = ledger->log_->Append(header); !s.ok()) return s;
    ledger->header_hash_ = ledger->log_->head_hash();
    spdlog::info("privacy ledger {}: created for site={} epsilon={} delta={}",
                 path, ledger->site_, budget.epsilon, budget.delta);
  } else {
    spdlog::info(
        "privacy ledger {}: opened for site={}, {} spends, epsilon spent {} of {}",
        path, ledger->site_, ledger->spend_count_, ledger->spent_epsilon_,
        budget.epsilon);
  }
  return ledger;
}

Ledger::Ledger(std::string path, std::string site, PrivacyBudget budget)
    : path_(std::move(path)), site_(std::move(site)), budget_(budget) {}

// Closing the log releases its flock.
Ledger::~Ledger() = default;

absl::Status Ledger::ReplayLine(const storage::LogLine& line) {
  const uint64_t number = line.number;
  if (line.text.empty()) return LineError(path_, number, "empty line");
  if (number == 1) {
    auto header = ledger_format::ParseHeader(line.text);
    if (!header.ok()) return LineError(path_, number, header.status().message());
    if (header->site != site_) {
      return absl::FailedPreconditionError(
          absl::StrCat("privacy ledger ", path_, " belongs to site \"",
                       header->site, "\", not \"", site_, "\""));
    }
    if (header->budget.epsilon != budget_.epsilon ||
        header->budget.delta != budget_.delta) {
      return absl::FailedPreconditionError(absl::StrCat(
          "privacy ledger ", path_, " was created with budget epsilon=",
          FormatNumber(header->budget.epsilon),
          " delta=", FormatNumber(header->budget.delta),
          " but the site is configured with epsilon=",
          FormatNumber(budget_.epsilon), " delta=",
          FormatNumber(budget_.delta),
          "; a budget is changed by starting a new ledger"));
    }
    if (header->prev != line.prev_hash) {
      return LineError(path_, number,
                       "hash chain broken: the header must carry an all-zero "
                       "\"prev\"");
    }
    header_hash_ = ledger_format::HashLine(line.text);
    return absl::OkStatus();
  }

  auto entry = ledger_format::ParseSpend(line.text);
  if (!entry.ok()) return LineError(path_, number, entry.status().message());
  if (entry->prev != line.prev_hash) {
    return LineError(
        path_, number,
        absl::StrCat("hash chain broken: \"prev\" is ", entry->prev, " but line ",
                     number - 1, " hashes to ", std::string(line.prev_hash), " (line ",
                     number - 1,
                     " was edited, or lines were deleted, inserted or "
                     "reordered)"));
  }
  if (entry->seq != static_cast<int64_t>(number) - 1) {
    return LineError(path_, number,
                     absl::StrCat("seq is ", entry->seq, ", expected ",
                                  number - 1,
                                  " (lines deleted, inserted or reordered)"));
  }
  if (entry->delta != budget_.delta) {
    return LineError(path_, number,
                     absl::StrCat("delta is ", FormatNumber(entry->delta),
                                  ", the ledger's is ",
                                  FormatNumber(budget_.delta)));
  }
  const SpendRequest& request = entry->request;
  if (absl::Status s = accountant_.AddSteps(
          request.sampling_rate, request.noise_multiplier, request.steps);
      !s.ok()) {
    return LineError(path_, number, s.message());
  }
  const double replayed = accountant_.GetEpsilon(budget_.delta)->epsilon;
  // Same code, same inputs: the replay is exact; the slack only absorbs
  // a change of compiler or libm.
  if (!(std::abs(replayed - entry->epsilon_after) <=
        1e-9 * std::max(1.0, std::abs(replayed)))) {
    return LineError(
        path_, number,
        absl::StrCat("epsilon_after is ", FormatNumber(entry->epsilon_after),
                     " but replaying the spends gives ",
                     FormatNumber(replayed), " (parameters were edited)"));
  }
  if (replayed > budget_.epsilon) {
    return LineError(path_, number,
                     absl::StrCat("spends exceed the budget: epsilon ",
                                  FormatNumber(replayed), " > ",
                                  FormatNumber(budget_.epsilon)));
  }
  spent_epsilon_ = replayed;
  spend_count_ = static_cast<int64_t>(number) - 1;
  spent_rounds_.emplace(request.job, request.round);
  last_spend_ = {request.job, request.round};
  return absl::OkStatus();
}

absl::StatusOr<SpendCheck> Ledger::CheckLocked(const SpendRequest& request,
                                               RdpAccountant* planned) const {
  if (absl::Status s = ValidateSpendRequest(request); !s.ok()) return s;
  *planned = accountant_;
  if (absl::Status s = planned->AddSteps(
          request.sampling_rate, request.noise_multiplier, request.steps);
      !s.ok()) {
    return s;
  }
  auto result = planned->GetEpsilon(budget_.delta);
  if (!result.ok()) return result.status();
  return SpendCheck{result->epsilon, result->order,
                    result->epsilon <= budget_.epsilon};
}

absl::StatusOr<SpendCheck> Ledger::CanSpend(const SpendRequest& request) const {
  std::lock_guard<std::mutex> lock(mu_);
  RdpAccountant planned;
  return CheckLocked(request, &planned);
}

absl::StatusOr<SpendCheck> Ledger::RecordSpend(const SpendRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  RdpAccountant planned;
  auto check = CheckLocked(request, &planned);
  if (!check.ok()) return check.status();
  if (!check->fits) {
    spdlog::warn(
        "privacy ledger {}: refused spend for site={} job={} round={}: epsilon "
        "would reach {} > budget {}",
        path_, site_, QuotedForLog(request.job), request.round,
        check->epsilon_after, budget_.epsilon);
    return absl::ResourceExhaustedError(absl::StrCat(
        "privacy budget of site \"", site_, "\" exceeded: job \"", request.job,
        "\" round ", request.round, " (",
        std::string(MechanismName(request.mechanism)),
        ", q=", FormatNumber(request.sampling_rate),
        ", sigma=", FormatNumber(request.noise_multiplier),
        ", steps=", request.steps, ") would bring epsilon from ",
        FormatNumber(spent_epsilon_), " to ",
        FormatNumber(check->epsilon_after), ", over the budget of ",
        FormatNumber(budget_.epsilon), " at delta=",
        FormatNumber(budget_.delta)));
  }

  ledger_format::SpendEntry entry;
  entry.seq = spend_count_ + 1;
  entry.time = ledger_format::NowRfc3339();
  entry.request = request;
  entry.epsilon_after = check->epsilon_after;
  entry.delta = budget_.delta;
  entry.prev = log_->head_hash();
  if (absl::Status s = log_->Append(ledger_format::EncodeSpend(entry)); !s.ok()) {
    return s;
  }

  accountant_ = std::move(planned);
  spent_epsilon_ = check->epsilon_after;
  ++spend_count_;
  spent_rounds_.emplace(request.job, request.round);
  last_spend_ = {request.job, request.round};
  spdlog::info(
      "privacy ledger {}: site={} job={} round={} spent {} (q={} sigma={} "
      "steps={}), epsilon now {} of {}",
      path_, site_, QuotedForLog(request.job), request.round,
      MechanismName(request.mechanism), request.sampling_rate,
      request.noise_multiplier, request.steps, spent_epsilon_, budget_.epsilon);
  return check;
}

double Ledger::spent_epsilon() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spent_epsilon_;
}

double Ledger::remaining_epsilon() const {
  std::lock_guard<std::mutex> lock(mu_);
  return std::max(0.0, budget_.epsilon - spent_epsilon_);
}

int64_t Ledger::spend_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spend_count_;
}

bool Ledger::HasSpend(std::string_view job, int64_t round) const {
  std::lock_guard<std::mutex> lock(mu_);
  return spent_rounds_.contains(std::make_pair(std::string(job), round));
}

bool Ledger::LastSpendIs(std::string_view job, int64_t round) const {
  std::lock_guard<std::mutex> lock(mu_);
  return spend_count_ > 0 && last_spend_.first == job && last_spend_.second == round;
}

std::string Ledger::header_hash() const {
  std::lock_guard<std::mutex> lock(mu_);
  return header_hash_;
}

std::string Ledger::head_hash() const {
  std::lock_guard<std::mutex> lock(mu_);
  return log_->head_hash();
}

}  // namespace cohort::privacy
