// wire::VerticalClient against a minimal relay on loopback (plaintext gRPC, a synchronous
// Vertical service that routes relays by recipient and stamps the sender, as the real
// server does): chunking and reassembly, sealing, the reconnect with the same hello, and
// the re-sent relay the receiver drops.
#include "wire/vertical_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "crypto/key_agreement.h"
#include "crypto/party_channel.h"

namespace cohort::wire {
namespace {

using ::testing::HasSubstr;

// Starts the job when both "a" and "b" said hello; routes relays; counts hellos per party.
class RelayService final : public v1::Vertical::Service {
 public:
  grpc::Status Exchange(grpc::ServerContext*,
                        grpc::ServerReaderWriter<v1::VerticalMessage, v1::VerticalMessage>* stream) override {
    v1::VerticalMessage message;
    std::string name;
    while (stream->Read(&message)) {
      std::lock_guard<std::mutex> lock(mu_);
      if (message.has_hello()) {
        name = message.hello().introduction().party();
        streams_[name] = stream;
        hellos_[name].push_back(message.hello());
        introductions_[name] = message.hello().introduction();
        if (introductions_.size() == 2 && !started_) {
          started_ = true;
          for (auto& [party, s] : streams_) {
            v1::VerticalMessage start;
            start.mutable_start()->set_job("job");
            s->Write(start);
          }
        }
      } else if (message.has_relay()) {
        relays_.push_back(message.relay());
        const std::string to = message.relay().peer();
        message.mutable_relay()->set_peer(name);
        if (streams_.contains(to)) streams_[to]->Write(message);
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (streams_[name] == stream) streams_.erase(name);
    return grpc::Status::OK;
  }

  std::mutex mu_;
  std::map<std::string, grpc::ServerReaderWriter<v1::VerticalMessage, v1::VerticalMessage>*> streams_;
  std::map<std::string, std::vector<v1::PartyHello>> hellos_;
  std::map<std::string, v1::PartyIntroduction> introductions_;
  std::vector<v1::Relay> relays_;  // as sent by the parties
  bool started_ = false;
};

struct Party {
  std::string name;
  crypto::X25519KeyPair keys = crypto::GenerateX25519KeyPair();
  std::unique_ptr<VerticalClient> client;
};

class VerticalClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(port_, 0);
    a_.name = "a";
    b_.name = "b";
    for (Party* p : {&a_, &b_}) {
      v1::PartyHello hello;
      hello.mutable_introduction()->set_party(p->name);
      hello.mutable_introduction()->set_public_key(p->keys.public_key.data(), p->keys.public_key.size());
      Connection connection{"127.0.0.1:" + std::to_string(port_), nullptr, /*own_connection=*/true};
      VerticalClientOptions options;
      options.connect_timeout = std::chrono::seconds(5);
      options.reconnect_for = std::chrono::seconds(5);
      absl::StatusOr<std::unique_ptr<VerticalClient>> client = VerticalClient::Connect(connection, hello, options);
      ASSERT_TRUE(client.ok()) << client.status();
      p->client = std::move(*client);
    }
    for (Party* p : {&a_, &b_}) {
      ASSERT_TRUE(p->client->WaitForStart(std::chrono::seconds(5)).ok());
      Party* peer = p == &a_ ? &b_ : &a_;
      crypto::PartyIntroduction intro;
      intro.job = "job";
      intro.party = peer->name;
      intro.public_key = peer->keys.public_key;
      absl::StatusOr<crypto::PartyChannel> channel = crypto::PartyChannel::Agree("job", p->name, p->keys, intro);
      ASSERT_TRUE(channel.ok()) << channel.status();
      std::map<std::string, crypto::PartyChannel> channels;
      channels.emplace(peer->name, std::move(*channel));
      p->client->SetChannels(std::move(channels), /*chunk_bytes=*/1000);
    }
  }

  void TearDown() override {
    a_.client.reset();
    b_.client.reset();
    server_->Shutdown(std::chrono::system_clock::now());
  }

  RelayService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  Party a_, b_;
};

std::vector<uint8_t> Payload(size_t size) {
  std::vector<uint8_t> payload(size);
  for (size_t i = 0; i < size; ++i) payload[i] = static_cast<uint8_t>(i * 7 + 3);
  return payload;
}

TEST_F(VerticalClientTest, APayloadTravelsInSealedChunksAndArrivesWhole) {
  const std::vector<uint8_t> payload = Payload(2500);
  ASSERT_TRUE(a_.client->Send("b", "split/fwd", 7, payload).ok());
  absl::StatusOr<std::vector<uint8_t>> received = b_.client->Receive("a", "split/fwd", 7, std::chrono::seconds(5));
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_EQ(*received, payload);
  std::lock_guard<std::mutex> lock(service_.mu_);
  ASSERT_EQ(service_.relays_.size(), 3u);  // 1000 + 1000 + 500 bytes
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(service_.relays_[i].chunk_index(), i);
    EXPECT_EQ(service_.relays_[i].chunk_count(), 3u);
    EXPECT_EQ(service_.relays_[i].sequence(), 7u);
    // The server sees ciphertext only: no run of the plaintext's bytes.
    const std::string plain(reinterpret_cast<const char*>(payload.data()) + i * 1000, 32);
    EXPECT_EQ(service_.relays_[i].sealed().find(plain), std::string::npos);
  }
}

TEST_F(VerticalClientTest, AMessageUnderAnotherSequenceDoesNotOpenAsThisOne) {
  ASSERT_TRUE(a_.client->Send("b", "split/grad", 1, Payload(10)).ok());
  ASSERT_TRUE(b_.client->Receive("a", "split/grad", 1, std::chrono::seconds(5)).ok());
  // Relabel: the service forwards what it got with a changed sequence.
  v1::VerticalMessage forged;
  {
    std::lock_guard<std::mutex> lock(service_.mu_);
    ASSERT_FALSE(service_.relays_.empty());
    *forged.mutable_relay() = service_.relays_.back();
    forged.mutable_relay()->set_peer("a");
    forged.mutable_relay()->set_sequence(2);
    service_.streams_["b"]->Write(forged);
  }
  absl::StatusOr<std::vector<uint8_t>> received = b_.client->Receive("a", "split/grad", 2, std::chrono::seconds(5));
  ASSERT_FALSE(received.ok());
  EXPECT_EQ(received.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(VerticalClientTest, AfterABreakTheClientReconnectsWithTheSameHelloAndTheReceiverGetsTheResendOnce) {
  const std::vector<uint8_t> payload = Payload(1500);
  ASSERT_TRUE(a_.client->Send("b", "psi/final", 0, payload).ok());
  absl::StatusOr<std::vector<uint8_t>> first = b_.client->Receive("a", "psi/final", 0, std::chrono::seconds(5));
  ASSERT_TRUE(first.ok()) << first.status();

  a_.client->BreakStreamForTest();
  // The reconnect sends the same hello, then re-sends the last relay on (b, psi/final).
  for (int i = 0; i < 100; ++i) {
    {
      std::lock_guard<std::mutex> lock(service_.mu_);
      if (service_.relays_.size() >= 4) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  {
    std::lock_guard<std::mutex> lock(service_.mu_);
    ASSERT_EQ(service_.hellos_["a"].size(), 2u);
    EXPECT_EQ(service_.hellos_["a"][1].introduction().public_key(), service_.hellos_["a"][0].introduction().public_key());
    ASSERT_EQ(service_.relays_.size(), 4u);  // 2 chunks, then the same 2 again
  }
  // b already took that message: the copy is dropped, and nothing new is waiting.
  absl::StatusOr<std::vector<uint8_t>> again = b_.client->Receive("a", "psi/final", 0, std::chrono::milliseconds(300));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDeadlineExceeded);
  // The reconnected stream carries new messages both ways.
  ASSERT_TRUE(a_.client->Send("b", "split/fwd", 0, Payload(5)).ok());
  absl::StatusOr<std::vector<uint8_t>> next = b_.client->Receive("a", "split/fwd", 0, std::chrono::seconds(5));
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_TRUE(b_.client->Send("a", "split/grad", 0, Payload(5)).ok());
  EXPECT_TRUE(a_.client->Receive("b", "split/grad", 0, std::chrono::seconds(5)).ok());
}

TEST_F(VerticalClientTest, AnAbortEndsEveryWaitWithTheServersReason) {
  {
    std::lock_guard<std::mutex> lock(service_.mu_);
    v1::VerticalMessage abort;
    abort.mutable_control()->set_kind(v1::VerticalControl::ABORT);
    abort.mutable_control()->set_reason("party \"a\" has been gone for 60 s (vertical.party_timeout_s)");
    service_.streams_["b"]->Write(abort);
  }
  absl::StatusOr<std::vector<uint8_t>> received = b_.client->Receive("a", "split/fwd", 0, std::chrono::seconds(5));
  ASSERT_FALSE(received.ok());
  EXPECT_EQ(received.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(received.status().message(), HasSubstr("has been gone"));
  EXPECT_FALSE(b_.client->Send("a", "split/fwd", 0, Payload(3)).ok());
}

}  // namespace
}  // namespace cohort::wire
