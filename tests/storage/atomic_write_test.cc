#include "storage/atomic_write.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/storage/test_util.h"
#include "tests/temp_dir.h"

namespace cohort::storage {
namespace {

namespace fs = std::filesystem;
using cohort::testing::TempDir;
using testing::EntriesOf;
using testing::ModeOf;
using testing::Slurp;

TEST(WriteFileAtomicallyTest, WritesTheBytesWithExactlyTheRequestedModeWhateverTheUmask) {
  TempDir dir;
  {
    testing::ScopedUmask open_umask(0);
    ASSERT_TRUE(WriteFileAtomically(dir.path() / "key.pem", "secret", kSecretFileMode,
                                    IfExists::kFail).ok());
  }
  {
    testing::ScopedUmask strict_umask(077);
    ASSERT_TRUE(WriteFileAtomically(dir.path() / "cert.pem", "public", kPublicFileMode,
                                    IfExists::kFail).ok());
  }
  EXPECT_EQ(ModeOf(dir.path() / "key.pem"), 0600u);
  EXPECT_EQ(ModeOf(dir.path() / "cert.pem"), 0644u);
  EXPECT_EQ(*ReadFile(dir.path() / "key.pem"), "secret");
  EXPECT_EQ(EntriesOf(dir.path()), (std::vector<std::string>{"cert.pem", "key.pem"}))
      << "a temporary file was left behind";
}

TEST(WriteFileAtomicallyTest, RefusesToOverwriteUnlessToldToReplace) {
  TempDir dir;
  const fs::path path = dir.path() / "crl.pem";
  ASSERT_TRUE(WriteFileAtomically(path, "one", kPublicFileMode, IfExists::kFail).ok());
  const absl::Status refused = WriteFileAtomically(path, "two", kPublicFileMode, IfExists::kFail);
  EXPECT_TRUE(absl::IsAlreadyExists(refused)) << refused;
  EXPECT_EQ(*ReadFile(path), "one");
  ASSERT_TRUE(WriteFileAtomically(path, "three", kPublicFileMode, IfExists::kReplace).ok());
  EXPECT_EQ(*ReadFile(path), "three");
  EXPECT_EQ(EntriesOf(dir.path()), std::vector<std::string>{"crl.pem"});
}

TEST(WriteFileAtomicallyTest, ReplacesTheContentsAndLeavesNoTemporaryFile) {
  TempDir dir;
  const fs::path path = dir.path() / "state.json";
  ASSERT_TRUE(WriteFileAtomically(path, "first version, longer than the second").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  EXPECT_EQ(*ReadFile(path), "second")
      << "the old contents must be replaced, not overwritten in place";
  EXPECT_EQ(EntriesOf(dir.path()), std::vector<std::string>{"state.json"});
}

TEST(WriteFileAtomicallyTest, WritesBytesAsGiven) {
  TempDir dir;
  const std::vector<std::uint8_t> bytes = {0, 1, 2, 255, '\n'};
  ASSERT_TRUE(WriteFileAtomically(dir.path() / "bin", std::span<const std::uint8_t>(bytes)).ok());
  EXPECT_EQ(Slurp(dir.path() / "bin"), std::string("\0\1\2\xff\n", 5));
}

TEST(WriteFileAtomicallyTest, StreamsSeveralPiecesInOrder) {
  TempDir dir;
  const fs::path path = dir.path() / "pieces";
  ASSERT_TRUE(WriteFileAtomically(path, [](const ByteSink& sink) -> absl::Status {
                for (const std::string piece : {"ab", "", "cde", "f"}) {
                  if (absl::Status s = sink(std::as_bytes(std::span(piece))); !s.ok()) return s;
                }
                return absl::OkStatus();
              }).ok());
  EXPECT_EQ(*ReadFile(path), "abcdef");
}

TEST(WriteFileAtomicallyTest, AFailingProducerKeepsTheOldFileAndRemovesTheTemporary) {
  TempDir dir;
  const fs::path path = dir.path() / "state.json";
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  const absl::Status s = WriteFileAtomically(path, [](const ByteSink& sink) -> absl::Status {
    const std::string partial = "half of the new";
    if (absl::Status w = sink(std::as_bytes(std::span(partial))); !w.ok()) return w;
    return absl::AbortedError("producer gave up");
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(*ReadFile(path), "old");
  EXPECT_EQ(EntriesOf(dir.path()), std::vector<std::string>{"state.json"});
}

TEST(WriteFileAtomicallyTest, FailsNamingThePathWhenTheDirectoryIsMissing) {
  TempDir dir;
  const absl::Status s = WriteFileAtomically(dir.path() / "no-such-dir" / "file", "x");
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_NE(s.message().find("no-such-dir"), std::string::npos) << s;
}

TEST(WriteFileAtomicallyTest, AFullFileSystemKeepsTheOldFileAndRemovesTheTemporary) {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.bin";
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  absl::Status status;
  {
    testing::ScopedFileSizeLimit limit(1024);
    status = WriteFileAtomically(path, std::string(4096, 'n'));
  }
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  EXPECT_EQ(*ReadFile(path), "old");
  EXPECT_EQ(EntriesOf(dir.path()), std::vector<std::string>{"checkpoint.bin"});
}

TEST(WriteFileAtomicallyTest, AReadOnlyDirectoryIsPermissionDeniedAndKeepsTheOldFile) {
  TempDir dir;
  const fs::path readonly = dir.path() / "readonly";
  ASSERT_TRUE(fs::create_directory(readonly));
  ASSERT_TRUE(WriteFileAtomically(readonly / "model.json", "old").ok());
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(readonly.c_str(), 0555), 0);
  // The child runs unprivileged (see RunUnprivileged) and exits with the status code.
  const int code = testing::RunUnprivileged([&] {
    return static_cast<int>(WriteFileAtomically(readonly / "model.json", "new").code());
  });
  ::chmod(readonly.c_str(), 0755);
  EXPECT_EQ(code, static_cast<int>(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(*ReadFile(readonly / "model.json"), "old");
  EXPECT_EQ(EntriesOf(readonly), std::vector<std::string>{"model.json"});
}

TEST(WriteFileAtomicallyTest, ConcurrentWritersNeverShareATemporaryFile) {
  TempDir dir;
  const fs::path path = dir.path() / "shared.json";
  // Each writer's version is one repeated letter: any mix of two would show.
  constexpr int kWriters = 4;
  constexpr int kWritesEach = 25;
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      const std::string version(64 * 1024, static_cast<char>('a' + w));
      for (int i = 0; i < kWritesEach; ++i) {
        if (!WriteFileAtomically(path, version).ok()) ++failures;
      }
    });
  }
  std::atomic<bool> done{false};
  std::atomic<int> mixed{0};
  std::thread reader([&] {
    while (!done) {
      absl::StatusOr<std::string> seen = ReadFile(path);
      if (!seen.ok()) continue;  // not written yet
      if (seen->size() != 64 * 1024 ||
          seen->find_first_not_of(seen->front()) != std::string::npos) {
        ++mixed;
      }
    }
  });
  for (std::thread& t : writers) t.join();
  done = true;
  reader.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(mixed, 0);
  EXPECT_EQ(EntriesOf(dir.path()), std::vector<std::string>{"shared.json"});
}

TEST(TemporaryNamePrefixTest, IsHiddenAndNamesTheFinalFile) {
  EXPECT_EQ(TemporaryNamePrefix("/out/checkpoint.bin"), ".checkpoint.bin.tmp-");
}

}  // namespace
}  // namespace cohort::storage
