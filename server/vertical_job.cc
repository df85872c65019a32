#include "server/vertical_job.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "audit/entry.h"
#include "core/quote.h"
#include "storage/atomic_write.h"

namespace cohort::server {
namespace {

using Clock = std::chrono::steady_clock;

const Actor kServer{"server", "server"};

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string Quoted(const std::string& party) { return absl::StrCat("\"", party, "\""); }

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<std::unique_ptr<VerticalJob>> VerticalJob::Create(VerticalJobOptions options) {
  const core::JobConfig& config = options.config;
  if (config.job_type != "vertical" || config.vertical.parties.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat("job ", config.name,
                                                   " is not a vertical job (\"job_type\": \"vertical\" with at least "
                                                   "two vertical.parties)"));
  }
  for (const core::VerticalParty& p : config.vertical.parties) {
    const auto& revoked = config.federation.revoked_sites;
    if (std::find(revoked.begin(), revoked.end(), p.name) != revoked.end()) {
      return absl::InvalidArgumentError(absl::StrCat("vertical.parties: party ", Quoted(p.name),
                                                     " is in federation.revoked_sites; remove it from one of them"));
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(options.out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", options.out_dir.string(), ": ", ec.message()));
  std::unique_ptr<VerticalJob> job(new VerticalJob(std::move(options)));
  absl::StatusOr<uint64_t> seq = job->recorder_->Record(job->options_.launched_by, audit::action::kJobCreate, "", "",
                                                        nullptr, core::ToJson(job->options_.config), "");
  if (!seq.ok()) return seq.status();
  return job;
}

VerticalJob::VerticalJob(VerticalJobOptions options) : options_(std::move(options)) {
  RoundRecorder::Options recorder;
  recorder.job = options_.config.name;
  recorder.out_dir = options_.out_dir;
  recorder.audit = options_.audit;
  recorder_ = std::make_unique<RoundRecorder>(std::move(recorder), nullptr);
  parties_.resize(options_.config.vertical.parties.size());
  for (size_t i = 0; i < parties_.size(); ++i) parties_[i].name = options_.config.vertical.parties[i].name;
  seed_ = options_.config.seed;
}

VerticalJob::~VerticalJob() { Cancel("the job was destroyed"); }

VerticalJob::Party* VerticalJob::PartyOf(uint64_t connection) {
  if (connection == 0) return nullptr;
  for (Party& p : parties_) {
    if (p.connection == connection) return &p;
  }
  return nullptr;
}

absl::Status VerticalJob::Hello(const std::string& identity, const v1::PartyHello& hello, uint64_t connection,
                                std::shared_ptr<PartyLink> link) {
  std::lock_guard lock(mu_);
  if (phase_ == Phase::kEnded) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id(), " has ended (", std::string(JobStateName(end_state_)), ": ", end_reason_, ")"));
  }
  if (hello.introduction().party() != identity) {
    return absl::PermissionDeniedError(absl::StrCat("the certificate of ", Quoted(identity), " cannot introduce itself as ",
                                                    core::QuotePrefix(hello.introduction().party())));
  }
  const int index = options_.config.vertical.PartyIndex(identity);
  if (index < 0) {
    return absl::PermissionDeniedError(absl::StrCat("party ", Quoted(identity), " is not a party of job ", job_id(),
                                                    " (vertical.parties)"));
  }
  Party& party = parties_[static_cast<size_t>(index)];
  const bool same_process = party.hello && party.hello->introduction().public_key() == hello.introduction().public_key();
  if (phase_ == Phase::kRunning && !same_process) {
    const std::string why = absl::StrCat("party ", Quoted(identity),
                                         " restarted and lost its training state; start the job again");
    EndLocked(JobState::kFailed, why);
    return absl::FailedPreconditionError(why);
  }
  if (phase_ == Phase::kWaitingForHellos) {
    if (absl::Status s = CheckHello(party, hello); !s.ok()) {
      EndLocked(JobState::kFailed, std::string(s.message()));
      return s;
    }
  }
  if (party.link != nullptr) {
    // A second stream of the same party (the same process, or any before the start): the
    // old one is stale, its break not noticed yet.
    party.link->End(grpc::Status(grpc::StatusCode::CANCELLED, "replaced by a new stream of the same party"));
  }
  party.connection = connection;
  party.link = std::move(link);
  party.writing = false;  // the old link's write in flight, if any, stays at the queue's front
  party.end_after_drain = false;
  if (phase_ == Phase::kWaitingForHellos) {
    party.hello = hello;
    spdlog::info("job={} party={} said hello: {} rows, {} features{}", job_id(), identity, hello.rows(),
                 ShapeText(hello.feature_shape()), hello.has_labels() ? ", labels" : "");
    if (MissingPartiesLocked().empty()) StartLocked();
  } else {
    // The same process on a new stream: RESUME tells it to re-send its last relay of each
    // topic, and comes before everything queued for it meanwhile.
    v1::VerticalMessage resume;
    resume.mutable_control()->set_kind(v1::VerticalControl::RESUME);
    Enqueue(party, std::move(resume), /*front=*/true);
    if (party.gone_since) {
      party.gone_since.reset();
      --paused_by_;
      spdlog::info("job={} party={} is back", job_id(), identity);
      Note({identity, "site"}, audit::action::kParticipantJoin, identity, {{"rejoin", true}});
      if (paused_by_ == 0) BroadcastControl(v1::VerticalControl::RESUME, "", identity);
    }
  }
  Pump(party);
  return absl::OkStatus();
}

void VerticalJob::RecordDenied(const Actor& actor, const std::string& method, const absl::Status& why) {
  recorder_->RecordDenied(actor, method, why);
}

std::string VerticalJob::MissingPartiesLocked() const {
  std::vector<std::string> missing;
  for (const Party& p : parties_) {
    if (!p.hello || p.link == nullptr) missing.push_back(Quoted(p.name));
  }
  return absl::StrJoin(missing, ", ");
}

void VerticalJob::StartLocked() {
  phase_ = Phase::kRunning;
  started_at_ = Clock::now();
  const core::VerticalConfig& v = options_.config.vertical;
  nlohmann::json parties = nlohmann::json::array();
  for (size_t i = 0; i < parties_.size(); ++i) {
    Party& party = parties_[i];
    v1::VerticalMessage message;
    v1::VerticalStart* start = message.mutable_start();
    start->set_job(job_id());
    start->set_seed(seed_);
    for (const Party& p : parties_) {
      start->add_parties(p.name);
      *start->add_introductions() = p.hello->introduction();
    }
    start->set_label_party(v.label_party);
    start->set_bottom_model_json(v.parties[i].bottom_model.dump());
    if (party.name == v.label_party) start->set_top_model_json(v.top_model.dump());
    start->set_training_config_json(core::ToJson(options_.config.training).dump());
    start->set_epochs(v.epochs);
    start->set_eval_fraction(v.eval_fraction);
    start->set_gradient_noise_std(v.gradient_noise_std);
    start->set_chunk_bytes(v.chunk_bytes);
    Enqueue(party, std::move(message));
    Pump(party);
    parties.push_back({{"name", party.name}, {"rows", party.hello->rows()}});
  }
  spdlog::info("job={} every party said hello; starting {} parties, label party {}", job_id(), parties_.size(),
               v.label_party);
  Note(kServer, audit::action::kVerticalStart, "", {{"parties", parties}, {"label_party", v.label_party}});
  cv_.notify_all();
}

VerticalJob::RelayResult VerticalJob::Relay(uint64_t connection, v1::Relay relay) {
  std::lock_guard lock(mu_);
  Party* sender = PartyOf(connection);
  if (sender == nullptr) return {absl::FailedPreconditionError("this stream has no party (say hello first)")};
  if (phase_ == Phase::kEnded) return {};  // the job is over: nothing more is delivered
  if (phase_ != Phase::kRunning) {
    return {absl::FailedPreconditionError(
        absl::StrCat("party ", Quoted(sender->name), " sent a relay before the job started; wait for VerticalStart"))};
  }
  const int to = options_.config.vertical.PartyIndex(relay.peer());
  if (to < 0 || parties_[static_cast<size_t>(to)].name == sender->name) {
    return {absl::InvalidArgumentError(absl::StrCat("relay from ", Quoted(sender->name), " on topic ",
                                                    core::QuotePrefix(relay.topic()), " to ",
                                                    core::QuotePrefix(relay.peer()), ": not another party of job ",
                                                    job_id()))};
  }
  Party& recipient = parties_[static_cast<size_t>(to)];
  const size_t bytes = relay.sealed().size();
  sender->sent_bytes += bytes;
  sender->relays_sent += 1;
  recipient.received_bytes += bytes;
  spdlog::debug("job={} relay {} -> {} topic={} seq={} chunk={}/{} bytes={}", job_id(), sender->name, recipient.name,
                relay.topic(), relay.sequence(), relay.chunk_index(), relay.chunk_count(), bytes);
  relay.set_peer(sender->name);  // the sender as its certificate names it, whatever the message said
  v1::VerticalMessage message;
  *message.mutable_relay() = std::move(relay);
  Enqueue(recipient, std::move(message));
  Pump(recipient);
  if (recipient.queued_bytes > options_.max_queued_bytes) {
    recipient.held_senders.push_back(connection);
    ++sender->holds;
    return {absl::OkStatus(), true};
  }
  return {};
}

absl::Status VerticalJob::Report(uint64_t connection, const v1::PartyReport& report) {
  std::unique_lock lock(mu_);
  Party* party = PartyOf(connection);
  if (party == nullptr) return absl::FailedPreconditionError("this stream has no party (say hello first)");
  if (phase_ == Phase::kEnded) return absl::OkStatus();
  if (phase_ != Phase::kRunning) {
    return absl::FailedPreconditionError(
        absl::StrCat("party ", Quoted(party->name), " sent a report before the job started"));
  }
  const Actor actor{party->name, "site"};
  switch (report.stage()) {
    case v1::PartyReport::PSI_DONE: {
      party->psi = report;
      spdlog::info("job={} party={} PSI done: {} rows, intersection {}", job_id(), party->name, report.set_size(),
                   report.intersection_size());
      const bool all = std::all_of(parties_.begin(), parties_.end(), [](const Party& p) { return p.psi.has_value(); });
      if (!all) return absl::OkStatus();
      nlohmann::json sizes = nlohmann::json::object();
      for (const Party& p : parties_) sizes[p.name] = p.psi->set_size();
      intersection_size_ = parties_.front().psi->intersection_size();
      for (const Party& p : parties_) {
        if (p.psi->intersection_size() != *intersection_size_) {
          const std::string why = absl::StrCat("the parties disagree on the intersection's size: party ", Quoted(p.name),
                                               " found ", p.psi->intersection_size(), ", party ",
                                               Quoted(parties_.front().name), " ", *intersection_size_);
          EndLocked(JobState::kFailed, why);
          return absl::OkStatus();
        }
      }
      Note(kServer, audit::action::kVerticalPsi, "", {{"set_sizes", sizes}, {"intersection_size", *intersection_size_}});
      return absl::OkStatus();
    }
    case v1::PartyReport::EPOCH_DONE: {
      if (party->name != options_.config.vertical.label_party) {
        return absl::PermissionDeniedError(absl::StrCat("party ", Quoted(party->name),
                                                        " reported an epoch; only the label party does"));
      }
      const nlohmann::json epoch = {{"epoch", report.epoch()},           {"train_loss", report.train_loss()},
                                    {"train_accuracy", report.train_accuracy()}, {"eval_loss", report.eval_loss()},
                                    {"eval_accuracy", report.eval_accuracy()},   {"seconds", report.seconds()},
                                    {"train_rows", report.train_rows()},         {"eval_rows", report.eval_rows()}};
      epochs_.push_back(epoch);
      spdlog::info("job={} epoch {}/{}: train loss {:.4f} acc {:.4f}, eval loss {:.4f} acc {:.4f} ({:.1f} s)", job_id(),
                   report.epoch(), options_.config.vertical.epochs, report.train_loss(), report.train_accuracy(),
                   report.eval_loss(), report.eval_accuracy(), report.seconds());
      Note(actor, audit::action::kVerticalEpoch, party->name, epoch);
      cv_.notify_all();
      return absl::OkStatus();
    }
    case v1::PartyReport::FINISHED: {
      party->finished = true;
      spdlog::info("job={} party={} finished", job_id(), party->name);
      if (std::all_of(parties_.begin(), parties_.end(), [](const Party& p) { return p.finished; })) {
        EndLocked(JobState::kFinished, "every party finished");
      }
      return absl::OkStatus();
    }
    case v1::PartyReport::FAILED:
      EndLocked(JobState::kFailed, absl::StrCat("party ", Quoted(party->name), " failed: ",
                                                report.error().empty() ? "no reason given" : report.error()));
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("party ", Quoted(party->name), " sent a report of unknown stage ", static_cast<int>(report.stage())));
  }
}

void VerticalJob::Enqueue(Party& party, v1::VerticalMessage message, bool front) {
  const size_t bytes = message.ByteSizeLong();
  auto shared = std::make_shared<const v1::VerticalMessage>(std::move(message));
  // The front may be in flight; an urgent message goes right behind it.
  if (front && !party.queue.empty()) {
    party.queue.insert(party.queue.begin() + (party.writing ? 1 : 0), std::move(shared));
  } else if (front) {
    party.queue.push_front(std::move(shared));
  } else {
    party.queue.push_back(std::move(shared));
  }
  party.queued_bytes += bytes;
}

void VerticalJob::Pump(Party& party) {
  if (party.link == nullptr || party.writing) return;
  if (!party.queue.empty()) {
    party.writing = true;
    party.link->Write(party.queue.front());
  } else if (party.end_after_drain) {
    party.link->End(party.end_status);
    party.end_after_drain = false;
  }
}

void VerticalJob::ReleaseHeld(Party& party) {
  // Hysteresis: senders wait until the queue is half drained, not just under the bound.
  if (party.queued_bytes > options_.max_queued_bytes / 2) return;
  for (uint64_t held : party.held_senders) {
    if (Party* sender = PartyOf(held); sender != nullptr && sender->link != nullptr) sender->link->ResumeReading();
  }
  party.held_senders.clear();
}

void VerticalJob::WriteDone(uint64_t connection, bool ok) {
  std::lock_guard lock(mu_);
  Party* party = PartyOf(connection);
  if (party == nullptr || !party->writing) return;
  party->writing = false;
  if (!ok) return;  // the stream broke: the message stays queued for the party's return
  party->queued_bytes -= std::min(party->queued_bytes, party->queue.front()->ByteSizeLong());
  party->queue.pop_front();
  ReleaseHeld(*party);
  Pump(*party);
  cv_.notify_all();
}

void VerticalJob::Disconnected(uint64_t connection) {
  std::lock_guard lock(mu_);
  Party* party = PartyOf(connection);
  if (party == nullptr) return;
  party->connection = 0;
  party->link.reset();
  party->writing = false;  // the message in flight, if any, stays queued for the party's return
  cv_.notify_all();
  if (phase_ == Phase::kWaitingForHellos) {
    party->hello.reset();  // it says hello again when it comes back
    spdlog::info("job={} party={} left before the start", job_id(), party->name);
    return;
  }
  if (phase_ == Phase::kEnded || party->finished) return;
  party->gone_since = Clock::now();
  ++paused_by_;
  const std::string reason =
      absl::StrCat("party ", Quoted(party->name), " disconnected; the job waits up to ",
                   options_.config.vertical.party_timeout_s, " s for it (vertical.party_timeout_s)");
  spdlog::warn("job={} {}", job_id(), reason);
  Note(kServer, audit::action::kParticipantLost, party->name, {{"paused", true}});
  BroadcastControl(v1::VerticalControl::PAUSE, reason, party->name);
}

void VerticalJob::BroadcastControl(v1::VerticalControl::Kind kind, const std::string& reason, const std::string& except) {
  for (Party& p : parties_) {
    if (p.name == except || p.link == nullptr) continue;
    v1::VerticalMessage message;
    message.mutable_control()->set_kind(kind);
    message.mutable_control()->set_reason(reason);
    Enqueue(p, std::move(message), /*front=*/true);
    Pump(p);
  }
}

void VerticalJob::EndLocked(JobState state, const std::string& why) {
  if (phase_ == Phase::kEnded) return;
  phase_ = Phase::kEnded;
  end_state_ = state;
  end_reason_ = why;
  const bool finished = state == JobState::kFinished;
  if (finished) {
    spdlog::info("job={} finished: {}", job_id(), why);
  } else {
    spdlog::error("job={} failed: {}", job_id(), why);
  }
  for (Party& p : parties_) {
    // What is still queued for a party is moot now; the last word is FINISH or ABORT.
    while (p.queue.size() > (p.writing ? 1u : 0u)) p.queue.pop_back();
    p.queued_bytes = 0;
    ReleaseHeld(p);
    if (p.link == nullptr) continue;
    v1::VerticalMessage message;
    message.mutable_control()->set_kind(finished ? v1::VerticalControl::FINISH : v1::VerticalControl::ABORT);
    message.mutable_control()->set_reason(why);
    Enqueue(p, std::move(message));
    p.end_after_drain = true;
    p.end_status = finished ? grpc::Status::OK : grpc::Status(grpc::StatusCode::ABORTED, why);
    Pump(p);
  }
  cv_.notify_all();
}

void VerticalJob::CheckTimeoutsLocked(Clock::time_point now) {
  const auto timeout = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.config.vertical.party_timeout_s));
  const std::string setting = absl::StrCat(options_.config.vertical.party_timeout_s, " s (vertical.party_timeout_s)");
  if (phase_ == Phase::kWaitingForHellos && now - created_ >= timeout) {
    EndLocked(JobState::kFailed, absl::StrCat("parties ", MissingPartiesLocked(), " did not say hello within ", setting));
    return;
  }
  for (const Party& p : parties_) {
    if (phase_ == Phase::kRunning && p.gone_since && now - *p.gone_since >= timeout) {
      EndLocked(JobState::kFailed, absl::StrCat("party ", Quoted(p.name), " has been gone for ", setting));
      return;
    }
  }
}

void VerticalJob::Cancel(const std::string& why) {
  std::lock_guard lock(mu_);
  EndLocked(JobState::kFailed, why);
}

absl::Status VerticalJob::Run() {
  std::unique_lock lock(mu_);
  while (phase_ != Phase::kEnded) {
    CheckTimeoutsLocked(Clock::now());
    if (phase_ == Phase::kEnded) break;
    cv_.wait_for(lock, std::chrono::milliseconds(100));
  }
  const JobState state = end_state_;
  const std::string why = end_reason_;
  nlohmann::json summary = SummaryLocked();
  lock.unlock();

  // The record, with no lock held: summary.json, then every queued observation, then job.end.
  absl::Status written = storage::WriteFileAtomically(options_.out_dir / "summary.json", summary.dump(2) + "\n");
  if (!written.ok()) spdlog::error("job={} cannot write summary.json: {}", job_id(), std::string(written.message()));
  recorder_->FlushNotes();
  (void)recorder_->Record(kServer, audit::action::kJobEnd, "", "", "running",
                          {{"state", std::string(JobStateName(state))}, {"epochs", summary["epochs"].size()}}, why);

  // Let the last FINISH or ABORT reach every live stream.
  lock.lock();
  cv_.wait_for(lock, options_.drain_timeout, [this] {
    return std::all_of(parties_.begin(), parties_.end(), [](const Party& p) { return p.link == nullptr || p.queue.empty(); });
  });
  if (state == JobState::kFinished) return absl::OkStatus();
  return absl::AbortedError(why);
}

nlohmann::json VerticalJob::Summary() const {
  std::lock_guard lock(mu_);
  return SummaryLocked();
}

nlohmann::json VerticalJob::SummaryLocked() const {
  nlohmann::json parties = nlohmann::json::array();
  for (const Party& p : parties_) {
    nlohmann::json party = {{"name", p.name},
                            {"relays_sent", p.relays_sent},
                            {"bytes_sent", p.sent_bytes},
                            {"bytes_received", p.received_bytes},
                            {"flow_control_holds", p.holds}};
    if (p.hello) party["rows"] = p.hello->rows();
    if (p.psi) party["set_size"] = p.psi->set_size();
    parties.push_back(std::move(party));
  }
  nlohmann::json summary = {{"job", job_id()},
                            {"job_type", "vertical"},
                            {"status", phase_ == Phase::kEnded ? std::string(JobStateName(end_state_)) : "running"},
                            {"label_party", options_.config.vertical.label_party},
                            {"parties", std::move(parties)},
                            {"epochs", epochs_},
                            {"seconds", SecondsSince(created_)}};
  if (phase_ == Phase::kEnded) summary["reason"] = end_reason_;
  if (intersection_size_) summary["intersection_size"] = *intersection_size_;
  return summary;
}

void VerticalJob::Note(const Actor& actor, const std::string& action, const std::string& participant,
                       nlohmann::json value, const std::string& reason) {
  recorder_->Note(actor, action, participant, nullptr, std::move(value), reason);
}

}  // namespace cohort::server
