// The vertical job's server side (server/vertical_job.h, vertical_service.h) over real
// mutual TLS on loopback, with provisioned kits and raw Vertical.Exchange streams: hellos
// checked against the job, the start, relays routed with the sender stamped from the
// certificate, pause and resume, the restart and timeout aborts, flow control, and the
// record (summary.json, a verifying audit log with sizes and no payload).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <gmock/gmock.h>
#include <stdlib.h>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include "audit/reader.h"
#include "audit/writer.h"
#include "crypto/provisioning.h"
#include "crypto/signing.h"
#include "crypto/startup_kit.h"
#include "proto/cohort.grpc.pb.h"
#include "server/server.h"
#include "server/vertical_job.h"
#include "wire/credentials.h"
#include "wire/stream_settings.h"

namespace cohort::server {
namespace {

using ::testing::HasSubstr;
using std::chrono::milliseconds;
using std::chrono::seconds;

// One party's Exchange stream, read by a thread of its own into a queue.
class PartyStream {
 public:
  PartyStream(std::shared_ptr<grpc::Channel> channel, bool read = true) : stub_(v1::Vertical::NewStub(channel)) {
    stream_ = stub_->Exchange(&context_);
    if (read) StartReading();
  }
  ~PartyStream() {
    context_.TryCancel();
    if (reader_.joinable()) reader_.join();
  }
  void StartReading() {
    reader_ = std::thread([this] {
      v1::VerticalMessage m;
      while (stream_->Read(&m)) {
        std::lock_guard lock(mu_);
        received_.push_back(m);
        cv_.notify_all();
      }
      grpc::Status status = stream_->Finish();
      std::lock_guard lock(mu_);
      status_ = status;
      cv_.notify_all();
    });
  }
  bool Send(const v1::VerticalMessage& m) { return stream_->Write(m); }
  // The next message, or nullopt after `wait`.
  std::optional<v1::VerticalMessage> Next(milliseconds wait = milliseconds(10000)) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, wait, [this] { return !received_.empty(); })) return std::nullopt;
    v1::VerticalMessage m = std::move(received_.front());
    received_.pop_front();
    return m;
  }
  // The next control message, skipping others; its kind is KIND_UNSPECIFIED on timeout.
  v1::VerticalControl NextControl(milliseconds wait = milliseconds(10000)) {
    const auto until = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < until) {
      std::optional<v1::VerticalMessage> m =
          Next(std::chrono::duration_cast<milliseconds>(until - std::chrono::steady_clock::now()));
      if (m && m->has_control()) return m->control();
    }
    return {};
  }
  // The stream's end status, once the server ended it.
  std::optional<grpc::Status> Ended(milliseconds wait = milliseconds(10000)) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, wait, [this] { return status_.has_value(); });
    return status_;
  }
  void Close() { context_.TryCancel(); }

 private:
  std::unique_ptr<v1::Vertical::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::VerticalMessage, v1::VerticalMessage>> stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::VerticalMessage> received_;
  std::optional<grpc::Status> status_;
};

v1::VerticalMessage Hello(const std::string& party, const std::string& key, int64_t features, bool labels,
                          const std::string& id_column = "id", int64_t rows = 100) {
  v1::VerticalMessage m;
  v1::PartyHello* h = m.mutable_hello();
  h->mutable_introduction()->set_party(party);
  h->mutable_introduction()->set_public_key(key);
  h->mutable_introduction()->set_signature("not checked by the server");
  h->set_id_column(id_column);
  h->add_feature_shape(features);
  h->set_rows(rows);
  h->set_has_labels(labels);
  h->set_num_classes(labels ? 2 : 0);
  return m;
}

v1::VerticalMessage Relay(const std::string& to, const std::string& topic, uint64_t sequence, const std::string& bytes) {
  v1::VerticalMessage m;
  v1::Relay* r = m.mutable_relay();
  r->set_peer(to);
  r->set_topic(topic);
  r->set_sequence(sequence);
  r->set_chunk_index(0);
  r->set_chunk_count(1);
  r->set_sealed(bytes);
  return m;
}

v1::VerticalMessage Report(v1::PartyReport::Stage stage) {
  v1::VerticalMessage m;
  m.mutable_report()->set_stage(stage);
  return m;
}

const std::string kBankKey(32, 'b'), kClinicKey(32, 'c');

class VerticalServer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/cohort-vertical-test-XXXXXX";
    pki_ = new std::filesystem::path(::mkdtemp(dir_template));
    crypto::FederationSpec spec;
    spec.federation = "vfl";
    spec.server_host = "127.0.0.1";
    spec.participants = {{"bank", crypto::Role::kSite}, {"clinic", crypto::Role::kSite}, {"outsider", crypto::Role::kSite}};
    ASSERT_TRUE(crypto::ProvisionFederation(spec, *pki_).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*pki_);
    delete pki_;
  }

  // bank (label party, 4 features) and clinic (15 features).
  static core::JobConfig Config(double party_timeout_s = 30) {
    core::JobConfig config;
    config.job_type = "vertical";
    config.name = "vjob";
    config.seed = 7;
    config.vertical.label_party = "bank";
    config.vertical.epochs = 2;
    config.vertical.party_timeout_s = party_timeout_s;
    config.vertical.top_model = {{"input_shape", {16}}, {"num_classes", 2}};
    config.vertical.parties = {{"bank", {{"input_shape", {4}}}, nlohmann::json::object()},
                               {"clinic", {{"input_shape", {15}}}, nlohmann::json::object()}};
    return config;
  }

  void Serve(core::JobConfig config, size_t max_queued_bytes = size_t{64} << 20) {
    char dir_template[] = "/tmp/cohort-vertical-out-XXXXXX";
    out_ = ::mkdtemp(dir_template);
    crypto::SigningKey key = crypto::SigningKey::Generate();
    audit_public_ = key.public_key();
    audit_ = std::move(*audit::Writer::Open(out_ / "audit.log", std::move(key)));
    VerticalJobOptions options;
    options.config = std::move(config);
    options.out_dir = out_;
    options.audit = audit_.get();
    options.max_queued_bytes = max_queued_bytes;
    options.drain_timeout = milliseconds(500);
    absl::StatusOr<std::unique_ptr<VerticalJob>> job = VerticalJob::Create(std::move(options));
    ASSERT_TRUE(job.ok()) << job.status();
    job_ = std::move(*job);
    absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(*pki_ / "server");
    ASSERT_TRUE(kit.ok());
    auto bound = std::make_shared<std::promise<int>>();
    std::future<int> port = bound->get_future();
    ServerOptions server;
    server.listen_address = "127.0.0.1:0";
    server.linger_seconds = 0;
    server.credentials = wire::ServerCredentialsFromKit(*kit, *pki_ / "server");
    server.on_listening = [bound](int p) { bound->set_value(p); };
    serving_ = std::async(std::launch::async, [this, server] { return ServeVerticalJob(*job_, server); });
    ASSERT_EQ(port.wait_for(seconds(20)), std::future_status::ready);
    port_ = port.get();
  }
  void TearDown() override {
    if (job_) job_->Cancel("the test ended");
    if (serving_.valid()) serving_.wait();
    job_.reset();
    audit_.reset();
    if (!out_.empty()) std::filesystem::remove_all(out_);
  }

  // `read` false: nothing is read until StartReading, and the channel's window is small,
  // so the transport soon stops taking the server's writes.
  std::unique_ptr<PartyStream> Connect(const std::string& kit_name, bool read = true) {
    absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(*pki_ / kit_name);
    EXPECT_TRUE(kit.ok());
    grpc::ChannelArguments args;
    wire::ApplyChunkStreamSettings(args);
    if (!read) args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
    auto channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port_),
                                             wire::ChannelCredentialsFromKit(*kit), args);
    return std::make_unique<PartyStream>(channel, read);
  }
  // bank and clinic say hello; each receives its VerticalStart.
  void StartBoth(std::unique_ptr<PartyStream>& bank, std::unique_ptr<PartyStream>& clinic) {
    bank = Connect("bank");
    clinic = Connect("clinic");
    ASSERT_TRUE(bank->Send(Hello("bank", kBankKey, 4, true)));
    ASSERT_TRUE(clinic->Send(Hello("clinic", kClinicKey, 15, false)));
    for (PartyStream* p : {bank.get(), clinic.get()}) {
      std::optional<v1::VerticalMessage> start = p->Next();
      ASSERT_TRUE(start && start->has_start());
    }
  }
  absl::Status Result() {
    EXPECT_EQ(serving_.wait_for(seconds(20)), std::future_status::ready);
    return serving_.get();
  }
  std::vector<audit::Entry> AuditEntries() {
    absl::StatusOr<audit::ReadResult> read = audit::ReadEntries(out_ / "audit.log");
    EXPECT_TRUE(read.ok());
    return read.ok() ? read->entries : std::vector<audit::Entry>{};
  }
  static std::string ReadText(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  static std::filesystem::path* pki_;
  std::filesystem::path out_;
  std::optional<crypto::SigningPublicKey> audit_public_;
  std::unique_ptr<audit::Writer> audit_;
  std::unique_ptr<VerticalJob> job_;
  std::future<absl::Status> serving_;
  int port_ = 0;
};
std::filesystem::path* VerticalServer::pki_ = nullptr;

TEST_F(VerticalServer, AHelloThatDoesNotFitTheJobAbortsItNamingTheParty) {
  struct Case {
    v1::VerticalMessage clinic_hello;
    std::string message;
  };
  const std::vector<Case> cases = {
      {Hello("clinic", kClinicKey, 15, false, "patient_id"),
       "party \"clinic\" uses identifier column \"patient_id\" but the job says \"id\""},
      {Hello("clinic", kClinicKey, 14, false), "party \"clinic\" has 14 feature columns but its bottom_model.input_shape says 15"},
      {Hello("clinic", kClinicKey, 15, true), "party \"clinic\" holds labels, but the job's label party is \"bank\""},
      {Hello("clinic", kClinicKey, 15, false, "id", 0), "party \"clinic\" has no rows"},
  };
  for (const Case& c : cases) {
    Serve(Config());
    auto bank = Connect("bank");
    ASSERT_TRUE(bank->Send(Hello("bank", kBankKey, 4, true)));
    auto clinic = Connect("clinic");
    ASSERT_TRUE(clinic->Send(c.clinic_hello));
    const v1::VerticalControl to_clinic = clinic->NextControl();
    EXPECT_EQ(to_clinic.kind(), v1::VerticalControl::ABORT);
    EXPECT_THAT(to_clinic.reason(), HasSubstr(c.message));
    const v1::VerticalControl to_bank = bank->NextControl();
    EXPECT_EQ(to_bank.kind(), v1::VerticalControl::ABORT);
    EXPECT_THAT(to_bank.reason(), HasSubstr(c.message));
    const absl::Status result = Result();
    EXPECT_THAT(std::string(result.message()), HasSubstr(c.message));
    const std::vector<audit::Entry> entries = AuditEntries();
    ASSERT_FALSE(entries.empty());
    EXPECT_EQ(entries.back().action, audit::action::kJobEnd);
    EXPECT_EQ(entries.back().new_value["state"], "failed");
    EXPECT_THAT(entries.back().reason.value_or(""), HasSubstr(c.message));
    TearDown();
  }
}

TEST_F(VerticalServer, TheLabelPartyWithoutLabelsAbortsTheJob) {
  Serve(Config());
  auto bank = Connect("bank");
  ASSERT_TRUE(bank->Send(Hello("bank", kBankKey, 4, false)));
  const v1::VerticalControl c = bank->NextControl();
  EXPECT_EQ(c.kind(), v1::VerticalControl::ABORT);
  EXPECT_THAT(c.reason(), HasSubstr("party \"bank\" is the label party"));
}

TEST_F(VerticalServer, OutsidersAndImpostorsAreRefusedAndTheJobGoesOn) {
  Serve(Config());
  auto outsider = Connect("outsider");
  ASSERT_TRUE(outsider->Send(Hello("outsider", std::string(32, 'o'), 15, false)));
  v1::VerticalControl c = outsider->NextControl();
  EXPECT_EQ(c.kind(), v1::VerticalControl::ABORT);
  EXPECT_THAT(c.reason(), HasSubstr("party \"outsider\" is not a party of job vjob"));
  std::optional<grpc::Status> ended = outsider->Ended();
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended->error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // clinic's certificate claiming to be bank.
  auto impostor = Connect("clinic");
  ASSERT_TRUE(impostor->Send(Hello("bank", kBankKey, 4, true)));
  c = impostor->NextControl();
  EXPECT_EQ(c.kind(), v1::VerticalControl::ABORT);
  EXPECT_THAT(c.reason(), HasSubstr("the certificate of \"clinic\" cannot introduce itself as \"bank\""));

  // The real parties still start, each with its own part of the job.
  std::unique_ptr<PartyStream> bank = Connect("bank"), clinic = Connect("clinic");
  ASSERT_TRUE(bank->Send(Hello("bank", kBankKey, 4, true)));
  ASSERT_TRUE(clinic->Send(Hello("clinic", kClinicKey, 15, false)));
  std::optional<v1::VerticalMessage> bank_start = bank->Next(), clinic_start = clinic->Next();
  ASSERT_TRUE(bank_start && bank_start->has_start());
  ASSERT_TRUE(clinic_start && clinic_start->has_start());
  const v1::VerticalStart& b = bank_start->start();
  EXPECT_EQ(b.job(), "vjob");
  EXPECT_EQ(b.seed(), 7u);
  EXPECT_THAT(b.parties(), ::testing::ElementsAre("bank", "clinic"));
  EXPECT_EQ(b.label_party(), "bank");
  ASSERT_EQ(b.introductions_size(), 2);
  EXPECT_EQ(b.introductions(1).public_key(), kClinicKey);
  EXPECT_EQ(nlohmann::json::parse(b.bottom_model_json())["input_shape"], nlohmann::json({4}));
  EXPECT_FALSE(b.top_model_json().empty());
  EXPECT_EQ(b.epochs(), 2);
  EXPECT_TRUE(clinic_start->start().top_model_json().empty());  // the top model is the label party's only
  EXPECT_EQ(nlohmann::json::parse(clinic_start->start().bottom_model_json())["input_shape"], nlohmann::json({15}));

  int denied = 0;
  for (const audit::Entry& e : AuditEntries()) denied += e.action == audit::action::kAccessDenied;
  EXPECT_EQ(denied, 2);
}

TEST_F(VerticalServer, RelaysReachTheirPeerWithTheSenderStampedFromTheCertificate) {
  Serve(Config());
  std::unique_ptr<PartyStream> bank, clinic;
  StartBoth(bank, clinic);
  // clinic addresses bank; whatever it could claim, bank sees the relay as clinic's.
  ASSERT_TRUE(clinic->Send(Relay("bank", "psi/final", 3, "sealed-bytes")));
  std::optional<v1::VerticalMessage> got = bank->Next();
  ASSERT_TRUE(got && got->has_relay());
  EXPECT_EQ(got->relay().peer(), "clinic");
  EXPECT_EQ(got->relay().topic(), "psi/final");
  EXPECT_EQ(got->relay().sequence(), 3u);
  EXPECT_EQ(got->relay().sealed(), "sealed-bytes");
  ASSERT_TRUE(bank->Send(Relay("clinic", "psi/result", 0, "back")));
  got = clinic->Next();
  ASSERT_TRUE(got && got->has_relay());
  EXPECT_EQ(got->relay().peer(), "bank");

  // A relay to a party that is not in the job (or to itself) ends the sender's stream.
  ASSERT_TRUE(clinic->Send(Relay("outsider", "psi/final", 4, "x")));
  std::optional<grpc::Status> ended = clinic->Ended();
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended->error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(ended->error_message(), HasSubstr("\"outsider\": not another party of job vjob"));
}

TEST_F(VerticalServer, ARelayBeforeTheStartIsRefused) {
  Serve(Config());
  auto bank = Connect("bank");
  ASSERT_TRUE(bank->Send(Hello("bank", kBankKey, 4, true)));
  ASSERT_TRUE(bank->Send(Relay("clinic", "psi/ring/0", 1, "x")));
  std::optional<grpc::Status> ended = bank->Ended();
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended->error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(ended->error_message(), HasSubstr("party \"bank\" sent a relay before the job started"));
}

TEST_F(VerticalServer, APartyThatReturnsWithItsKeyResumesAndGetsWhatWasQueued) {
  Serve(Config());
  std::unique_ptr<PartyStream> bank, clinic;
  StartBoth(bank, clinic);
  clinic.reset();  // its stream breaks
  v1::VerticalControl pause = bank->NextControl();
  EXPECT_EQ(pause.kind(), v1::VerticalControl::PAUSE);
  EXPECT_THAT(pause.reason(), HasSubstr("party \"clinic\" disconnected"));
  ASSERT_TRUE(bank->Send(Relay("clinic", "split/grad", 5, "queued while gone")));

  clinic = Connect("clinic");
  ASSERT_TRUE(clinic->Send(Hello("clinic", kClinicKey, 15, false)));
  std::optional<v1::VerticalMessage> first = clinic->Next();
  ASSERT_TRUE(first && first->has_control());
  EXPECT_EQ(first->control().kind(), v1::VerticalControl::RESUME);
  // Delivery is at least once: a message whose write had not completed when the stream
  // broke (here, possibly the START) comes again; parties drop what they already have.
  std::optional<v1::VerticalMessage> queued = clinic->Next();
  if (queued && queued->has_start()) queued = clinic->Next();
  ASSERT_TRUE(queued && queued->has_relay()) << (queued ? queued->ShortDebugString() : std::string("nothing"));
  EXPECT_EQ(queued->relay().sealed(), "queued while gone");
  EXPECT_EQ(queued->relay().peer(), "bank");
  EXPECT_EQ(bank->NextControl().kind(), v1::VerticalControl::RESUME);
}

TEST_F(VerticalServer, APartyThatReturnsWithANewKeyAbortsTheJob) {
  Serve(Config());
  std::unique_ptr<PartyStream> bank, clinic;
  StartBoth(bank, clinic);
  clinic.reset();
  EXPECT_EQ(bank->NextControl().kind(), v1::VerticalControl::PAUSE);
  clinic = Connect("clinic");
  ASSERT_TRUE(clinic->Send(Hello("clinic", std::string(32, 'n'), 15, false)));
  const std::string why = "party \"clinic\" restarted and lost its training state; start the job again";
  v1::VerticalControl c = clinic->NextControl();
  EXPECT_EQ(c.kind(), v1::VerticalControl::ABORT);
  EXPECT_EQ(c.reason(), why);
  c = bank->NextControl();
  EXPECT_EQ(c.kind(), v1::VerticalControl::ABORT);
  EXPECT_EQ(c.reason(), why);
  EXPECT_EQ(Result().message(), why);
}

TEST_F(VerticalServer, APartyGoneLongerThanItsTimeoutFailsTheJob) {
  Serve(Config(/*party_timeout_s=*/1));
  std::unique_ptr<PartyStream> bank, clinic;
  StartBoth(bank, clinic);
  clinic.reset();
  EXPECT_EQ(bank->NextControl().kind(), v1::VerticalControl::PAUSE);
  const v1::VerticalControl c = bank->NextControl(milliseconds(5000));
  EXPECT_EQ(c.kind(), v1::VerticalControl::ABORT);
  EXPECT_EQ(c.reason(), "party \"clinic\" has been gone for 1 s (vertical.party_timeout_s)");
  EXPECT_EQ(Result().code(), absl::StatusCode::kAborted);
}

TEST_F(VerticalServer, PartiesThatNeverSayHelloFailTheJobNamingThem) {
  Serve(Config(/*party_timeout_s=*/1));
  auto bank = Connect("bank");
  ASSERT_TRUE(bank->Send(Hello("bank", kBankKey, 4, true)));
  const v1::VerticalControl c = bank->NextControl(milliseconds(5000));
  EXPECT_EQ(c.kind(), v1::VerticalControl::ABORT);
  EXPECT_EQ(c.reason(), "parties \"clinic\" did not say hello within 1 s (vertical.party_timeout_s)");
}

TEST_F(VerticalServer, AFullQueueHoldsTheSenderAndEveryRelayArrivesInOrder) {
  // 32 KiB queue bound, 128 relays of 16 KiB (2 MiB) to a party that reads late.
  Serve(Config(), /*max_queued_bytes=*/32 << 10);
  auto bank = Connect("bank");
  auto clinic = Connect("clinic", /*read=*/false);
  ASSERT_TRUE(bank->Send(Hello("bank", kBankKey, 4, true)));
  ASSERT_TRUE(clinic->Send(Hello("clinic", kClinicKey, 15, false)));
  ASSERT_TRUE(bank->Next()->has_start());
  std::thread sender([&] {
    for (uint64_t i = 0; i < 128; ++i) ASSERT_TRUE(bank->Send(Relay("clinic", "split/grad", i, std::string(16 << 10, 'g'))));
  });
  std::this_thread::sleep_for(milliseconds(500));
  clinic->StartReading();
  ASSERT_TRUE(clinic->Next()->has_start());
  for (uint64_t i = 0; i < 128; ++i) {
    std::optional<v1::VerticalMessage> m = clinic->Next();
    ASSERT_TRUE(m && m->has_relay()) << i;
    EXPECT_EQ(m->relay().sequence(), i);
  }
  sender.join();
  // bank's reads waited at least once for clinic's queue.
  EXPECT_GT(job_->Summary()["parties"][0]["flow_control_holds"].get<uint64_t>(), 0u);
}

TEST_F(VerticalServer, ReportsAreRecordedAsSizesAndMetricsAndFinishEndsTheJob) {
  Serve(Config());
  std::unique_ptr<PartyStream> bank, clinic;
  StartBoth(bank, clinic);
  const std::string payload = "PAYLOAD-THE-SERVER-MUST-NOT-RECORD";
  ASSERT_TRUE(clinic->Send(Relay("bank", "psi/final", 0, payload)));
  ASSERT_TRUE(bank->Next()->has_relay());
  v1::VerticalMessage psi = Report(v1::PartyReport::PSI_DONE);
  psi.mutable_report()->set_set_size(100);
  psi.mutable_report()->set_intersection_size(80);
  ASSERT_TRUE(bank->Send(psi));
  psi.mutable_report()->set_set_size(90);
  ASSERT_TRUE(clinic->Send(psi));
  // As in a real run, the label party's epochs come after clinic's PSI report (clinic's
  // stream is in order: its report, then a relay bank waits for).
  ASSERT_TRUE(clinic->Send(Relay("bank", "split/fwd", 0, "outputs")));
  ASSERT_TRUE(bank->Next()->has_relay());
  for (int epoch = 1; epoch <= 2; ++epoch) {
    v1::VerticalMessage e = Report(v1::PartyReport::EPOCH_DONE);
    e.mutable_report()->set_epoch(epoch);
    e.mutable_report()->set_train_loss(0.5 / epoch);
    e.mutable_report()->set_eval_accuracy(0.9 + 0.01 * epoch);
    e.mutable_report()->set_train_rows(64);
    e.mutable_report()->set_eval_rows(16);
    ASSERT_TRUE(bank->Send(e));
  }
  ASSERT_TRUE(clinic->Send(Report(v1::PartyReport::FINISHED)));
  ASSERT_TRUE(bank->Send(Report(v1::PartyReport::FINISHED)));
  EXPECT_EQ(bank->NextControl().kind(), v1::VerticalControl::FINISH);
  EXPECT_EQ(clinic->NextControl().kind(), v1::VerticalControl::FINISH);
  ASSERT_TRUE(Result().ok());

  const std::string summary_text = ReadText(out_ / "summary.json");
  const nlohmann::json summary = nlohmann::json::parse(summary_text);
  EXPECT_EQ(summary["status"], "finished");
  EXPECT_EQ(summary["intersection_size"], 80);
  ASSERT_EQ(summary["epochs"].size(), 2u);
  EXPECT_DOUBLE_EQ(summary["epochs"][1]["eval_accuracy"].get<double>(), 0.92);
  EXPECT_EQ(summary["parties"][1]["set_size"], 90);
  EXPECT_EQ(summary["parties"][1]["bytes_sent"], payload.size() + std::string("outputs").size());
  EXPECT_EQ(summary["parties"][1]["relays_sent"], 2);

  std::vector<std::string> actions;
  for (const audit::Entry& e : AuditEntries()) actions.push_back(e.action);
  EXPECT_THAT(actions, ::testing::ElementsAre("job.create", "vertical.start", "vertical.psi", "vertical.epoch",
                                              "vertical.epoch", "job.end"));
  const std::vector<audit::Entry> entries = AuditEntries();
  EXPECT_EQ(entries[2].new_value["set_sizes"]["clinic"], 90);
  EXPECT_EQ(entries[2].new_value["intersection_size"], 80);
  EXPECT_EQ(entries.back().new_value["state"], "finished");
  absl::StatusOr<audit::ChainVerification> verified =
      audit::VerifyAuditChain(out_ / "audit.log", *audit_public_, audit_->head_hash(), audit_->entry_count());
  ASSERT_TRUE(verified.ok());
  EXPECT_FALSE(verified->failure.has_value());
  // Sizes only: the relayed bytes are nowhere in the record.
  EXPECT_EQ(ReadText(out_ / "audit.log").find(payload), std::string::npos);
  EXPECT_EQ(summary_text.find(payload), std::string::npos);
}

TEST_F(VerticalServer, APartyThatFailsAbortsTheJobWithItsError) {
  Serve(Config());
  std::unique_ptr<PartyStream> bank, clinic;
  StartBoth(bank, clinic);
  v1::VerticalMessage failed = Report(v1::PartyReport::FAILED);
  failed.mutable_report()->set_error("the parties share no identifiers");
  ASSERT_TRUE(bank->Send(failed));
  const v1::VerticalControl c = clinic->NextControl();
  EXPECT_EQ(c.kind(), v1::VerticalControl::ABORT);
  EXPECT_EQ(c.reason(), "party \"bank\" failed: the parties share no identifiers");
  EXPECT_EQ(Result().message(), "party \"bank\" failed: the parties share no identifiers");
  EXPECT_EQ(nlohmann::json::parse(ReadText(out_ / "summary.json"))["status"], "failed");
}

}  // namespace
}  // namespace cohort::server
