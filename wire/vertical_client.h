#pragma once
// A party's end of Vertical.Exchange (proto/cohort.proto, docs/vertical.md): one stream to
// the server for the whole job, carrying the hello, the server's start and controls, the
// party's reports, and sealed relays to and from the other parties.
//
// Relays. A payload goes to one peer as chunks of at most `chunk_bytes` plaintext bytes,
// each sealed on its own with the PartyChannel agreed with that peer, under the seal topic
// SealTopic(topic, index, count) and the relay's sequence: a chunk opens only at its place
// in its message. Received chunks are kept by (sender, topic, sequence) until the whole
// message is asked for (Receive); a chunk already received, or one of a message already
// taken, is dropped, so a peer may re-send after a reconnect without harm.
//
// Reconnect. When the stream breaks the client opens a new one for up to
// `reconnect_for`, sends the same hello (the same introduction key: the server knows the
// same process returned) and re-sends the last relay it sent on each (peer, topic); the
// receivers drop what they already had.
//
// Threads. One reader thread per client; Send, Receive and Report may be called from any
// thread (a Send's chunks are never interleaved with another Send's on the stream).

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/party_channel.h"
#include "proto/cohort.grpc.pb.h"
#include "wire/federation_client.h"

namespace cohort::wire {

// The topic a chunk is sealed under: "<topic>#<index>/<count>".
std::string SealTopic(const std::string& topic, uint32_t index, uint32_t count);

struct VerticalClientOptions {
  // How long to keep reopening a broken stream before giving up.
  std::chrono::milliseconds reconnect_for{std::chrono::seconds(60)};
  // How long Connect waits for the server to be reachable.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(60)};
};

class VerticalClient {
 public:
  // Opens the stream and sends `hello`. UNAVAILABLE when the server stays unreachable.
  static absl::StatusOr<std::unique_ptr<VerticalClient>> Connect(const Connection& connection, v1::PartyHello hello,
                                                                 VerticalClientOptions options = {});
  ~VerticalClient();
  VerticalClient(const VerticalClient&) = delete;
  VerticalClient& operator=(const VerticalClient&) = delete;

  // The server's VerticalStart; the ABORT's reason (FailedPrecondition) if the server
  // refused the hello; DeadlineExceeded after `timeout`.
  absl::StatusOr<v1::VerticalStart> WaitForStart(std::chrono::milliseconds timeout);

  // The channel to every other party, and the chunk size: before any Send or Receive.
  void SetChannels(std::map<std::string, crypto::PartyChannel> channels, int64_t chunk_bytes);

  // Seals `payload` for `peer` and sends it in chunks; remembered as the last relay on
  // (peer, topic) for a re-send after a reconnect. An error once the job has ended or
  // the stream is gone for good.
  absl::Status Send(const std::string& peer, const std::string& topic, uint64_t sequence,
                    std::span<const uint8_t> payload);
  // Waits for the message `sender` sent on (topic, sequence) and returns it opened.
  // Aborted with the server's reason when the job is aborted; DataLoss when a chunk does
  // not open; DeadlineExceeded after `timeout`.
  absl::StatusOr<std::vector<uint8_t>> Receive(const std::string& sender, const std::string& topic, uint64_t sequence,
                                               std::chrono::milliseconds timeout);
  absl::Status Report(const v1::PartyReport& report);
  // Waits for FINISH (OK) or ABORT (Aborted with its reason).
  absl::Status WaitForFinish(std::chrono::milliseconds timeout);

  // Sizes sent and received, for logs and benchmarks.
  uint64_t bytes_sent() const;
  uint64_t bytes_received() const;

  // Tests: breaks the stream as a network failure would (the client then reconnects).
  void BreakStreamForTest();

 private:
  using MessageKey = std::tuple<std::string, std::string, uint64_t>;  // sender, topic, sequence
  struct Assembly {
    uint32_t count = 0, received = 0;
    std::vector<std::string> chunks;  // sealed
    std::vector<bool> have;
  };
  struct Stream {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::VerticalMessage, v1::VerticalMessage>> stream;
  };
  struct Peer {
    std::mutex mu;  // PartyChannel is not thread-safe
    std::optional<crypto::PartyChannel> channel;
  };

  VerticalClient(const Connection& connection, v1::PartyHello hello, VerticalClientOptions options);
  absl::Status OpenStream();  // under write_mu_
  void ReadLoop();
  void Handle(v1::VerticalMessage& message);
  bool Reconnect();
  bool WriteLocked(const v1::VerticalMessage& message);  // under write_mu_
  void Fail(absl::Status status);
  Peer* PeerOf(const std::string& name);

  const v1::PartyHello hello_;
  const VerticalClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Vertical::Stub> stub_;

  // Writes and the stream object itself (swapped on reconnect).
  std::mutex write_mu_;
  Stream stream_;
  bool stream_broken_ = false;
  // The last relay sent on each (peer, topic), all its chunks, for a re-send.
  std::map<std::pair<std::string, std::string>, std::vector<v1::VerticalMessage>> last_sent_;
  std::vector<v1::VerticalMessage> unsent_reports_;  // written after the reconnect

  std::map<std::string, std::unique_ptr<Peer>> peers_;  // set once by SetChannels
  int64_t chunk_bytes_ = 1 << 20;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<v1::VerticalStart> start_;
  std::map<MessageKey, Assembly> pending_;
  std::set<MessageKey> taken_;
  absl::Status ended_;  // not OK once the stream is gone for good or the job aborted
  bool finished_ = false;
  bool closing_ = false;
  uint64_t bytes_sent_ = 0, bytes_received_ = 0;

  std::thread reader_;
};

}  // namespace cohort::wire
