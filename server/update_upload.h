#pragma once
// One PushUpdate call, as a gRPC read reactor: the upload is taken message by message as
// it arrives (OnReadDone -> check, spool and open the chunk -> StartRead), never buffered
// whole and never holding a thread between messages.
//
// The first message must be the header: the job checks it (FederatedJob::BeginUpdate)
// before any chunk is taken. Each chunk is opened where it lies in the received message
// (UpdateReceiver::AddChunkInPlace); one that does not open ends the upload with DATA_LOSS,
// any other bad chunk with INVALID_ARGUMENT, and either takes the client out of the round.
// At the end of the stream the complete update is committed and the receipt sent.

#include <grpcpp/grpcpp.h>

#include <optional>
#include <string>

#include "core/fedavg.h"
#include "proto/cohort.grpc.pb.h"
#include "server/call_checks.h"
#include "server/federated_job.h"

namespace cohort::server {

// A ledger position as a site reports it, at Join and with each DP-SGD update.
LedgerPosition LedgerPositionFromProto(const v1::LedgerPosition& position);

class UpdateUpload final : public grpc::ServerReadReactor<v1::UpdateMessage> {
 public:
  // `caller` passed Authorize for `method`. `job` and `receipt` must outlive the call; the
  // reactor deletes itself when gRPC is done with it.
  UpdateUpload(FederatedJob& job, Caller caller, std::string method, v1::UpdateReceipt* receipt);

  void OnReadDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  // Each returns the status that ends the call, or nullopt to read on.
  std::optional<grpc::Status> TakeHeader(bool ok);
  std::optional<grpc::Status> TakeChunk();
  grpc::Status Commit();
  // Records the failure against the client's update (it leaves the round) and returns it.
  grpc::Status Reject(const absl::Status& why);

  FederatedJob& job_;
  Caller caller_;
  const std::string method_;
  v1::UpdateReceipt* const receipt_;
  v1::UpdateMessage message_;  // each message in turn; a chunk is opened in it
  UpdateHeader header_;
  std::optional<core::UpdateReceiver> receiver_;  // set once the header is accepted
};

}  // namespace cohort::server
