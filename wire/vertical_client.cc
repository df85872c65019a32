#include "wire/vertical_client.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "wire/stream_settings.h"

namespace cohort::wire {
namespace {

using Clock = std::chrono::steady_clock;

// A stream that ended with one of these was refused, not broken: reconnecting would get
// the same answer.
bool IsRefusal(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::ABORTED:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string SealTopic(const std::string& topic, uint32_t index, uint32_t count) {
  return absl::StrCat(topic, "#", index, "/", count);
}

VerticalClient::VerticalClient(const Connection& connection, v1::PartyHello hello, VerticalClientOptions options)
    : hello_(std::move(hello)), options_(options) {
  grpc::ChannelArguments args;
  ApplyChunkStreamSettings(args);
  if (connection.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  channel_ = grpc::CreateCustomChannel(
      connection.address, connection.credentials ? connection.credentials : grpc::InsecureChannelCredentials(), args);
  stub_ = v1::Vertical::NewStub(channel_);
}

absl::StatusOr<std::unique_ptr<VerticalClient>> VerticalClient::Connect(const Connection& connection,
                                                                        v1::PartyHello hello,
                                                                        VerticalClientOptions options) {
  std::unique_ptr<VerticalClient> client(new VerticalClient(connection, std::move(hello), options));
  if (!client->channel_->WaitForConnected(std::chrono::system_clock::now() + options.connect_timeout)) {
    return absl::UnavailableError(absl::StrCat("no connection to the server at ", connection.address, " within ",
                                               options.connect_timeout.count() / 1000, " s"));
  }
  {
    std::lock_guard<std::mutex> lock(client->write_mu_);
    if (absl::Status s = client->OpenStream(); !s.ok()) return s;
  }
  client->reader_ = std::thread([c = client.get()] { c->ReadLoop(); });
  return client;
}

VerticalClient::~VerticalClient() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  cv_.notify_all();
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    if (stream_.context) stream_.context->TryCancel();
  }
  if (reader_.joinable()) reader_.join();
}

absl::Status VerticalClient::OpenStream() {
  stream_.context = std::make_unique<grpc::ClientContext>();
  stream_.stream = stub_->Exchange(stream_.context.get());
  v1::VerticalMessage message;
  *message.mutable_hello() = hello_;
  if (!stream_.stream->Write(message)) {
    return absl::UnavailableError("the server closed the vertical stream before the hello was sent");
  }
  stream_broken_ = false;
  return absl::OkStatus();
}

bool VerticalClient::WriteLocked(const v1::VerticalMessage& message) {
  if (stream_broken_ || !stream_.stream) return false;
  if (!stream_.stream->Write(message)) {
    stream_broken_ = true;
    return false;
  }
  return true;
}

void VerticalClient::ReadLoop() {
  for (;;) {
    // Only this thread replaces the stream, so it may read without the write lock.
    grpc::ClientReaderWriter<v1::VerticalMessage, v1::VerticalMessage>* stream = stream_.stream.get();
    v1::VerticalMessage message;
    while (stream->Read(&message)) Handle(message);
    grpc::Status status;
    {
      std::lock_guard<std::mutex> lock(write_mu_);
      stream_broken_ = true;
      status = stream_.stream->Finish();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closing_ || finished_ || !ended_.ok()) break;
    }
    if (IsRefusal(status.error_code())) {
      Fail(absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("the server ended the vertical stream: ", status.error_message())));
      break;
    }
    spdlog::warn("party={} the stream to the server broke ({}); reconnecting", hello_.introduction().party(),
                 status.error_message());
    if (!Reconnect()) {
      Fail(absl::UnavailableError(absl::StrCat("lost the server and could not reconnect within ",
                                               options_.reconnect_for.count() / 1000, " s: ", status.error_message())));
      break;
    }
  }
  cv_.notify_all();
}

bool VerticalClient::Reconnect() {
  const Clock::time_point deadline = Clock::now() + options_.reconnect_for;
  while (Clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closing_) return false;
    }
    if (channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(1))) {
      std::lock_guard<std::mutex> lock(write_mu_);
      {
        // The destructor cancels the stream under write_mu_ after setting closing_: a stream
        // opened after that would never be cancelled.
        std::lock_guard<std::mutex> state_lock(mu_);
        if (closing_) return false;
      }
      if (OpenStream().ok()) {
        // The receivers drop whatever of this they already had.
        for (const auto& [key, messages] : last_sent_) {
          for (const v1::VerticalMessage& m : messages) {
            if (!WriteLocked(m)) break;
          }
        }
        std::vector<v1::VerticalMessage> reports = std::move(unsent_reports_);
        unsent_reports_.clear();
        for (v1::VerticalMessage& m : reports) {
          if (!WriteLocked(m)) unsent_reports_.push_back(std::move(m));
        }
        if (!stream_broken_) {
          spdlog::info("party={} reconnected to the server", hello_.introduction().party());
          return true;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

void VerticalClient::Handle(v1::VerticalMessage& message) {
  std::lock_guard<std::mutex> lock(mu_);
  switch (message.body_case()) {
    case v1::VerticalMessage::kStart:
      if (!start_) start_ = std::move(*message.mutable_start());
      break;
    case v1::VerticalMessage::kRelay: {
      v1::Relay& relay = *message.mutable_relay();
      bytes_received_ += relay.sealed().size();
      MessageKey key{relay.peer(), relay.topic(), relay.sequence()};
      if (taken_.contains(key)) return;  // a re-send of a message already taken
      const uint32_t count = relay.chunk_count(), index = relay.chunk_index();
      if (count == 0 || index >= count) {
        spdlog::warn("party={} dropped a relay from {} with chunk {}/{}", hello_.introduction().party(), relay.peer(),
                     index, count);
        return;
      }
      Assembly& assembly = pending_[key];
      if (assembly.count == 0) {
        assembly.count = count;
        assembly.chunks.resize(count);
        assembly.have.assign(count, false);
      }
      if (assembly.count != count || assembly.have[index]) return;
      assembly.chunks[index] = std::move(*relay.mutable_sealed());
      assembly.have[index] = true;
      ++assembly.received;
      break;
    }
    case v1::VerticalMessage::kControl: {
      const v1::VerticalControl& control = message.control();
      if (control.kind() == v1::VerticalControl::FINISH) {
        finished_ = true;
      } else if (control.kind() == v1::VerticalControl::ABORT) {
        if (ended_.ok()) ended_ = absl::AbortedError(control.reason());
      } else {
        spdlog::info("party={} {}: {}", hello_.introduction().party(),
                     control.kind() == v1::VerticalControl::PAUSE ? "job paused" : "job resumed", control.reason());
      }
      break;
    }
    default:
      return;
  }
  cv_.notify_all();
}

void VerticalClient::Fail(absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_.ok()) ended_ = std::move(status);
  }
  cv_.notify_all();
}

absl::StatusOr<v1::VerticalStart> VerticalClient::WaitForStart(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return start_.has_value() || !ended_.ok(); })) {
    return absl::DeadlineExceededError(
        absl::StrCat("the server did not start the job within ", timeout.count() / 1000, " s"));
  }
  if (!start_) return ended_;
  return *start_;
}

void VerticalClient::SetChannels(std::map<std::string, crypto::PartyChannel> channels, int64_t chunk_bytes) {
  for (auto& [name, channel] : channels) {
    auto peer = std::make_unique<Peer>();
    peer->channel.emplace(std::move(channel));
    peers_[name] = std::move(peer);
  }
  chunk_bytes_ = std::max<int64_t>(1, chunk_bytes);
}

VerticalClient::Peer* VerticalClient::PeerOf(const std::string& name) {
  const auto it = peers_.find(name);
  return it == peers_.end() ? nullptr : it->second.get();
}

absl::Status VerticalClient::Send(const std::string& peer_name, const std::string& topic, uint64_t sequence,
                                  std::span<const uint8_t> payload) {
  Peer* peer = PeerOf(peer_name);
  if (peer == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no channel to party \"", peer_name, "\" (not a party of the job)"));
  }
  const size_t chunk = static_cast<size_t>(chunk_bytes_);
  const uint32_t count = static_cast<uint32_t>(std::max<size_t>(1, (payload.size() + chunk - 1) / chunk));
  std::vector<v1::VerticalMessage> messages(count);
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const size_t begin = static_cast<size_t>(i) * chunk;
    const std::span<const uint8_t> piece = payload.subspan(std::min(begin, payload.size()),
                                                           std::min(chunk, payload.size() - std::min(begin, payload.size())));
    absl::StatusOr<std::vector<uint8_t>> sealed;
    {
      std::lock_guard<std::mutex> lock(peer->mu);
      sealed = peer->channel->Seal(SealTopic(topic, i, count), sequence, piece);
    }
    if (!sealed.ok()) return sealed.status();
    v1::Relay& relay = *messages[i].mutable_relay();
    relay.set_peer(peer_name);
    relay.set_topic(topic);
    relay.set_sequence(sequence);
    relay.set_chunk_index(i);
    relay.set_chunk_count(count);
    relay.set_sealed(sealed->data(), sealed->size());
    bytes += sealed->size();
  }
  std::lock_guard<std::mutex> write_lock(write_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ended_.ok()) return ended_;
    if (finished_) return absl::FailedPreconditionError("the job has finished");
    bytes_sent_ += bytes;
  }
  std::vector<v1::VerticalMessage>& kept = last_sent_[{peer_name, topic}];
  kept = std::move(messages);
  // A failed write is not an error yet: the reader reconnects and re-sends `kept`.
  for (const v1::VerticalMessage& m : kept) {
    if (!WriteLocked(m)) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> VerticalClient::Receive(const std::string& sender, const std::string& topic,
                                                             uint64_t sequence, std::chrono::milliseconds timeout) {
  Peer* peer = PeerOf(sender);
  if (peer == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no channel to party \"", sender, "\" (not a party of the job)"));
  }
  const MessageKey key{sender, topic, sequence};
  Assembly assembly;
  {
    std::unique_lock<std::mutex> lock(mu_);
    auto complete = [&] {
      const auto it = pending_.find(key);
      return it != pending_.end() && it->second.received == it->second.count;
    };
    if (!cv_.wait_for(lock, timeout, [&] { return complete() || !ended_.ok() || finished_; })) {
      return absl::DeadlineExceededError(absl::StrCat("no message from party \"", sender, "\" on ", topic, " #",
                                                      sequence, " within ", timeout.count() / 1000, " s"));
    }
    if (!complete()) {
      if (!ended_.ok()) return ended_;
      return absl::FailedPreconditionError(
          absl::StrCat("the job finished while waiting for party \"", sender, "\" on ", topic));
    }
    const auto it = pending_.find(key);
    assembly = std::move(it->second);
    pending_.erase(it);
    taken_.insert(key);
  }
  std::vector<uint8_t> payload;
  std::lock_guard<std::mutex> lock(peer->mu);
  for (uint32_t i = 0; i < assembly.count; ++i) {
    const std::string& sealed = assembly.chunks[i];
    absl::StatusOr<std::vector<uint8_t>> opened = peer->channel->Open(
        SealTopic(topic, i, assembly.count), sequence,
        std::span(reinterpret_cast<const uint8_t*>(sealed.data()), sealed.size()));
    if (!opened.ok()) {
      return absl::DataLossError(absl::StrCat("a message from party \"", sender, "\" on ", topic, " #", sequence,
                                              " chunk ", i, "/", assembly.count,
                                              " did not open: ", opened.status().message()));
    }
    if (payload.empty()) {
      payload = std::move(*opened);
    } else {
      payload.insert(payload.end(), opened->begin(), opened->end());
    }
  }
  return payload;
}

absl::Status VerticalClient::Report(const v1::PartyReport& report) {
  v1::VerticalMessage message;
  *message.mutable_report() = report;
  std::lock_guard<std::mutex> write_lock(write_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ended_.ok()) return ended_;
  }
  if (!WriteLocked(message)) unsent_reports_.push_back(std::move(message));
  return absl::OkStatus();
}

absl::Status VerticalClient::WaitForFinish(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return finished_ || !ended_.ok(); })) {
    return absl::DeadlineExceededError(
        absl::StrCat("the server did not finish the job within ", timeout.count() / 1000, " s"));
  }
  return finished_ ? absl::OkStatus() : ended_;
}

uint64_t VerticalClient::bytes_sent() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_sent_;
}

uint64_t VerticalClient::bytes_received() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_received_;
}

void VerticalClient::BreakStreamForTest() {
  std::lock_guard<std::mutex> lock(write_mu_);
  if (stream_.context) stream_.context->TryCancel();
}

}  // namespace cohort::wire
