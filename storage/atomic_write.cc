#include "storage/atomic_write.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/directory.h"

namespace cohort::storage {
namespace {

constexpr int kTemporaryNameAttempts = 16;

// Eight random characters from [a-z0-9] (about 41 bits).
absl::StatusOr<std::string> RandomSuffix() {
  std::array<unsigned char, 8> random;
  std::size_t done = 0;
  while (done < random.size()) {
    const ssize_t n = ::getrandom(random.data() + done, random.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "cannot draw random bytes for", "a temporary file name");
    }
    done += static_cast<std::size_t>(n);
  }
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string suffix;
  for (unsigned char byte : random) suffix.push_back(kAlphabet[byte % (sizeof(kAlphabet) - 1)]);
  return suffix;
}

// A temporary file that is removed unless Commit() renamed it into place.
class TemporaryFile {
 public:
  static absl::StatusOr<TemporaryFile> Create(const std::filesystem::path& final_path) {
    const std::filesystem::path parent = ParentDirectory(final_path);
    for (int attempt = 0;; ++attempt) {
      absl::StatusOr<std::string> suffix = RandomSuffix();
      if (!suffix.ok()) return suffix.status();
      const std::filesystem::path name = parent / (TemporaryNamePrefix(final_path) + *suffix);
      // Mode 0600 until SetMode: never wider than asked, even for a moment.
      absl::StatusOr<File> file = File::Open(name, O_WRONLY | O_CREAT | O_EXCL, 0600);
      if (file.ok()) return TemporaryFile(*std::move(file));
      if (!absl::IsAlreadyExists(file.status()) || attempt + 1 == kTemporaryNameAttempts) {
        return file.status();
      }
    }
  }

  TemporaryFile(TemporaryFile&& other) noexcept
      : file_(std::move(other.file_)), path_(std::move(other.path_)),
        committed_(std::exchange(other.committed_, true)) {}
  TemporaryFile& operator=(TemporaryFile&&) = delete;
  ~TemporaryFile() {
    if (!committed_) ::unlink(path_.c_str());
  }

  File& file() { return file_; }

  // Makes the temporary file `final_path`; afterwards the destructor leaves it alone.
  absl::Status Commit(const std::filesystem::path& final_path, IfExists if_exists) {
    if (if_exists == IfExists::kFail) {
      if (absl::Status s = RenameNoReplace(path_, final_path); !s.ok()) return s;
    } else if (::rename(path_.c_str(), final_path.c_str()) != 0) {
      return ErrnoStatus(errno, absl::StrCat("cannot rename ", path_.string(), " to"), final_path);
    }
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  explicit TemporaryFile(File file) : file_(std::move(file)), path_(file_.path()) {}

  File file_;
  std::filesystem::path path_;
  bool committed_ = false;
};

absl::Status AlreadyExists(const std::filesystem::path& path) {
  return absl::AlreadyExistsError(
      absl::StrCat(path.string(), " already exists; refusing to overwrite it"));
}

}  // namespace

std::string TemporaryNamePrefix(const std::filesystem::path& path) {
  return absl::StrCat(".", path.filename().string(), ".tmp-");
}

absl::Status WriteFileAtomically(const std::filesystem::path& path, const ByteProducer& produce,
                                 mode_t mode, IfExists if_exists) {
  // Checked first so that refusing costs no write; the rename checks again, atomically.
  struct stat existing;
  if (if_exists == IfExists::kFail && ::lstat(path.c_str(), &existing) == 0)
    return AlreadyExists(path);
  absl::StatusOr<TemporaryFile> temp = TemporaryFile::Create(path);
  if (!temp.ok()) return temp.status();
  File& file = temp->file();
  if (absl::Status s = file.SetMode(mode); !s.ok()) return s;
  const ByteSink sink = [&file](std::span<const std::byte> bytes) { return file.WriteAll(bytes); };
  if (absl::Status s = produce(sink); !s.ok()) return s;
  if (absl::Status s = file.Sync(); !s.ok()) return s;
  if (absl::Status s = file.Close(); !s.ok()) return s;
  if (absl::Status s = temp->Commit(path, if_exists); !s.ok()) return s;
  return SyncParentDirectory(path);
}

absl::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view contents,
                                 mode_t mode, IfExists if_exists) {
  return WriteFileAtomically(
      path,
      [contents](const ByteSink& sink) {
        return sink(std::as_bytes(std::span(contents.data(), contents.size())));
      },
      mode, if_exists);
}

absl::Status WriteFileAtomically(const std::filesystem::path& path,
                                 std::span<const std::uint8_t> contents, mode_t mode,
                                 IfExists if_exists) {
  return WriteFileAtomically(
      path, std::string_view(reinterpret_cast<const char*>(contents.data()), contents.size()),
      mode, if_exists);
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  absl::StatusOr<File> file = File::Open(path, O_RDONLY);
  if (!file.ok()) return file.status();
  return file->ReadAll();
}

}  // namespace cohort::storage
