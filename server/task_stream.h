#pragma once
// The answer to one PullTask call, as a gRPC write reactor.
//
// While the client waits for work the call is an entry in TaskWaiters, not a thread.
// Once its task comes, the reactor writes the task's header and, for TRAIN, the model
// chunk by chunk from the immutable snapshot the task holds: each chunk is sealed for
// this client straight into the message when the transport has taken the previous one
// (OnWriteDone) and the server's DownloadPacer grants the stream its next turn, so a
// download holds at most one chunk of memory, none while it waits for its turn, and no
// thread.

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <string>

#include "proto/cohort.grpc.pb.h"
#include "server/download_pacer.h"
#include "server/federated_job.h"
#include "server/task_waiters.h"

namespace cohort::server {

class TaskStream final : public grpc::ServerWriteReactor<v1::TaskMessage> {
 public:
  // Starts waiting for `client_id`'s task, for at most `wait`. `chunk_bytes` is the job's
  // chunk size. `context`, `waiters` and `pacer` must outlive the call; the reactor
  // deletes itself when gRPC is done with it.
  static TaskStream* Start(grpc::CallbackServerContext* context, TaskWaiters& waiters, DownloadPacer& pacer,
                           const std::string& client_id, std::chrono::milliseconds wait, size_t chunk_bytes);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override { delete this; }

 private:
  TaskStream(grpc::CallbackServerContext* context, TaskWaiters& waiters, DownloadPacer& pacer, size_t chunk_bytes)
      : context_(context), waiters_(waiters), pacer_(pacer), chunk_bytes_(chunk_bytes) {}
  // TaskWaiters' answer: writes the header (and the finish, unless a model follows).
  void Send(Task task);
  // The pacer's grant of `turn`: seals the next chunk into the message and writes it.
  void WriteChunk(uint64_t turn);
  // Finishes the call once; later calls are ignored.
  void End(const grpc::Status& status);

  grpc::CallbackServerContext* const context_;
  TaskWaiters& waiters_;
  DownloadPacer& pacer_;
  const size_t chunk_bytes_;
  std::string client_id_;
  uint64_t ticket_ = 0;  // set before gRPC binds the reactor, read only after
  Task task_;
  v1::TaskMessage message_;  // the header, then each chunk in turn
  uint32_t next_chunk_ = 0;
  uint32_t chunk_count_ = 0;
  uint64_t held_turn_ = 0;                   // the pacer's turn of the write in flight; 0: none
  std::atomic<uint64_t> waiting_turn_{0};    // the last turn asked for, for OnCancel to withdraw
  std::atomic<bool> ended_{false};
};

}  // namespace cohort::server
