#include "client/update_residual.h"

#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "core/names.h"
#include "core/quote.h"
#include "storage/atomic_write.h"
#include "storage/sha256.h"

namespace cohort::client {
namespace {

constexpr char kFormat[] = "cohort-residual-1";

absl::Status Corrupt(const std::filesystem::path& path, absl::string_view why) {
  return absl::DataLossError(absl::StrCat("error-feedback residual ", path.string(), ": ", why,
                                          "; delete the file to start this job's residual again from zeros"));
}

}  // namespace

absl::StatusOr<UpdateResidual> UpdateResidual::Load(const std::filesystem::path& dir, const std::string& job,
                                                    const std::string& site, size_t values) {
  // The job's name becomes part of a file name: the naming rule keeps it one plain name.
  if (absl::Status s = core::ValidateName("job", job); !s.ok()) return s;
  UpdateResidual residual(dir / absl::StrCat("residual-", job, ".bin"), job, site, values);
  absl::StatusOr<std::string> contents = storage::ReadFile(residual.path_);
  if (absl::IsNotFound(contents.status())) return residual;
  if (!contents.ok()) return contents.status();
  const size_t newline = contents->find('\n');
  if (newline == std::string::npos) return Corrupt(residual.path_, "no header line");
  absl::StatusOr<nlohmann::json> header = core::ParseBoundedJson(std::string_view(*contents).substr(0, newline),
                                                                 core::kLedgerLineJson, "residual header");
  if (!header.ok()) return Corrupt(residual.path_, header.status().message());
  const nlohmann::json& h = *header;
  auto text = [&](const char* key) { return h.contains(key) && h[key].is_string() ? h[key].get<std::string>() : ""; };
  auto number = [&](const char* key) {
    return h.contains(key) && h[key].is_number_unsigned() ? h[key].get<uint64_t>() : uint64_t{0};
  };
  if (!h.is_object() || text("format") != kFormat) {
    return Corrupt(residual.path_, absl::StrCat("header is not a \"", kFormat, "\" header"));
  }
  if (text("job") != job || text("site") != site) {
    return absl::FailedPreconditionError(absl::StrCat("error-feedback residual ", residual.path_.string(),
                                                      " belongs to job ", core::QuotePrefix(text("job")), " at site ",
                                                      core::QuotePrefix(text("site")), ", not job ", job, " at site ",
                                                      site, "; move it away"));
  }
  const uint64_t count = number("values");
  const std::string_view body = std::string_view(*contents).substr(newline + 1);
  if (body.size() != count * sizeof(float)) {
    return Corrupt(residual.path_,
                   absl::StrCat("header says ", count, " values, the file holds ", body.size(), " bytes of them"));
  }
  if (storage::Sha256Hex(body) != text("sha256")) return Corrupt(residual.path_, "values do not match their SHA-256");
  if (count != values) {
    residual.started_over_ = absl::StrCat("it holds ", count, " values and the job's model has ", values,
                                          "; starting again from zeros");
    return residual;
  }
  std::memcpy(residual.values_.data(), body.data(), body.size());
  residual.round_ = number("round");
  return residual;
}

absl::Status UpdateResidual::Save(uint64_t round, std::span<const float> values) {
  if (values.size() != values_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("error-feedback residual: ", values.size(), " values for a model of ", values_.size()));
  }
  const std::span<const std::byte> bytes = std::as_bytes(values);
  const nlohmann::json header = {{"format", kFormat},
                                 {"job", job_},
                                 {"site", site_},
                                 {"round", round},
                                 {"values", values.size()},
                                 {"sha256", storage::Sha256Hex(bytes)}};
  const std::string line = header.dump() + "\n";
  absl::Status written = storage::WriteFileAtomically(
      path_,
      [&](const storage::ByteSink& sink) -> absl::Status {
        if (absl::Status s = sink(std::as_bytes(std::span<const char>(line))); !s.ok()) return s;
        return sink(bytes);
      },
      storage::kSecretFileMode);
  if (!written.ok()) return written;
  std::memcpy(values_.data(), values.data(), bytes.size());
  round_ = round;
  started_over_.clear();
  return absl::OkStatus();
}

}  // namespace cohort::client
