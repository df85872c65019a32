// One fork-and-kill crash test for each user of the storage layer: checkpoints
// (core::WriteCheckpoint), key files and startup kits (crypto), the audit writer and
// the privacy ledger. Each kills a writing child at many seeded random moments and
// checks what it left: an atomic file is entirely one complete version (the last
// acknowledged or the one in flight), never a mix, and nothing but hidden temporaries
// besides it; a log reopens, verifies, and holds every entry acknowledged before the kill.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "audit/reader.h"
#include "audit/writer.h"
#include "core/checkpoint.h"
#include "crypto/signing.h"
#include "crypto/startup_kit.h"
#include "privacy/ledger.h"
#include "storage/atomic_write.h"
#include "tests/storage/crash_harness.h"
#include "tests/storage/test_util.h"
#include "tests/temp_dir.h"

namespace cohort::storage {
namespace {

namespace fs = std::filesystem;
using cohort::testing::TempDir;
using testing::Acknowledger;
using testing::CrashRun;
using testing::RunUntilKilled;

constexpr std::uint32_t kSeed = 20240501;

// A kill moment: after 1 to 3 acknowledged writes, then 0 to 3 ms more.
struct KillPoint {
  std::size_t min_acks;
  std::chrono::microseconds delay;
};
KillPoint NextKillPoint(std::mt19937& rng) {
  return {std::uniform_int_distribution<std::size_t>(1, 3)(rng),
          std::chrono::microseconds(std::uniform_int_distribution<int>(0, 3000)(rng))};
}

// Checks the run ended by the kill and returns the last value acknowledged in it.
std::uint64_t LastAcknowledged(const CrashRun& run, int iteration) {
  EXPECT_TRUE(run.killed) << "iteration " << iteration << ": the child exited with "
                          << run.exit_code << " before it was killed";
  EXPECT_FALSE(run.acknowledged.empty()) << "iteration " << iteration << ": nothing acknowledged";
  return run.acknowledged.empty() ? 0 : run.acknowledged.back();
}

// Removes the hidden temporaries a killed atomic write may leave, after checking that
// nothing else but `expected` is in `dir`. Returns how many were removed.
int RemoveLeftoverTemporaries(const fs::path& dir, const std::vector<std::string>& expected) {
  int removed = 0;
  for (const std::string& name : testing::EntriesOf(dir)) {
    if (std::find(expected.begin(), expected.end(), name) != expected.end()) continue;
    bool hidden_temporary = false;
    for (const std::string& final_name : expected) {
      hidden_temporary |= name.rfind(TemporaryNamePrefix(dir / final_name), 0) == 0;
    }
    EXPECT_TRUE(hidden_temporary) << "unexpected file " << name << " in " << dir;
    fs::remove(dir / name);
    ++removed;
  }
  return removed;
}

// ---------------------------------------------------------------- checkpoints

core::ParameterSet ModelOfVersion(std::uint64_t version) {
  core::ParameterSet model(core::Manifest({{"w", core::DType::kFloat32, {64 * 1024}}}));
  for (std::byte& b : model.bytes()) b = static_cast<std::byte>(version % 251);
  return model;
}

TEST(CrashTest, AKilledCheckpointWriterLeavesOneWholeVersion) {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.bin";
  std::mt19937 rng(kSeed);
  std::uint64_t next_round = 1;
  int temporaries = 0;
  for (int iteration = 0; iteration < 30; ++iteration) {
    const std::uint64_t first = next_round;
    const KillPoint kill = NextKillPoint(rng);
    const CrashRun run = RunUntilKilled(
        [&](Acknowledger& ack) {
          for (std::uint64_t round = first;; ++round) {
            if (!core::WriteCheckpoint(path, "crash", round, round, {{"round", round}},
                                       ModelOfVersion(round), core::CheckpointKey{})
                     .ok()) {
              return 3;
            }
            ack.Ack(round);
          }
        },
        kill.min_acks, kill.delay);
    const std::uint64_t acknowledged = LastAcknowledged(run, iteration);

    absl::StatusOr<core::Checkpoint> read = core::ReadCheckpoint(path, core::CheckpointKey{});
    ASSERT_TRUE(read.ok()) << "iteration " << iteration << ": " << read.status();
    EXPECT_GE(read->round, acknowledged) << "an acknowledged checkpoint was lost";
    EXPECT_LE(read->round, acknowledged + 1) << "a version that was never written";
    EXPECT_EQ(read->model_version, read->round);
    const std::byte fill = static_cast<std::byte>(read->round % 251);
    for (std::byte b : read->model.bytes()) {
      ASSERT_EQ(b, fill) << "iteration " << iteration << ": the model mixes two versions";
    }
    temporaries += RemoveLeftoverTemporaries(dir.path(), {"checkpoint.bin"});
    next_round = read->round + 1;
  }
  RecordProperty("temporaries_left_by_kills", temporaries);
}

// ---------------------------------------------------------- key files and kits

crypto::SigningKey KeyOfVersion(std::uint64_t version) {
  std::array<std::uint8_t, crypto::kSigningSeedBytes> seed{};
  for (std::size_t i = 0; i < 8; ++i) seed[i] = static_cast<std::uint8_t>(version >> (8 * i));
  return *crypto::SigningKey::FromSeed(seed);
}

std::string KitName(std::uint64_t version) { return absl::StrCat("site-", version); }
std::string CertificateOf(std::uint64_t version) {
  return absl::StrCat("CERTIFICATE ", version, "\n", std::string(4096, 'c'));
}

// Writes key file `version` (IfExists::kFail) and the startup kit of that name.
absl::Status WriteKeyAndKit(const fs::path& out, std::uint64_t version) {
  if (absl::Status s = crypto::WriteSigningKeyFile(out / "keys" / absl::StrCat("key-", version),
                                                   KeyOfVersion(version));
      !s.ok()) {
    return s;
  }
  crypto::IssuedCertificate issued;
  issued.certificate_pem = CertificateOf(version);
  const std::string key = absl::StrCat("PRIVATE KEY ", version, "\n");
  issued.private_key_pem = crypto::SecretBytes::CopyOf(
      std::span(reinterpret_cast<const std::uint8_t*>(key.data()), key.size()));
  return crypto::WriteStartupKit(
      out, {.federation = "crash", .name = KitName(version), .server_address = "localhost:1"},
      issued, "CA CERTIFICATE\n", "");
}

TEST(CrashTest, AKilledProvisionerLeavesOnlyWholeKeyFilesAndKits) {
  TempDir dir;
  const fs::path out = dir.path() / "federation";
  fs::create_directories(out / "keys");
  std::mt19937 rng(kSeed + 1);
  std::uint64_t next = 0;
  int leftovers = 0;
  for (int iteration = 0; iteration < 20; ++iteration) {
    const std::uint64_t first = next;
    const KillPoint kill = NextKillPoint(rng);
    const CrashRun run = RunUntilKilled(
        [&](Acknowledger& ack) {
          for (std::uint64_t version = first;; ++version) {
            if (!WriteKeyAndKit(out, version).ok()) return 3;
            ack.Ack(version);
          }
        },
        kill.min_acks, kill.delay);
    const std::uint64_t acknowledged = LastAcknowledged(run, iteration);

    // Every acknowledged key and kit is whole; the one in flight is whole or absent.
    for (std::uint64_t version = first; version <= acknowledged + 1; ++version) {
      const fs::path key_file = out / "keys" / absl::StrCat("key-", version);
      const bool in_flight = version == acknowledged + 1;
      if (!in_flight || fs::exists(key_file)) {
        absl::StatusOr<crypto::SigningKey> key = crypto::ReadSigningKeyFile(key_file);
        ASSERT_TRUE(key.ok()) << "iteration " << iteration << ": " << key.status();
        EXPECT_EQ(key->public_key().ToHex(), KeyOfVersion(version).public_key().ToHex());
      }
      const fs::path kit = out / KitName(version);
      if (in_flight && !fs::exists(kit)) continue;
      ASSERT_TRUE(fs::is_directory(kit)) << kit;
      EXPECT_EQ(testing::EntriesOf(kit),
                (std::vector<std::string>{"ca.pem", "cert.pem", "config.json", "key.pem"}))
          << "iteration " << iteration << ": a kit under its final name is incomplete";
      EXPECT_EQ(testing::Slurp(kit / "key.pem"), absl::StrCat("PRIVATE KEY ", version, "\n"));
      EXPECT_EQ(testing::ModeOf(kit / "key.pem"), 0600u);
      EXPECT_EQ(testing::Slurp(kit / "cert.pem"), CertificateOf(version));
      EXPECT_EQ(testing::Slurp(kit / "ca.pem"), "CA CERTIFICATE\n");
    }
    // What a kill leaves besides: hidden staging directories and temporaries only.
    for (const std::string& name : testing::EntriesOf(out)) {
      if (name == "keys" || name.rfind("site-", 0) == 0) continue;
      EXPECT_EQ(name.rfind(".site-", 0), 0u) << "unexpected " << name;
      fs::remove_all(out / name);
      ++leftovers;
    }
    for (const std::string& name : testing::EntriesOf(out / "keys")) {
      if (name.rfind("key-", 0) == 0) continue;
      EXPECT_EQ(name.rfind(".key-", 0), 0u) << "unexpected " << name;
      fs::remove(out / "keys" / name);
      ++leftovers;
    }
    next = fs::exists(out / KitName(acknowledged + 1)) ? acknowledged + 2 : acknowledged + 1;
    // A key written without its kit is never reused: the next child would refuse it.
    while (fs::exists(out / "keys" / absl::StrCat("key-", next))) ++next;
  }
  RecordProperty("leftovers_removed", leftovers);
}

// ------------------------------------------------------------------ audit log

audit::Record RecordNumber(std::uint64_t i) {
  audit::Record record;
  record.actor = "site-a";
  record.role = "admin";
  record.action = audit::action::kParamSet;
  record.target.job = "crash";
  record.target.parameter = "p";
  record.old_value = i;
  // Alternate small and large entries: a large write() is where a kill is most likely to
  // leave a partial line behind.
  record.new_value = i % 2 == 0 ? nlohmann::json(i) : nlohmann::json(std::string(32 * 1024, 'w'));
  return record;
}

crypto::SigningKey AuditKey() { return KeyOfVersion(3); }

TEST(CrashTest, AKilledAuditWriterLosesNoAcknowledgedEntry) {
  TempDir dir;
  const fs::path log = dir.path() / "audit.log";
  std::mt19937 rng(kSeed + 2);
  std::uint64_t entries = 0;
  int partial_lines_seen = 0;
  for (int iteration = 0; iteration < 30; ++iteration) {
    const std::uint64_t first = entries;
    const KillPoint kill = NextKillPoint(rng);
    const CrashRun run = RunUntilKilled(
        [&](Acknowledger& ack) {
          absl::StatusOr<std::unique_ptr<audit::Writer>> writer =
              audit::Writer::Open(log, AuditKey());
          if (!writer.ok()) return 3;
          for (std::uint64_t i = 0;; ++i) {
            absl::StatusOr<std::uint64_t> seq = (*writer)->Append(RecordNumber(i));
            if (!seq.ok()) return 4;
            ack.Ack(*seq);
          }
        },
        kill.min_acks, kill.delay);
    const std::uint64_t acknowledged = LastAcknowledged(run, iteration);
    // Acknowledged seqs continue the chain the last child left.
    for (std::size_t i = 0; i < run.acknowledged.size(); ++i) {
      ASSERT_EQ(run.acknowledged[i], first + i) << "iteration " << iteration;
    }

    absl::StatusOr<audit::ChainVerification> verified =
        audit::VerifyAuditChain(log, AuditKey().public_key());
    ASSERT_TRUE(verified.ok()) << verified.status();
    ASSERT_TRUE(verified->ok()) << verified->Summary();
    EXPECT_GE(verified->entry_count, acknowledged + 1) << "an acknowledged entry was lost";
    EXPECT_LE(verified->entry_count, acknowledged + 2);
    if (verified->trailing_partial_line) ++partial_lines_seen;

    // Reopening cuts any partial line and continues the chain.
    absl::StatusOr<std::unique_ptr<audit::Writer>> writer = audit::Writer::Open(log, AuditKey());
    ASSERT_TRUE(writer.ok()) << writer.status();
    EXPECT_EQ((*writer)->entry_count(), verified->entry_count);
    EXPECT_EQ((*writer)->head_hash(), verified->head_hash);
    writer->reset();
    absl::StatusOr<audit::ChainVerification> reopened =
        audit::VerifyAuditChain(log, AuditKey().public_key());
    ASSERT_TRUE(reopened.ok());
    EXPECT_TRUE(reopened->ok()) << reopened->Summary();
    EXPECT_FALSE(reopened->trailing_partial_line);
    entries = verified->entry_count;
  }
  // Whether a kill lands inside a write() is timing; report it, do not require it.
  RecordProperty("partial_lines_seen", partial_lines_seen);
}

// -------------------------------------------------------------- privacy ledger

constexpr privacy::PrivacyBudget kLedgerBudget{1000.0, 1e-5};

privacy::SpendRequest SmallSpend(std::int64_t round) {
  privacy::SpendRequest request;
  request.job = "crash";
  request.round = round;
  request.mechanism = privacy::Mechanism::kDpSgd;
  request.sampling_rate = 0.001;
  request.noise_multiplier = 4.0;
  request.steps = 1;
  request.clip_norm = 1.0;
  return request;
}

TEST(CrashTest, AKilledLedgerLosesNoAcknowledgedSpend) {
  TempDir dir;
  const std::string path = (dir.path() / "site.ledger").string();
  std::mt19937 rng(kSeed + 3);
  for (int iteration = 0; iteration < 30; ++iteration) {
    const KillPoint kill = NextKillPoint(rng);
    const CrashRun run = RunUntilKilled(
        [&](Acknowledger& ack) {
          absl::StatusOr<std::unique_ptr<privacy::Ledger>> ledger =
              privacy::Ledger::Open(path, "site-a", kLedgerBudget);
          if (!ledger.ok()) return 3;
          for (std::int64_t round = 0;; ++round) {
            if (!(*ledger)->RecordSpend(SmallSpend(round)).ok()) return 4;
            ack.Ack(static_cast<std::uint64_t>((*ledger)->spend_count()));
          }
        },
        kill.min_acks, kill.delay);
    const std::uint64_t acknowledged = LastAcknowledged(run, iteration);

    // Reopening replays and checks every line; every acknowledged spend is there.
    absl::StatusOr<std::unique_ptr<privacy::Ledger>> ledger =
        privacy::Ledger::Open(path, "site-a", kLedgerBudget);
    ASSERT_TRUE(ledger.ok()) << "iteration " << iteration << ": " << ledger.status();
    EXPECT_GE(static_cast<std::uint64_t>((*ledger)->spend_count()), acknowledged)
        << "an acknowledged spend was lost";
    EXPECT_LE(static_cast<std::uint64_t>((*ledger)->spend_count()), acknowledged + 1);
    EXPECT_EQ(testing::Slurp(path).back(), '\n');
  }
}

}  // namespace
}  // namespace cohort::storage
