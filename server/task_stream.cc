#include "server/task_stream.h"

#include <span>
#include <utility>

#include "core/chunking.h"
#include "server/call_checks.h"
#include "wire/convert.h"

namespace cohort::server {
namespace {

v1::DoneReason ToProto(Task::DoneReason reason) {
  switch (reason) {
    case Task::DoneReason::kNone: return v1::DONE_REASON_UNSPECIFIED;
    case Task::DoneReason::kFinished: return v1::FINISHED;
    case Task::DoneReason::kStopped: return v1::STOPPED;
    case Task::DoneReason::kFailed: return v1::FAILED;
    case Task::DoneReason::kNotJoined: return v1::NOT_JOINED;
  }
  return v1::DONE_REASON_UNSPECIFIED;
}

}  // namespace

TaskStream* TaskStream::Start(grpc::CallbackServerContext* context, TaskWaiters& waiters, DownloadPacer& pacer,
                              const std::string& client_id, std::chrono::milliseconds wait, size_t chunk_bytes) {
  auto* stream = new TaskStream(context, waiters, pacer, chunk_bytes);
  stream->client_id_ = client_id;
  // Tells the client at once that the server holds its poll (the sync API sent the
  // metadata only with the task); the scale test waits on it.
  stream->StartSendInitialMetadata();
  // The answer may come before Add returns (a task was ready) or on the waiters' thread;
  // either way gRPC holds its writes until the reactor is bound.
  stream->ticket_ =
      waiters.Add(client_id, core::Clock::now() + wait, [stream](Task task) { stream->Send(std::move(task)); });
  return stream;
}

void TaskStream::Send(Task task) {
  task_ = std::move(task);
  v1::TaskHeader* header = message_.mutable_header();
  header->set_round(task_.round);
  header->set_total_rounds(task_.total_rounds);
  header->set_message(task_.message);
  switch (task_.kind) {
    case Task::Kind::kWait: header->set_kind(v1::TaskHeader::WAIT); break;
    case Task::Kind::kDone:
      header->set_kind(v1::TaskHeader::DONE);
      header->set_done_reason(ToProto(task_.done_reason));
      break;
    case Task::Kind::kTrain: header->set_kind(v1::TaskHeader::TRAIN); break;
  }
  if (task_.kind != Task::Kind::kTrain) {
    ended_ = true;
    StartWriteAndFinish(&message_, grpc::WriteOptions(), grpc::Status::OK);
    return;
  }
  const std::span<const std::byte> bytes = task_.model->bytes();
  chunk_count_ = core::ChunkCount(bytes.size(), chunk_bytes_);
  header->set_model_version(task_.model_version);
  header->set_training_config_json(task_.training_config_json);
  header->set_privacy_config_json(task_.privacy_config_json);
  header->set_compression_config_json(task_.compression_config_json);
  wire::ToProto(task_.model->manifest(), header->mutable_manifest());
  header->set_chunk_count(chunk_count_);
  header->set_chunk_bytes(static_cast<uint32_t>(chunk_bytes_));
  StartWrite(&message_);
}

void TaskStream::OnWriteDone(bool ok) {
  if (held_turn_ != 0) {
    pacer_.Release(std::exchange(held_turn_, 0));
  }
  if (!ok) return End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "client went away"));
  if (next_chunk_ == chunk_count_) {
    waiters_.job().NoteDownloaded(client_id_, task_.round);  // the dashboard: the site trains now
    return End(grpc::Status::OK);
  }
  if (context_->IsCancelled()) return End(grpc::Status(grpc::StatusCode::CANCELLED, "download cancelled"));
  // The last chunk's buffer goes back before the stream waits for its turn: a waiting
  // download holds no chunk.
  std::string().swap(*message_.mutable_chunk()->mutable_data());
  // For OnCancel to withdraw. Granted before this store (or a cancel before it) is fine:
  // the pacer withdraws only turns still waiting, and a granted turn checks for the cancel.
  waiting_turn_ = pacer_.Acquire([this](uint64_t turn) { WriteChunk(turn); });
}

void TaskStream::WriteChunk(uint64_t turn) {
  held_turn_ = turn;
  if (context_->IsCancelled()) {
    pacer_.Release(std::exchange(held_turn_, 0));
    return End(grpc::Status(grpc::StatusCode::CANCELLED, "download cancelled"));
  }
  const uint32_t index = next_chunk_++;
  v1::Chunk* chunk = message_.mutable_chunk();
  chunk->set_index(index);
  chunk->set_count(chunk_count_);
  // Sealed for this client straight into the message: the seal is the only copy.
  const std::span<const std::byte> piece = core::ChunkOf(task_.model->bytes(), index, chunk_bytes_);
  if (absl::Status s =
          task_.session->SealChunk(task_.round, task_.model_version, index, chunk_count_, piece, chunk->mutable_data());
      !s.ok()) {
    pacer_.Release(std::exchange(held_turn_, 0));
    return End(ToGrpcStatus(s));
  }
  waiters_.job().metrics().BytesSent(chunk->data().size());
  StartWrite(&message_);
}

void TaskStream::OnCancel() {
  // Still waiting for a task or for a turn: no write is in flight to fail, so the call
  // ends here. Otherwise the write in flight fails and OnWriteDone ends it.
  if (waiters_.Cancel(ticket_)) End(grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped waiting for a task"));
  if (pacer_.Cancel(waiting_turn_)) End(grpc::Status(grpc::StatusCode::CANCELLED, "download cancelled"));
}

void TaskStream::End(const grpc::Status& status) {
  if (ended_.exchange(true)) return;
  Finish(status);
}

}  // namespace cohort::server
