#include "crypto/party_channel.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "crypto/provisioning.h"
#include "tests/temp_dir.h"

namespace cohort::crypto {
namespace {

namespace fs = std::filesystem;
using cohort::testing::TempDir;

constexpr std::string_view kJob = "vertical-job";

std::vector<std::uint8_t> Bytes(std::string_view text) { return {text.begin(), text.end()}; }

// A real federation (CA, server and sites A, B, C), provisioned once for the suite.
class PartyChannelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    kits_ = new std::vector<StartupKit>();
    ASSERT_NO_FATAL_FAILURE(Provision(dir_->path() / "fed", {"A", "B", "C"}));
    for (const char* kit : {"fed/A", "fed/B", "fed/C", "fed/server"}) {
      auto loaded = LoadStartupKit(dir_->path() / kit);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      kits_->push_back(std::move(*loaded));
    }
  }
  static void Provision(const fs::path& out, const std::vector<std::string>& sites) {
    FederationSpec spec;
    spec.federation = "hospitals";
    spec.server_host = "localhost";
    for (const std::string& site : sites) spec.participants.push_back({site, Role::kSite});
    auto provisioned = ProvisionFederation(spec, out);
    ASSERT_TRUE(provisioned.ok()) << provisioned.status();
  }
  static void TearDownTestSuite() {
    delete kits_;
    delete dir_;
  }

  static const StartupKit& A() { return (*kits_)[0]; }
  static const StartupKit& B() { return (*kits_)[1]; }
  static const StartupKit& C() { return (*kits_)[2]; }
  static const StartupKit& Server() { return (*kits_)[3]; }
  static const std::string& Ca() { return A().ca_pem; }

  static PartyIntroduction Introduce(const StartupKit& kit, const X25519KeyPair& keys) {
    auto introduction = IntroduceParty(kit, kJob, keys);
    EXPECT_TRUE(introduction.ok()) << introduction.status();
    return introduction.ok() ? std::move(*introduction) : PartyIntroduction{};
  }

  static void ExpectRefused(const PartyIntroduction& introduction, std::string_view expected_party,
                            std::string_view reason, std::string_view job = kJob,
                            std::string_view ca = Ca()) {
    absl::Status status = VerifyPartyIntroduction(introduction, ca, job, expected_party);
    EXPECT_TRUE(absl::IsPermissionDenied(status)) << status;
    EXPECT_NE(std::string(status.message()).find(reason), std::string::npos) << status;
  }

  // Channels A<->B (both ends) and C->A, each from verified introductions.
  void Connect() {
    const PartyIntroduction a = Introduce(A(), a_keys_), b = Introduce(B(), b_keys_),
                            c = Introduce(C(), c_keys_);
    ASSERT_TRUE(VerifyPartyIntroduction(b, Ca(), kJob, "B").ok());
    ASSERT_TRUE(VerifyPartyIntroduction(a, Ca(), kJob, "A").ok());
    ASSERT_TRUE(VerifyPartyIntroduction(c, Ca(), kJob, "C").ok());
    auto a_to_b = PartyChannel::Agree(kJob, "A", a_keys_, b);
    auto b_to_a = PartyChannel::Agree(kJob, "B", b_keys_, a);
    auto c_to_a = PartyChannel::Agree(kJob, "C", c_keys_, a);
    ASSERT_TRUE(a_to_b.ok() && b_to_a.ok() && c_to_a.ok());
    a_to_b_.emplace_back(std::move(*a_to_b));
    b_to_a_.emplace_back(std::move(*b_to_a));
    c_to_a_.emplace_back(std::move(*c_to_a));
  }
  PartyChannel& AtA() { return a_to_b_.front(); }
  PartyChannel& AtB() { return b_to_a_.front(); }
  PartyChannel& AtC() { return c_to_a_.front(); }

  static TempDir* dir_;
  static std::vector<StartupKit>* kits_;
  X25519KeyPair a_keys_ = GenerateX25519KeyPair(), b_keys_ = GenerateX25519KeyPair(),
                c_keys_ = GenerateX25519KeyPair();
  // PartyChannel has no default constructor: held in vectors of one.
  std::vector<PartyChannel> a_to_b_, b_to_a_, c_to_a_;
};

TempDir* PartyChannelTest::dir_ = nullptr;
std::vector<StartupKit>* PartyChannelTest::kits_ = nullptr;

TEST_F(PartyChannelTest, IntroductionsVerifyAndAMessageRoundTripsBothWays) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  EXPECT_EQ(AtA().peer(), "B");
  const std::vector<std::uint8_t> activations = Bytes("activations of batch 7");
  auto sealed = AtA().Seal("split/fwd", 7, activations);
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(sealed->size(), activations.size() + 28);
  auto opened = AtB().Open("split/fwd", 7, *sealed);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, activations);

  auto reply = AtB().Seal("split/bwd", 7, Bytes("gradients"));
  ASSERT_TRUE(reply.ok());
  auto reply_opened = AtA().Open("split/bwd", 7, *reply);
  ASSERT_TRUE(reply_opened.ok()) << reply_opened.status();
  EXPECT_EQ(*reply_opened, Bytes("gradients"));

  auto empty = AtA().Seal("psi/ring/0/1", 0, {});
  ASSERT_TRUE(empty.ok());
  auto empty_opened = AtB().Open("psi/ring/0/1", 0, *empty);
  ASSERT_TRUE(empty_opened.ok()) << empty_opened.status();
  EXPECT_TRUE(empty_opened->empty());
}

TEST_F(PartyChannelTest, EverySealDrawsAFreshNonce) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  auto first = AtA().Seal("split/fwd", 1, Bytes("same"));
  auto second = AtA().Seal("split/fwd", 1, Bytes("same"));
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(*first, *second);
}

TEST_F(PartyChannelTest, AMessageOpensOnlyAsTheMessageItWasSealedAs) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  auto sealed = AtA().Seal("split/fwd", 3, Bytes("row activations"));
  ASSERT_TRUE(sealed.ok());
  // Replayed under another sequence number, or retitled as another topic.
  EXPECT_TRUE(absl::IsDataLoss(AtB().Open("split/fwd", 4, *sealed).status()));
  EXPECT_TRUE(absl::IsDataLoss(AtB().Open("split/bwd", 3, *sealed).status()));
  // Redirected to a third party (C has its own channel with A), or reflected to A.
  EXPECT_TRUE(absl::IsDataLoss(AtC().Open("split/fwd", 3, *sealed).status()));
  EXPECT_TRUE(absl::IsDataLoss(AtA().Open("split/fwd", 3, *sealed).status()));
  // Any flipped bit: nonce, ciphertext, tag.
  for (std::size_t at : {std::size_t{0}, std::size_t{11}, std::size_t{12}, sealed->size() - 17,
                         sealed->size() - 1}) {
    std::vector<std::uint8_t> altered = *sealed;
    altered[at] ^= 0x20;
    auto opened = AtB().Open("split/fwd", 3, altered);
    EXPECT_TRUE(absl::IsDataLoss(opened.status())) << "bit flipped at byte " << at;
  }
  auto truncated = AtB().Open("split/fwd", 3, std::span(*sealed).first(27));
  EXPECT_TRUE(absl::IsDataLoss(truncated.status())) << truncated.status();
  auto status = AtB().Open("split/fwd", 4, *sealed).status();
  EXPECT_NE(status.message().find("\"A\""), std::string::npos) << status;
  // The untouched message still opens where it was meant to.
  EXPECT_TRUE(AtB().Open("split/fwd", 3, *sealed).ok());
}

TEST_F(PartyChannelTest, AKeySubstitutedByTheServerIsRefused) {
  PartyIntroduction a = Introduce(A(), a_keys_);
  const X25519KeyPair server_keys = GenerateX25519KeyPair();
  a.public_key = server_keys.public_key;
  ExpectRefused(a, "A", "signature");
}

TEST_F(PartyChannelTest, AnAlteredOrMissingSignatureIsRefused) {
  PartyIntroduction a = Introduce(A(), a_keys_);
  a.signature.back() ^= 0x01;
  ExpectRefused(a, "A", "signature");
  a.signature.clear();
  ExpectRefused(a, "A", "signature");
}

TEST_F(PartyChannelTest, ACertificateFromAnotherCaIsRefused) {
  // A's genuine introduction checked by a party of another federation, and the other
  // federation's A checked by a party of this one.
  // Another provisioning of the same federation name: its CA also issued a site named A.
  TempDir other_dir;
  ASSERT_NO_FATAL_FAILURE(Provision(other_dir.path() / "other", {"A"}));
  auto other_a = LoadStartupKit(other_dir.path() / "other" / "A");
  ASSERT_TRUE(other_a.ok()) << other_a.status();
  ExpectRefused(Introduce(A(), a_keys_), "A", "certificate chain", kJob, other_a->ca_pem);
  ExpectRefused(Introduce(*other_a, a_keys_), "A", "certificate chain");
}

TEST_F(PartyChannelTest, ACertificateOfAnotherNameIsRefused) {
  // B signs an introduction that claims to be A's, with B's own certificate.
  StartupKit b_as_a{.federation = B().federation,
                    .name = "A",
                    .role = B().role,
                    .server_address = B().server_address,
                    .certificate_pem = B().certificate_pem,
                    .private_key_pem = B().private_key_pem.Clone(),
                    .ca_pem = B().ca_pem,
                    .crl_pem = B().crl_pem};
  ExpectRefused(Introduce(b_as_a, b_keys_), "A", "its certificate names \"B\"");
  // B's genuine introduction relayed as A's.
  ExpectRefused(Introduce(B(), b_keys_), "A", "relayed as the introduction of party \"A\"");
}

TEST_F(PartyChannelTest, TheServersCertificateIsNotAParty) {
  ExpectRefused(Introduce(Server(), b_keys_), "server", "role server");
}

TEST_F(PartyChannelTest, AnIntroductionForAnotherJobIsRefused) {
  PartyIntroduction a = Introduce(A(), a_keys_);
  ExpectRefused(a, "A", "is for job", "another-job");
  // Retitling it as the other job breaks the signature, which binds the job.
  a.job = "another-job";
  ExpectRefused(a, "A", "signature", "another-job");
}

TEST_F(PartyChannelTest, AgreeRefusesALowOrderKeyAndAChannelWithItself) {
  PartyIntroduction b = Introduce(B(), b_keys_);
  b.public_key = X25519PublicKey{};  // u = 0 is a low-order point: the shared secret is 0.
  EXPECT_TRUE(absl::IsFailedPrecondition(PartyChannel::Agree(kJob, "A", a_keys_, b).status()));
  const PartyIntroduction a = Introduce(A(), a_keys_);
  EXPECT_TRUE(absl::IsInvalidArgument(PartyChannel::Agree(kJob, "A", b_keys_, a).status()));
}

TEST_F(PartyChannelTest, KeysAreBoundToTheJob) {
  // The same two key pairs agreed for two jobs: a message of one does not open in the other.
  auto b_other_job = IntroduceParty(B(), "another-job", b_keys_);
  auto a_other_job = IntroduceParty(A(), "another-job", a_keys_);
  ASSERT_TRUE(b_other_job.ok() && a_other_job.ok());
  auto at_a = PartyChannel::Agree(kJob, "A", a_keys_, Introduce(B(), b_keys_));
  auto at_b = PartyChannel::Agree("another-job", "B", b_keys_, *a_other_job);
  ASSERT_TRUE(at_a.ok() && at_b.ok());
  auto sealed = at_a->Seal("split/fwd", 1, Bytes("x"));
  ASSERT_TRUE(sealed.ok());
  EXPECT_TRUE(absl::IsDataLoss(at_b->Open("split/fwd", 1, *sealed).status()));
  // The introductions' scope does not matter to the keys: `job` given to Agree does.
  auto at_b_this_job = PartyChannel::Agree(kJob, "B", b_keys_, *a_other_job);
  ASSERT_TRUE(at_b_this_job.ok()) << at_b_this_job.status();
  EXPECT_TRUE(at_b_this_job->Open("split/fwd", 1, *sealed).ok());
}

}  // namespace
}  // namespace cohort::crypto
