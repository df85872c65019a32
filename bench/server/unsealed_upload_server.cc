#include "bench/server/unsealed_upload_server.h"

#include "absl/strings/str_cat.h"
#include "core/chunking.h"
#include "core/fedavg.h"
#include "proto/cohort.grpc.pb.h"
#include "wire/convert.h"
#include "wire/stream_settings.h"

namespace cohort::bench {

class UnsealedUploadServer::Service final : public v1::Federation::Service {
 public:
  Service(core::Manifest manifest, std::filesystem::path spool_dir)
      : manifest_(std::move(manifest)), spool_dir_(std::move(spool_dir)) {}

  grpc::Status PushUpdate(grpc::ServerContext*, grpc::ServerReader<v1::UpdateMessage>* reader,
                          v1::UpdateReceipt* receipt) override {
    v1::UpdateMessage message;
    if (!reader->Read(&message) || !message.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "an update stream must start with its header");
    }
    const v1::UpdateHeader header = message.header();
    absl::StatusOr<core::UpdateReceiver> receiver =
        core::UpdateReceiver::Open(manifest_, header.chunk_count(), header.chunk_bytes(),
                                   spool_dir_ / absl::StrCat(header.client_id(), ".update"), {});
    if (!receiver.ok()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(receiver.status().message()));
    while (reader->Read(&message)) {
      const v1::Chunk& chunk = message.chunk();
      const absl::Status added = receiver->AddChunk(chunk.index(), chunk.count(),
                                                    std::as_bytes(std::span(chunk.data().data(), chunk.data().size())));
      if (!added.ok()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(added.message()));
    }
    absl::StatusOr<core::SpooledUpdate> spooled = receiver->Finish(static_cast<double>(header.num_samples()),
                                                                   header.client_id());
    if (!spooled.ok()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(spooled.status().message()));
    // Kept, as ServeJob keeps folded spool files (StreamingFedAvg::ReuseSpoolFile): the
    // next update of this client writes over its pages instead of fresh ones.
    receipt->set_accepted(true);
    return grpc::Status::OK;
  }

 private:
  core::Manifest manifest_;
  std::filesystem::path spool_dir_;
};

absl::StatusOr<std::unique_ptr<UnsealedUploadServer>> UnsealedUploadServer::Start(core::Manifest manifest,
                                                                                  std::filesystem::path spool_dir) {
  core::KeepFreedMemoryForChunkStreams();  // as the shipped server does before its first stream
  std::unique_ptr<UnsealedUploadServer> server(new UnsealedUploadServer());
  server->service_ = std::make_unique<Service>(std::move(manifest), std::move(spool_dir));
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  wire::ApplyChunkStreamSettings(builder);  // server::ServeJob's settings
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) return absl::UnavailableError("cannot listen on 127.0.0.1:0");
  return server;
}

UnsealedUploadServer::~UnsealedUploadServer() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace cohort::bench
