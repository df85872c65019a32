#include "privacy/ledger.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"

namespace cohort::privacy {
namespace {

using ledger_format::QuotedForLog;

std::string ErrnoText(int error) { return std::strerror(error); }

// DataLoss for line `number` (1-based) of the ledger at `path`.
absl::Status LineError(const std::string& path, int64_t number,
                       absl::string_view why) {
  return absl::DataLossError(
      absl::StrCat("privacy ledger ", path, ": line ", number, ": ", why));
}

absl::StatusOr<std::string> ReadAll(int fd, const std::string& path) {
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    return absl::InternalError(absl::StrCat("cannot stat privacy ledger ", path,
                                            ": ", ErrnoText(errno)));
  }
  std::string content(static_cast<size_t>(info.st_size), '\0');
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::pread(fd, content.data() + done, content.size() - done,
                              static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::InternalError(absl::StrCat("cannot read privacy ledger ",
                                              path, ": ", ErrnoText(errno)));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  content.resize(done);
  return content;
}

absl::Status FsyncDirectoryOf(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    return absl::InternalError(absl::StrCat(
        "cannot open directory ", dir.string(), ": ", ErrnoText(errno)));
  }
  const int rc = ::fsync(dir_fd);
  const int error = errno;
  ::close(dir_fd);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat(
        "fsync of directory ", dir.string(), " failed: ", ErrnoText(error)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Ledger>> Ledger::Open(
    const std::string& path, std::string_view site,
    const PrivacyBudget& budget) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "ledger path: expected a file path, got \"\"");
  }
  if (absl::Status s = ValidateText(site, "site"); !s.ok()) return s;
  if (absl::Status s = ValidatePrivacyBudget(budget); !s.ok()) return s;

  // O_APPEND: every write lands at the end, whatever else holds the file.
  const int fd =
      ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int error = errno;
    const std::string message = absl::StrCat("cannot open privacy ledger ",
                                             path, ": ", ErrnoText(error));
    return error == ENOENT ? absl::NotFoundError(message)
                           : absl::InternalError(message);
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("privacy ledger ", path,
                       " is already open (locked by another process or "
                       "Ledger)"));
    }
    return absl::InternalError(absl::StrCat("cannot lock privacy ledger ", path,
                                            ": ", ErrnoText(error)));
  }
  std::unique_ptr<Ledger> ledger(
      new Ledger(path, std::string(site), budget, fd));
  if (absl::Status s = ledger->LoadOrCreate(); !s.ok()) return s;
  return ledger;
}

Ledger::Ledger(std::string path, std::string site, PrivacyBudget budget, int fd)
    : path_(std::move(path)),
      site_(std::move(site)),
      budget_(budget),
      fd_(fd) {}

Ledger::~Ledger() {
  // Closing the descriptor releases the flock.
  ::close(fd_);
}

absl::Status Ledger::LoadOrCreate() {
  std::lock_guard<std::mutex> lock(mu_);
  auto read = ReadAll(fd_, path_);
  if (!read.ok()) return read.status();
  std::string content = *std::move(read);

  // A torn trailing line: see ledger.h for why dropping it is safe.
  const size_t last_newline = content.rfind('\n');
  const size_t complete =
      last_newline == std::string::npos ? 0 : last_newline + 1;
  if (complete < content.size()) {
    dropped_partial_bytes_ = static_cast<int64_t>(content.size() - complete);
    spdlog::warn(
        "privacy ledger {}: dropping a torn trailing line ({} bytes, no "
        "newline) left by an interrupted write; site={}",
        path_, dropped_partial_bytes_, site_);
    if (::ftruncate(fd_, static_cast<off_t>(complete)) != 0 ||
        ::fsync(fd_) != 0) {
      return absl::InternalError(
          absl::StrCat("cannot truncate the torn last line of privacy ledger ",
                       path_, ": ", ErrnoText(errno)));
    }
    content.resize(complete);
  }
  file_size_ = static_cast<int64_t>(content.size());

  if (content.empty()) {
    const std::string header = ledger_format::EncodeHeader(
        {site_, budget_, ledger_format::NowRfc3339(), ledger_format::ZeroHash()});
    if (absl::Status s = AppendLine(header); !s.ok()) return s;
    if (absl::Status s = FsyncDirectoryOf(path_); !s.ok()) return s;
    spdlog::info("privacy ledger {}: created for site={} epsilon={} delta={}",
                 path_, site_, budget_.epsilon, budget_.delta);
    return absl::OkStatus();
  }

  std::string previous_hash = ledger_format::ZeroHash();
  int64_t number = 0;
  for (size_t start = 0; start < content.size();) {
    const size_t end = content.find('\n', start);
    const std::string_view line(content.data() + start, end - start);
    start = end + 1;
    ++number;
    if (line.empty()) return LineError(path_, number, "empty line");

    std::string prev;
    if (number == 1) {
      auto header = ledger_format::ParseHeader(line);
      if (!header.ok()) return LineError(path_, number, header.status().message());
      if (header->site != site_) {
        return absl::FailedPreconditionError(
            absl::StrCat("privacy ledger ", path_, " belongs to site \"",
                         header->site, "\", not \"", site_, "\""));
      }
      if (header->budget.epsilon != budget_.epsilon ||
          header->budget.delta != budget_.delta) {
        return absl::FailedPreconditionError(absl::StrCat(
            "privacy ledger ", path_, " was created with budget epsilon=",
            FormatNumber(header->budget.epsilon),
            " delta=", FormatNumber(header->budget.delta),
            " but the site is configured with epsilon=",
            FormatNumber(budget_.epsilon), " delta=",
            FormatNumber(budget_.delta),
            "; a budget is changed by starting a new ledger"));
      }
      prev = std::move(header->prev);
    } else {
      auto entry = ledger_format::ParseSpend(line);
      if (!entry.ok()) return LineError(path_, number, entry.status().message());
      prev = entry->prev;
      if (prev != previous_hash) {
        return LineError(
            path_, number,
            absl::StrCat("hash chain broken: \"prev\" is ", prev, " but line ",
                         number - 1, " hashes to ", previous_hash, " (line ",
                         number - 1,
                         " was edited, or lines were deleted, inserted or "
                         "reordered)"));
      }
      if (entry->seq != number - 1) {
        return LineError(path_, number,
                         absl::StrCat("seq is ", entry->seq, ", expected ",
                                      number - 1,
                                      " (lines deleted, inserted or reordered)"));
      }
      if (entry->delta != budget_.delta) {
        return LineError(path_, number,
                         absl::StrCat("delta is ", FormatNumber(entry->delta),
                                      ", the ledger's is ",
                                      FormatNumber(budget_.delta)));
      }
      const SpendRequest& request = entry->request;
      if (absl::Status s = accountant_.AddSteps(
              request.sampling_rate, request.noise_multiplier, request.steps);
          !s.ok()) {
        return LineError(path_, number, s.message());
      }
      const double replayed = accountant_.GetEpsilon(budget_.delta)->epsilon;
      // Same code, same inputs: the replay is exact; the slack only absorbs
      // a change of compiler or libm.
      if (!(std::abs(replayed - entry->epsilon_after) <=
            1e-9 * std::max(1.0, std::abs(replayed)))) {
        return LineError(
            path_, number,
            absl::StrCat("epsilon_after is ", FormatNumber(entry->epsilon_after),
                         " but replaying the spends gives ",
                         FormatNumber(replayed), " (parameters were edited)"));
      }
      if (replayed > budget_.epsilon) {
        return LineError(path_, number,
                         absl::StrCat("spends exceed the budget: epsilon ",
                                      FormatNumber(replayed), " > ",
                                      FormatNumber(budget_.epsilon)));
      }
      spent_epsilon_ = replayed;
      spend_count_ = number - 1;
    }
    if (number == 1 && prev != previous_hash) {
      return LineError(path_, number,
                       "hash chain broken: the header must carry an all-zero "
                       "\"prev\"");
    }
    previous_hash = ledger_format::HashLine(line);
  }
  head_hash_ = previous_hash;
  spdlog::info(
      "privacy ledger {}: opened for site={}, {} spends, epsilon spent {} of {}",
      path_, site_, spend_count_, spent_epsilon_, budget_.epsilon);
  return absl::OkStatus();
}

absl::Status Ledger::AppendLine(const std::string& line) {
  if (poisoned_) {
    return absl::FailedPreconditionError(
        absl::StrCat("privacy ledger ", path_,
                     " is unusable after an earlier failed write or fsync; "
                     "reopen it"));
  }
  const std::string bytes = line + "\n";
  // One write() per line, never retried piecemeal: a crash can then only
  // leave a torn last line, which Open recognises.
  const ssize_t written = ::write(fd_, bytes.data(), bytes.size());
  if (written != static_cast<ssize_t>(bytes.size())) {
    const std::string why =
        written < 0 ? absl::StrCat("write failed: ", ErrnoText(errno))
                    : absl::StrCat("short write: ", written, " of ",
                                   bytes.size(), " bytes");
    // Cut back whatever part of the line reached the file.
    if (written > 0 && ::ftruncate(fd_, static_cast<off_t>(file_size_)) != 0) {
      poisoned_ = true;
    }
    return absl::InternalError(absl::StrCat("privacy ledger ", path_, ": ", why));
  }
  if (::fsync(fd_) != 0) {
    // After a failed fsync the kernel may have dropped the dirty pages; the
    // file's content is unknown, so refuse everything until reopened.
    poisoned_ = true;
    return absl::InternalError(absl::StrCat(
        "privacy ledger ", path_, ": fsync failed: ", ErrnoText(errno)));
  }
  file_size_ += static_cast<int64_t>(bytes.size());
  head_hash_ = ledger_format::HashLine(line);
  return absl::OkStatus();
}

absl::StatusOr<SpendCheck> Ledger::CheckLocked(const SpendRequest& request,
                                               RdpAccountant* planned) const {
  if (absl::Status s = ValidateSpendRequest(request); !s.ok()) return s;
  *planned = accountant_;
  if (absl::Status s = planned->AddSteps(
          request.sampling_rate, request.noise_multiplier, request.steps);
      !s.ok()) {
    return s;
  }
  auto result = planned->GetEpsilon(budget_.delta);
  if (!result.ok()) return result.status();
  return SpendCheck{result->epsilon, result->order,
                    result->epsilon <= budget_.epsilon};
}

absl::StatusOr<SpendCheck> Ledger::CanSpend(const SpendRequest& request) const {
  std::lock_guard<std::mutex> lock(mu_);
  RdpAccountant planned;
  return CheckLocked(request, &planned);
}

absl::StatusOr<SpendCheck> Ledger::RecordSpend(const SpendRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  RdpAccountant planned;
  auto check = CheckLocked(request, &planned);
  if (!check.ok()) return check.status();
  if (!check->fits) {
    spdlog::warn(
        "privacy ledger {}: refused spend for site={} job={} round={}: epsilon "
        "would reach {} > budget {}",
        path_, site_, QuotedForLog(request.job), request.round,
        check->epsilon_after, budget_.epsilon);
    return absl::ResourceExhaustedError(absl::StrCat(
        "privacy budget of site \"", site_, "\" exceeded: job \"", request.job,
        "\" round ", request.round, " (",
        std::string(MechanismName(request.mechanism)),
        ", q=", FormatNumber(request.sampling_rate),
        ", sigma=", FormatNumber(request.noise_multiplier),
        ", steps=", request.steps, ") would bring epsilon from ",
        FormatNumber(spent_epsilon_), " to ",
        FormatNumber(check->epsilon_after), ", over the budget of ",
        FormatNumber(budget_.epsilon), " at delta=",
        FormatNumber(budget_.delta)));
  }

  ledger_format::SpendEntry entry;
  entry.seq = spend_count_ + 1;
  entry.time = ledger_format::NowRfc3339();
  entry.request = request;
  entry.epsilon_after = check->epsilon_after;
  entry.delta = budget_.delta;
  entry.prev = head_hash_;
  if (absl::Status s = AppendLine(ledger_format::EncodeSpend(entry)); !s.ok()) {
    return s;
  }

  accountant_ = std::move(planned);
  spent_epsilon_ = check->epsilon_after;
  ++spend_count_;
  spdlog::info(
      "privacy ledger {}: site={} job={} round={} spent {} (q={} sigma={} "
      "steps={}), epsilon now {} of {}",
      path_, site_, QuotedForLog(request.job), request.round,
      MechanismName(request.mechanism), request.sampling_rate,
      request.noise_multiplier, request.steps, spent_epsilon_, budget_.epsilon);
  return check;
}

double Ledger::spent_epsilon() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spent_epsilon_;
}

double Ledger::remaining_epsilon() const {
  std::lock_guard<std::mutex> lock(mu_);
  return std::max(0.0, budget_.epsilon - spent_epsilon_);
}

int64_t Ledger::spend_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spend_count_;
}

std::string Ledger::head_hash() const {
  std::lock_guard<std::mutex> lock(mu_);
  return head_hash_;
}

}  // namespace cohort::privacy
