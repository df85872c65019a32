#include "server/round_recorder.h"

#include <cmath>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "audit/entry.h"
#include "audit/filter.h"
#include "audit/reader.h"
#include "core/checkpoint.h"
#include "storage/atomic_write.h"
#include "storage/sha256.h"

namespace cohort::server {
namespace {

constexpr const char* kCheckpointFile = "checkpoint.bin";

double Seconds(core::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

RoundRecorder::RoundRecorder(Options options, nlohmann::json summary)
    : options_(std::move(options)),
      summary_(options_.job, std::move(summary)),
      denials_({}, {.full = [this](const Actor& actor, const std::string& method,
                                   const absl::Status& why) { WriteDenied(actor, method, why); },
                    .repeated = [this](const RepeatedDenials& repeated) { WriteRepeatedDenials(repeated); }}),
      note_writer_([this] { NoteLoop(); }) {}

RoundRecorder::~RoundRecorder() {
  FlushNotes();
  {
    std::lock_guard lock(notes_mu_);
    quit_ = true;
  }
  notes_cv_.notify_all();
  note_writer_.join();
}

absl::StatusOr<uint64_t> RoundRecorder::Record(const Actor& actor, const std::string& action,
                                               const std::string& parameter, const std::string& participant,
                                               nlohmann::json old_value, nlohmann::json new_value,
                                               const std::string& reason) {
  // Auditors read docs/audit.md to know what each entry means: an action it does not
  // list is a server bug, refused here rather than written.
  if (!audit::action::IsKnown(action)) {
    return absl::InternalError(absl::StrCat("audit action \"", action, "\" is not in audit::action::kAll"));
  }
  audit::Writer* log = options_.audit;
  if (log == nullptr) return 0;
  audit::Record record;
  record.actor = actor.identity.empty() ? "unknown" : actor.identity;
  record.role = actor.role.empty() ? "unknown" : actor.role;
  record.action = action;
  record.target = {.job = options_.job, .parameter = parameter, .participant = participant};
  record.old_value = std::move(old_value);
  record.new_value = std::move(new_value);
  if (!reason.empty()) record.reason = reason;
  absl::StatusOr<uint64_t> seq = log->Append(record);
  if (!seq.ok()) {
    spdlog::error("job={} audit log {}: cannot record {}: {}", options_.job, log->path().string(), action,
                  std::string(seq.status().message()));
    return absl::UnavailableError(absl::StrCat("the audit log cannot record this change (", seq.status().message(),
                                               "); nothing was changed"));
  }
  return seq;
}

void RoundRecorder::Note(const Actor& actor, const std::string& action, const std::string& participant,
                         nlohmann::json old_value, nlohmann::json new_value, const std::string& reason) {
  if (options_.audit == nullptr) return;
  {
    std::lock_guard lock(notes_mu_);
    notes_.push_back({actor, action, participant, std::move(old_value), std::move(new_value), reason});
  }
  notes_cv_.notify_all();
}

void RoundRecorder::RecordDenied(const Actor& actor, const std::string& method, const absl::Status& why) {
  denials_.Record(actor, method, why);
}

void RoundRecorder::WriteDenied(const Actor& actor, const std::string& method, const absl::Status& why) {
  const std::string reason(why.message());
  spdlog::warn("job={} access denied on {}: {}", options_.job, method, reason);
  // Best effort: the call is refused whether or not its record could be written.
  (void)Record(actor, audit::action::kAccessDenied, method, "", nullptr, nullptr, reason);
}

void RoundRecorder::WriteRepeatedDenials(const RepeatedDenials& r) {
  spdlog::warn("job={} access denied {} more times on {} to {} ({}) within {} s of the first: {}", options_.job,
               r.count, r.method, r.actor.identity, absl::StatusCodeToString(r.code), absl::ToDoubleSeconds(r.window),
               r.last_reason);
  nlohmann::json repeated = {{"count", r.count},
                             {"code", absl::StatusCodeToString(r.code)},
                             {"window_s", absl::ToDoubleSeconds(r.window)},
                             {"window_start", audit::FormatEntryTime(r.window_start)},
                             {"first", audit::FormatEntryTime(r.first)},
                             {"last", audit::FormatEntryTime(r.last)}};
  (void)Record(r.actor, audit::action::kAccessDeniedRepeated, r.method, "", nullptr, std::move(repeated),
               r.last_reason);
}

void RoundRecorder::NoteLoop() {
  // Also closes the windows of repeated refusals that have ended, about once a second.
  constexpr auto kDenialTick = std::chrono::seconds(1);
  std::unique_lock lock(notes_mu_);
  for (;;) {
    if (!notes_cv_.wait_for(lock, kDenialTick, [this] { return quit_ || !notes_.empty(); })) {
      lock.unlock();
      denials_.FlushExpired();
      lock.lock();
      continue;
    }
    if (notes_.empty()) return;  // quit_, and nothing left to write
    Noted note = std::move(notes_.front());
    notes_.pop_front();
    writing_note_ = true;
    lock.unlock();
    // Record logs a failure; an observation changes nothing, so there is nothing to undo.
    (void)Record(note.actor, note.action, "", note.participant, std::move(note.old_value), std::move(note.new_value),
                 note.reason);
    lock.lock();
    writing_note_ = false;
    notes_cv_.notify_all();
  }
}

void RoundRecorder::FlushNotes() {
  denials_.FlushAll();
  std::unique_lock lock(notes_mu_);
  notes_cv_.wait(lock, [this] { return notes_.empty() && !writing_note_; });
}

nlohmann::json RoundRecorder::SpendJson(const SiteSpend& spend) {
  nlohmann::json report = {{"mechanism", "dp_sgd"},
                           {"epsilon", spend.epsilon_after},
                           {"noise_multiplier", spend.noise_multiplier},
                           {"sampling_rate", spend.sampling_rate},
                           {"steps", spend.steps},
                           {"clip_norm", spend.clip_norm}};
  if (spend.ledger.present) {
    report["ledger"] = {{"header_sha256", spend.ledger.header_sha256},
                        {"spends", spend.ledger.spends},
                        {"head_sha256", spend.ledger.head_sha256},
                        {"epsilon_spent", spend.ledger.epsilon_spent}};
  }
  return report;
}

nlohmann::json RoundRecorder::MirrorSpend(const std::string& site, uint64_t round, nlohmann::json report) {
  auto it = mirrors_.find(site);
  if (it == mirrors_.end()) {
    std::error_code ec;
    std::filesystem::create_directories(options_.out_dir / "ledgers", ec);
    absl::StatusOr<std::unique_ptr<privacy::Ledger>> ledger =
        privacy::Ledger::Open((options_.out_dir / "ledgers" / (site + ".ledger")).string(), site,
                              {options_.privacy.target_epsilon, options_.privacy.target_delta});
    if (!ledger.ok()) {
      spdlog::error("job={} site={} cannot open the mirror ledger: {}", options_.job, site,
                    std::string(ledger.status().message()));
      report["mirror_error"] = std::string(ledger.status().message());
      return report;
    }
    it = mirrors_.emplace(site, std::move(*ledger)).first;
  }
  // Once per round, even when a crash after the checkpoint makes the resumed server
  // complete this round's record a second time.
  if (it->second->HasSpend(options_.job, static_cast<int64_t>(round))) {
    report["job_epsilon"] = it->second->spent_epsilon();
    return report;
  }
  privacy::SpendRequest request;
  request.job = options_.job;
  request.round = static_cast<int64_t>(round);
  request.mechanism = privacy::Mechanism::kDpSgd;
  request.sampling_rate = report.value("sampling_rate", 0.0);
  request.noise_multiplier = report.value("noise_multiplier", 0.0);
  request.steps = report.value("steps", int64_t{0});
  request.clip_norm = report.value("clip_norm", 0.0);
  absl::StatusOr<privacy::SpendCheck> mirrored = it->second->RecordSpend(request);
  if (!mirrored.ok()) {
    spdlog::error("job={} round={} site={} spend not mirrored: {}", options_.job, round, site,
                  std::string(mirrored.status().message()));
    report["mirror_error"] = std::string(mirrored.status().message());
  } else {
    report["job_epsilon"] = mirrored->epsilon_after;
  }
  return report;
}

absl::StatusOr<std::string> RoundRecorder::RecordRound(const ClosedRound& closed, const core::ParameterSet& model) {
  const std::string model_sha256 = options_.audit != nullptr ? storage::Sha256Hex(model.bytes()) : "";
  nlohmann::json clients = nlohmann::json::array();
  uint64_t samples = 0;
  double train_loss = 0, local_eval_accuracy = 0;
  for (const auto& [id, r] : closed.reports) {
    samples += r.samples;
    train_loss += r.metrics.train_loss * static_cast<double>(r.samples);
    local_eval_accuracy += r.metrics.eval_accuracy * static_cast<double>(r.samples);
    clients.push_back({{"site", id},
                       {"samples", r.samples},
                       {"train_loss", r.metrics.train_loss},
                       {"eval_loss", r.metrics.eval_loss},
                       {"eval_accuracy", r.metrics.eval_accuracy},
                       {"train_seconds", r.metrics.train_seconds},
                       {"train_cpu_seconds", r.metrics.train_cpu_seconds},
                       {"steps", r.metrics.steps},
                       {"update_norm", r.update_norm}});
    if (r.spend) clients.back()["privacy"] = SpendJson(*r.spend);
  }
  nlohmann::json entry = {{"round", closed.round},
                          {"attempts", closed.attempts},
                          {"model_version", closed.model_version},
                          {"clients_reported", closed.reports.size()},
                          {"clients", clients},
                          {"samples", samples},
                          {"train_loss", samples ? train_loss / static_cast<double>(samples) : 0.0},
                          {"client_eval_accuracy", samples ? local_eval_accuracy / static_cast<double>(samples) : 0.0},
                          {"wall_seconds", Seconds(core::Clock::now() - closed.started)},
                          {"training", {{"optimizer", closed.training.optimizer},
                                        {"learning_rate", closed.training.learning_rate},
                                        {"local_epochs", closed.training.local_epochs},
                                        {"batch_size", closed.training.batch_size}}},
                          {"parameter_changes", closed.parameter_changes}};
  if (!model_sha256.empty()) entry["model_sha256"] = model_sha256;
  if (closed.elapsed_seconds) entry["elapsed_seconds"] = *closed.elapsed_seconds;
  if (closed.phase_seconds.is_object()) entry["phase_seconds"] = closed.phase_seconds;
  for (const auto& [key, value] : closed.strategy_report.items()) entry[key] = value;
  JobSummary::Snapshot checkpoint_summary;
  {
    std::lock_guard lock(summary_mu_);
    summary_.AppendRound(entry);
    checkpoint_summary = summary_.Take();
  }
  // The strategy's state, when it keeps one, joins the checkpoint's summary as its last
  // member (JSON readers take members in any order).
  if (!closed.strategy_state.is_null()) {
    checkpoint_summary.tail.pop_back();  // its closing '}'
    absl::StrAppend(&checkpoint_summary.tail, ",\"", kStrategyStateKey, "\":", closed.strategy_state.dump(), "}");
  }
  // The checkpoint first, naming the round's record (its last "rounds" entry); the record
  // after it. A crash before the rename leaves no trace of the round, which is run again;
  // a crash after it leaves a checkpoint whose record the resumed server completes
  // (CompleteResumedRound). Either way the round's model.publish and spends are written
  // once, and always before a client can download the model.
  if (absl::Status s = core::WriteCheckpointWithSummaryText(options_.out_dir / kCheckpointFile, options_.job,
                                                             closed.round, closed.model_version,
                                                             checkpoint_summary.Parts(), model,
                                                             options_.checkpoint_key);
      !s.ok()) {
    return s;
  }
  if (options_.after_checkpoint) {
    if (absl::Status s = options_.after_checkpoint(closed.round); !s.ok()) return s;
  }
  if (absl::Status s = WriteRoundRecord(entry, /*already=*/{}); !s.ok()) return s;
  // The entry as the summary now holds it, spends mirrored; with its test metrics to come,
  // once they are in (RecordTest).
  if (options_.on_round_recorded && !closed.test_pending) options_.on_round_recorded(entry);
  // Logged once durable: a round reported done survives a crash.
  spdlog::info("job={} round={}/{} done: {} clients, {} samples, train loss {:.4f}, {:.1f} s", options_.job,
               closed.round, closed.total_rounds, closed.reports.size(), samples, entry["train_loss"].get<double>(),
               entry["wall_seconds"].get<double>());
  return model_sha256;
}

absl::Status RoundRecorder::WriteRoundRecord(nlohmann::json& entry, const RecordedRound& already) {
  const uint64_t round = entry.value("round", uint64_t{0});
  const uint64_t version = entry.value("model_version", uint64_t{0});
  std::vector<std::string> contributors;
  for (const nlohmann::json& c : entry.value("clients", nlohmann::json::array())) {
    contributors.push_back(c.value("site", ""));
  }
  if (!already.published) {
    absl::StatusOr<uint64_t> published =
        Record(options_.server, audit::action::kModelPublish, "", "", version - 1,
               {{"model_version", version},
                {"round", round},
                {"sha256", entry.value("model_sha256", "")},
                {"contributors", contributors}},
               "");
    if (!published.ok()) return published.status();
  }
  if (entry.contains("privacy") && !already.server_spend) {
    nlohmann::json spend = entry["privacy"];
    if (spend.is_object()) spend["round"] = round;
    absl::StatusOr<uint64_t> spent =
        Record(options_.server, audit::action::kPrivacySpend, "", "", nullptr, std::move(spend), "");
    if (!spent.ok()) return spent.status();
  }
  nlohmann::json clients = entry.value("clients", nlohmann::json::array());
  bool mirrored_any = false;
  for (nlohmann::json& c : clients) {
    if (!c.contains("privacy") || !c["privacy"].is_object()) continue;
    const std::string site = c.value("site", "");
    nlohmann::json report = MirrorSpend(site, round, c["privacy"]);
    report["round"] = round;
    if (!already.site_spends.contains(site)) {
      (void)Record({site, "site"}, audit::action::kPrivacySpend, "", site, nullptr, report, "");
    }
    if (options_.ledger_anchors != nullptr && report.contains("ledger") && report["ledger"].is_object()) {
      const nlohmann::json& l = report["ledger"];
      LedgerPosition position{true, l.value("header_sha256", ""), l.value("spends", uint64_t{0}),
                              l.value("head_sha256", ""), l.value("epsilon_spent", 0.0)};
      if (absl::Status s = options_.ledger_anchors->Advance(site, position); !s.ok()) {
        spdlog::error("job={} round={} site={} ledger not anchored: {}", options_.job, round, site,
                      std::string(s.message()));
      }
    }
    report.erase("round");
    c["privacy"] = std::move(report);
    mirrored_any = true;
  }
  if (mirrored_any) {
    {
      std::lock_guard lock(summary_mu_);
      summary_.UpdateRound(round, [&clients](nlohmann::json& r) { r["clients"] = clients; });
    }
    entry["clients"] = std::move(clients);
  }
  return absl::OkStatus();
}

absl::Status RoundRecorder::CompleteResumedRound() {
  nlohmann::json entry;
  {
    std::lock_guard lock(summary_mu_);
    entry = summary_.LastRound();
  }
  if (!entry.is_object()) return absl::OkStatus();
  const uint64_t round = entry.value("round", uint64_t{0});
  const uint64_t version = entry.value("model_version", uint64_t{0});
  RecordedRound already;
  if (options_.audit != nullptr) {
    audit::EntryFilter filter;
    filter.job = options_.job;
    absl::StatusOr<audit::ReadResult> read = audit::ReadEntries(options_.audit->path(), filter);
    if (!read.ok()) return read.status();
    for (const audit::Entry& e : read->entries) {
      const nlohmann::json& v = e.new_value;
      if (!v.is_object()) continue;
      if (e.action == audit::action::kModelPublish && v.value("model_version", uint64_t{0}) == version) {
        already.published = true;
      } else if (e.action == audit::action::kPrivacySpend && v.value("round", uint64_t{0}) == round) {
        if (e.target.participant.empty()) {
          already.server_spend = true;
        } else {
          already.site_spends.insert(e.target.participant);
        }
      }
    }
  }
  const bool complete = already.published && (!entry.contains("privacy") || already.server_spend);
  if (!complete) {
    spdlog::warn("job={} round={} the checkpoint's record was incomplete in the audit log (a crash after the "
                 "checkpoint): completing it",
                 options_.job, round);
  }
  return WriteRoundRecord(entry, already);
}

absl::Status RoundRecorder::Finish(JobState state, const std::string& why, const core::ParameterSet& model,
                                   const nlohmann::json& model_config, const nlohmann::json& effective_config,
                                   const ModelWriter& write_model) {
  nlohmann::json summary;
  {
    std::lock_guard lock(summary_mu_);
    summary_.SetMember("status", std::string(JobStateName(state)));
    if (state == JobState::kFailed) summary_.SetMember("failure", why);
    summary = summary_.Tree();
  }
  absl::Status written = absl::OkStatus();
  if (write_model) written = write_model(model, options_.out_dir / "model.pt");
  if (written.ok()) written = storage::WriteFileAtomically(options_.out_dir / "model.json", model_config.dump(2) + "\n");
  summary["config"] = effective_config;
  if (written.ok()) written = storage::WriteFileAtomically(options_.out_dir / "summary.json", summary.dump(2) + "\n");
  // The log's last word on the job, after everything observed before the end.
  FlushNotes();
  nlohmann::json end = {{"state", std::string(JobStateName(state))}, {"rounds", summary["rounds"].size()}};
  if (!written.ok()) end["outputs_error"] = std::string(written.message());
  (void)Record(options_.server, audit::action::kJobEnd, "", "", "running", std::move(end), why);
  return written;
}

void RoundRecorder::SetTestMetrics(nlohmann::json& entry, const core::EvalMetrics& test) {
  entry["test_loss"] = test.loss;
  // exp(mean cross-entropy): per token for a language model, the usual measure of one.
  entry["test_perplexity"] = std::exp(test.loss);
  entry["test_accuracy"] = test.accuracy;
  entry["test_samples"] = test.samples;
}

void RoundRecorder::RecordTest(uint64_t round, const core::EvalMetrics& test, double seconds) {
  nlohmann::json recorded;
  {
    std::lock_guard lock(summary_mu_);
    summary_.UpdateRound(round, [&](nlohmann::json& entry) {
      SetTestMetrics(entry, test);
      if (entry.contains("phase_seconds") && entry["phase_seconds"].is_object()) {
        entry["phase_seconds"]["evaluation"] = seconds;
      }
      recorded = entry;
    });
  }
  if (recorded.is_null()) {
    spdlog::error("job={} round={} has no summary entry for its test metrics", options_.job, round);
    return;
  }
  spdlog::info("job={} round={} evaluated: test loss {:.4f}, test accuracy {:.4f} ({:.2f} s, beside the next round)",
               options_.job, round, test.loss, test.accuracy, seconds);
  if (options_.on_round_recorded) options_.on_round_recorded(recorded);
}

void RoundRecorder::SetLastRoundPhaseSeconds(const std::string& phase, double seconds) {
  std::lock_guard lock(summary_mu_);
  summary_.UpdateLastRound([&](nlohmann::json& entry) {
    if (entry.contains("phase_seconds")) entry["phase_seconds"][phase] = seconds;
  });
}

void RoundRecorder::SetSummaryField(const std::string& key, nlohmann::json value) {
  std::lock_guard lock(summary_mu_);
  summary_.SetMember(key, std::move(value));
}

nlohmann::json RoundRecorder::summary() const {
  std::lock_guard lock(summary_mu_);
  return summary_.Tree();
}

std::vector<std::shared_ptr<const std::string>> RoundRecorder::round_texts() const {
  std::lock_guard lock(summary_mu_);
  return summary_.Take().rounds;
}

std::string RoundRecorder::summary_json() const {
  JobSummary::Snapshot snapshot;
  {
    std::lock_guard lock(summary_mu_);
    snapshot = summary_.Take();
  }
  return snapshot.Text();
}

}  // namespace cohort::server
