#include "server/vertical_service.h"

#include <spdlog/spdlog.h>

#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/access_policy.h"

namespace cohort::server {
namespace {

using Reactor = grpc::ServerBidiReactor<v1::VerticalMessage, v1::VerticalMessage>;

std::string ExchangeMethod() { return FullMethodName(v1::Vertical::service_full_name(), "Exchange"); }

class VerticalStream;

// The job's handle on one stream. It outlives the reactor (the job may hold it after the
// stream is done), so every call checks that the stream still exists and is not finished;
// its mutex orders the job's writes, resumed reads and the end against the reactor's
// completions. It never calls into the job.
class StreamLink final : public PartyLink {
 public:
  explicit StreamLink(VerticalStream* stream) : stream_(stream) {}
  void Write(std::shared_ptr<const v1::VerticalMessage> message) override;
  void ResumeReading() override;
  void End(const grpc::Status& status) override;

  // From the reactor: its write is done. Finishes the stream if an End was waiting for it.
  void WriteDone();
  // From the reactor's OnDone: nothing may touch the stream from now on.
  void Detach();

 private:
  std::mutex mu_;
  VerticalStream* stream_;
  std::shared_ptr<const v1::VerticalMessage> in_flight_;
  bool finished_ = false;
  std::optional<grpc::Status> finish_after_write_;
};

class VerticalStream final : public Reactor {
 public:
  VerticalStream(VerticalJob& job, std::string identity)
      : job_(job), identity_(std::move(identity)), connection_(job.NewConnectionId()),
        link_(std::make_shared<StreamLink>(this)) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The party closed its side or went away: the job pauses if it still needed it.
      if (said_hello_) job_.Disconnected(connection_);
      link_->End(grpc::Status::OK);
      return;
    }
    if (!said_hello_) return TakeHello();
    if (in_.has_relay()) {
      // Moved out first: once the job may resume reading (another thread), in_ is not ours.
      VerticalJob::RelayResult result = job_.Relay(connection_, std::move(*in_.mutable_relay()));
      if (!result.status.ok()) return Refuse(result.status);
      if (!result.hold_reading) ReadNext();
      return;
    }
    if (in_.has_report()) {
      if (absl::Status s = job_.Report(connection_, in_.report()); !s.ok()) return Refuse(s);
      return ReadNext();
    }
    Refuse(absl::InvalidArgumentError("after its hello a party sends only relays and reports"));
  }

  void OnWriteDone(bool ok) override {
    link_->WriteDone();
    job_.WriteDone(connection_, ok);
  }

  void OnDone() override {
    link_->Detach();
    if (said_hello_) job_.Disconnected(connection_);
    delete this;
  }

 private:
  friend class StreamLink;

  void TakeHello() {
    if (!in_.has_hello()) {
      return RefuseBeforeHello(absl::InvalidArgumentError("the first message of a Vertical.Exchange stream must be "
                                                          "the party's hello (PartyHello)"));
    }
    // In --insecure mode there is no certificate: the party is who its hello says.
    const std::string identity = identity_.empty() ? in_.hello().introduction().party() : identity_;
    absl::Status hello = job_.Hello(identity, in_.hello(), connection_, link_);
    if (!hello.ok()) {
      if (hello.code() == absl::StatusCode::kPermissionDenied) {
        job_.RecordDenied({identity.empty() ? "anonymous" : identity, identity_.empty() ? "unauthenticated" : "site"},
                          ExchangeMethod(), hello);
      }
      return RefuseBeforeHello(hello);
    }
    said_hello_ = true;
    ReadNext();
  }

  void ReadNext() { link_->ResumeReading(); }  // under the link's lock: never after the finish

  // Ends an accepted stream: the job stops writing to it and pauses if it needed it.
  void Refuse(const absl::Status& why) {
    spdlog::warn("job={} ends a party's stream: {}", job_.job_id(), std::string(why.message()));
    job_.Disconnected(connection_);
    link_->End(ToGrpcStatus(why));
  }

  // Answers a stream the job never took: one ABORT with the reason, then the status.
  void RefuseBeforeHello(const absl::Status& why) {
    refusal_.mutable_control()->set_kind(v1::VerticalControl::ABORT);
    refusal_.mutable_control()->set_reason(std::string(why.message()));
    link_->Detach();  // the job never saw this link
    StartWriteAndFinish(&refusal_, grpc::WriteOptions(), ToGrpcStatus(why));
  }

  VerticalJob& job_;
  const std::string identity_;  // from the certificate; empty in --insecure mode
  const uint64_t connection_;
  const std::shared_ptr<StreamLink> link_;
  v1::VerticalMessage in_;
  v1::VerticalMessage refusal_;
  bool said_hello_ = false;  // only the reading side (one read at a time) touches it
};

void StreamLink::Write(std::shared_ptr<const v1::VerticalMessage> message) {
  std::lock_guard lock(mu_);
  if (stream_ == nullptr || finished_) return;
  in_flight_ = std::move(message);
  stream_->StartWrite(in_flight_.get());
}

void StreamLink::ResumeReading() {
  std::lock_guard lock(mu_);
  if (stream_ == nullptr || finished_) return;
  stream_->StartRead(&stream_->in_);
}

void StreamLink::End(const grpc::Status& status) {
  std::lock_guard lock(mu_);
  if (stream_ == nullptr || finished_) return;
  finished_ = true;
  if (in_flight_ != nullptr) {
    finish_after_write_ = status;  // a write may not overlap the finish
  } else {
    stream_->Finish(status);
  }
}

void StreamLink::WriteDone() {
  std::lock_guard lock(mu_);
  in_flight_.reset();
  if (finish_after_write_ && stream_ != nullptr) {
    stream_->Finish(*finish_after_write_);
    finish_after_write_.reset();
  }
}

void StreamLink::Detach() {
  std::lock_guard lock(mu_);
  stream_ = nullptr;
  finished_ = true;
}

}  // namespace

VerticalService::VerticalService(VerticalJob* job, bool require_certificate, DenialRecorder record_denial,
                                 std::string served_job, CallRateLimiter* call_rate)
    : job_(job),
      require_certificate_(require_certificate),
      record_denial_(std::move(record_denial)),
      served_job_(std::move(served_job)),
      call_rate_(call_rate) {}

grpc::ServerBidiReactor<v1::VerticalMessage, v1::VerticalMessage>* VerticalService::Exchange(
    grpc::CallbackServerContext* context) {
  using Refused = RefusedCall<Reactor>;
  Caller caller;
  if (grpc::Status s = AuthorizeCaller(*context, require_certificate_, ExchangeMethod(), record_denial_, &caller,
                                     call_rate_);
      !s.ok()) {
    return new Refused(s);
  }
  if (job_ == nullptr) {
    return new Refused(grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("this server runs job ", served_job_,
                     ", a horizontal job; Vertical.Exchange serves only jobs with \"job_type\": \"vertical\"")));
  }
  return new VerticalStream(*job_, require_certificate_ ? caller.identity : "");
}

}  // namespace cohort::server
