#include "server/update_upload.h"

#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "wire/convert.h"

namespace cohort::server {
namespace {

// The label of cohort_updates_rejected_total: the status code as the gRPC spec spells it,
// in lower case.
std::string_view StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::CANCELLED: return "cancelled";
    case grpc::StatusCode::INVALID_ARGUMENT: return "invalid_argument";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "deadline_exceeded";
    case grpc::StatusCode::NOT_FOUND: return "not_found";
    case grpc::StatusCode::ALREADY_EXISTS: return "already_exists";
    case grpc::StatusCode::PERMISSION_DENIED: return "permission_denied";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "resource_exhausted";
    case grpc::StatusCode::FAILED_PRECONDITION: return "failed_precondition";
    case grpc::StatusCode::ABORTED: return "aborted";
    case grpc::StatusCode::UNAVAILABLE: return "unavailable";
    case grpc::StatusCode::DATA_LOSS: return "data_loss";
    case grpc::StatusCode::UNAUTHENTICATED: return "unauthenticated";
    default: return "other";
  }
}

}  // namespace

LedgerPosition LedgerPositionFromProto(const v1::LedgerPosition& p) {
  return {p.present(), p.header_sha256(), p.spends(), p.head_sha256(), p.epsilon_spent()};
}

UpdateUpload::UpdateUpload(FederatedJob& job, Caller caller, std::string method, v1::UpdateReceipt* receipt)
    : job_(job), caller_(std::move(caller)), method_(std::move(method)), receipt_(receipt) {
  StartRead(&message_);
}

void UpdateUpload::OnReadDone(bool ok) {
  std::optional<grpc::Status> end;
  if (!receiver_) {
    end = TakeHeader(ok);
  } else if (!ok) {
    end = Commit();  // the stream ended (or broke: the receiver then finds chunks missing)
  } else {
    end = TakeChunk();
  }
  if (end) {
    // Counted here, where every upload ends: accepted, or refused with its status code.
    if (end->ok()) {
      job_.metrics().UpdateAccepted();
    } else {
      job_.metrics().UpdateRejected(StatusCodeName(end->error_code()));
    }
    Finish(*end);
  } else {
    // The chunk is spooled: its buffer goes back before the wait for the next one, so an
    // upload waiting on its client holds no chunk (measured: 32 uploads at once then held
    // about 1 MiB each less; docs/benchmarks.md).
    if (message_.has_chunk()) std::string().swap(*message_.mutable_chunk()->mutable_data());
    StartRead(&message_);
  }
}

std::optional<grpc::Status> UpdateUpload::TakeHeader(bool ok) {
  if (!ok || !message_.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "an update stream must start with its header");
  }
  const v1::UpdateHeader& h = message_.header();
  if (grpc::Status s = CheckServedJob(job_, h.job_id()); !s.ok()) return s;
  std::string client;
  if (grpc::Status s = ActAsSite(caller_, h.client_id(), method_, job_, &client); !s.ok()) return s;
  absl::StatusOr<core::Manifest> manifest = wire::FromProto(h.manifest());
  if (!manifest.ok()) return ToGrpcStatus(manifest.status());
  header_.client_id = client;
  header_.round = h.round();
  header_.base_model_version = h.base_model_version();
  header_.manifest = std::move(*manifest);
  header_.num_samples = h.num_samples();
  header_.chunk_count = h.chunk_count();
  header_.chunk_bytes = h.chunk_bytes();
  header_.metrics = wire::FromProto(h.metrics());
  absl::StatusOr<core::UpdateEncoding> encoding = wire::FromProto(h.encoding());
  if (!encoding.ok()) return ToGrpcStatus(encoding.status());
  header_.encoding = *encoding;
  if (h.has_privacy_spend()) {
    const v1::PrivacySpend& p = h.privacy_spend();
    header_.privacy_spend =
        SiteSpend{p.sampling_rate(), p.noise_multiplier(), p.steps(), p.clip_norm(), p.epsilon_after(),
                  LedgerPositionFromProto(h.ledger())};
  }
  absl::StatusOr<core::UpdateReceiver> receiver = job_.BeginUpdate(header_);
  if (!receiver.ok()) {
    // Refused before any byte was taken: the client stays in the round only if the
    // refusal was not about its own update (wrong round or unknown client change nothing).
    if (receiver.status().code() == absl::StatusCode::kInvalidArgument) job_.RejectUpdate(header_, receiver.status());
    return ToGrpcStatus(receiver.status());
  }
  receiver_.emplace(std::move(*receiver));
  return std::nullopt;
}

std::optional<grpc::Status> UpdateUpload::TakeChunk() {
  if (!message_.has_chunk()) return Reject(absl::InvalidArgumentError("update stream: a second header after the first"));
  // Opened where it arrived: the message is ours until the next StartRead.
  v1::Chunk& chunk = *message_.mutable_chunk();
  std::string& data = *chunk.mutable_data();
  job_.metrics().BytesReceived(data.size());
  const absl::Status added =
      receiver_->AddChunkInPlace(chunk.index(), chunk.count(), std::as_writable_bytes(std::span(data.data(), data.size())));
  if (added.ok()) return std::nullopt;
  // DataLoss when the chunk did not authenticate (tampered, replayed, reordered, or sealed
  // under another key or name); InvalidArgument for the other checks.
  return Reject(absl::Status(
      added.code() == absl::StatusCode::kDataLoss ? absl::StatusCode::kDataLoss : absl::StatusCode::kInvalidArgument,
      absl::StrCat("update from ", header_.client_id, " for round ", header_.round, " rejected: ", added.message())));
}

grpc::Status UpdateUpload::Commit() {
  if (absl::Status s = job_.CommitUpdate(header_, std::move(*receiver_)); !s.ok()) {
    return ToGrpcStatus(absl::Status(s.code(), absl::StrCat("update from ", header_.client_id, " for round ",
                                                            header_.round, " rejected: ", s.message())));
  }
  receipt_->set_accepted(true);
  receipt_->set_message(absl::StrCat("update for round ", header_.round, " accepted"));
  return grpc::Status::OK;
}

grpc::Status UpdateUpload::Reject(const absl::Status& why) {
  job_.RejectUpdate(header_, why);
  return ToGrpcStatus(why);
}

}  // namespace cohort::server
