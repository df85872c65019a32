#include "audit/writer.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "audit/chain.h"

namespace cohort::audit {
namespace {

constexpr mode_t kAuditLogMode = 0640;

}  // namespace

absl::StatusOr<std::unique_ptr<Writer>> Writer::Open(const std::filesystem::path& path,
                                                     crypto::SigningKey key,
                                                     WriterOptions options) {
  storage::AppendLogOptions log_options;
  log_options.kind = "audit log";
  log_options.mode = kAuditLogMode;
  log_options.max_line_bytes = kMaxEntryLineBytes;
  log_options.chain_hash = LineHash;

  // Every existing line is verified (form, signature, prev chain, seq) before anything
  // is appended; the verifier computes the chain itself, as an auditor's copy would.
  ChainVerifier verifier(key.public_key());
  const auto verify = [&](const storage::LogLine& line) -> absl::Status {
    if (verifier.AddLine(line.text)) return absl::OkStatus();
    return absl::DataLossError(
        absl::StrCat(path.string(), ": ", verifier.Finish().Summary(),
                     "; refusing to append to an audit log that does not verify"));
  };
  absl::StatusOr<std::unique_ptr<storage::AppendLog>> log =
      storage::AppendLog::Open(path, std::move(log_options), verify);
  if (!log.ok()) return log.status();

  if ((*log)->cut_tail_bytes() > 0) {
    spdlog::warn(
        "audit log {}: cut a trailing partial line of {} bytes (an append interrupted by a "
        "crash, never acknowledged); the chain continues at seq {}",
        path.string(), (*log)->cut_tail_bytes(), (*log)->line_count());
  }
  spdlog::info("audit log {}: opened with {} entries, head {}", path.string(),
               (*log)->line_count(), (*log)->head_hash());

  if (!options.clock) options.clock = [] { return absl::Now(); };
  return std::unique_ptr<Writer>(
      new Writer(path, *std::move(log), std::move(key), std::move(options)));
}

Writer::Writer(std::filesystem::path path, std::unique_ptr<storage::AppendLog> log,
               crypto::SigningKey key, WriterOptions options)
    : path_(std::move(path)),
      key_(std::move(key)),
      options_(std::move(options)),
      log_(std::move(log)) {}

Writer::~Writer() = default;

absl::StatusOr<std::uint64_t> Writer::Append(const Record& record) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::uint64_t seq = log_->line_count();
  absl::StatusOr<std::string> body =
      EncodeUnsignedEntry(seq, FormatEntryTime(options_.clock()), record, log_->head_hash());
  if (!body.ok()) return body.status();
  const std::string line =
      AttachSignature(*body, key_.Sign(absl::StrCat(kEntrySignatureContext, *body)));
  if (line.size() + 1 > kMaxEntryLineBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit record ", record.action, ": the entry would be ", line.size() + 1,
                     " bytes, expected at most ", kMaxEntryLineBytes, " (shrink old/new)"));
  }
  if (absl::Status s = log_->Append(line); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("appending audit entry seq ", seq, ": ", s.message()));
  }
  return seq;
}

std::string Writer::head_hash() const {
  std::lock_guard<std::mutex> lock(mu_);
  return log_->head_hash();
}

std::uint64_t Writer::entry_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return log_->line_count();
}

}  // namespace cohort::audit
