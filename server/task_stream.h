#pragma once
// The answer to one PullTask call, as a gRPC write reactor.
//
// While the client waits for work the call is an entry in TaskWaiters, not a thread.
// Once its task comes, the reactor writes the task's header and, for TRAIN, the model
// chunk by chunk from the immutable snapshot the task holds: each chunk is sealed for
// this client straight into the message when the transport has taken the previous one
// (OnWriteDone), so a slow client holds one chunk of memory and no thread.

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <string>

#include "proto/cohort.grpc.pb.h"
#include "server/federated_job.h"
#include "server/task_waiters.h"

namespace cohort::server {

class TaskStream final : public grpc::ServerWriteReactor<v1::TaskMessage> {
 public:
  // Starts waiting for `client_id`'s task, for at most `wait`. `chunk_bytes` is the job's
  // chunk size. `context` and `waiters` must outlive the call; the reactor deletes itself
  // when gRPC is done with it.
  static TaskStream* Start(grpc::CallbackServerContext* context, TaskWaiters& waiters, const std::string& client_id,
                           std::chrono::milliseconds wait, size_t chunk_bytes);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override { delete this; }

 private:
  TaskStream(grpc::CallbackServerContext* context, TaskWaiters& waiters, size_t chunk_bytes)
      : context_(context), waiters_(waiters), chunk_bytes_(chunk_bytes) {}
  // TaskWaiters' answer: writes the header (and the finish, unless a model follows).
  void Send(Task task);
  // Finishes the call once; later calls are ignored.
  void End(const grpc::Status& status);

  grpc::CallbackServerContext* const context_;
  TaskWaiters& waiters_;
  const size_t chunk_bytes_;
  std::string client_id_;
  uint64_t ticket_ = 0;  // set before gRPC binds the reactor, read only after
  Task task_;
  v1::TaskMessage message_;  // the header, then each chunk in turn
  uint32_t next_chunk_ = 0;
  uint32_t chunk_count_ = 0;
  std::atomic<bool> ended_{false};
};

}  // namespace cohort::server
