#include "audit/bundle.h"

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "audit/entry.h"
#include "audit/reader.h"
#include "core/bounded_json.h"
#include "storage/atomic_write.h"

namespace cohort::audit {
namespace {

absl::StatusOr<std::string> ReadWholeFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) {
      return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
    }
    return absl::PermissionDeniedError(absl::StrCat(path.string(), ": cannot open"));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat(path.string(), ": read failed"));
  return std::move(contents).str();
}

absl::StatusOr<std::string> JsonText(const nlohmann::json& value) {
  try {
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    return absl::InternalError(absl::StrCat("cannot encode bundle member: ", e.what()));
  }
}

}  // namespace

absl::StatusOr<ExportSummary> ExportAuditBundle(const std::filesystem::path& log_path,
                                                const crypto::SigningKey& key,
                                                const std::filesystem::path& out_path,
                                                absl::Time now) {
  // One pass: the lines exported are exactly the lines that verified, even if a
  // writer appends meanwhile.
  std::vector<std::string> lines;
  absl::StatusOr<ChainVerification> verified =
      VerifyAuditChainLines(log_path, key.public_key(), {},
                            [&lines](std::string_view line) { lines.emplace_back(line); });
  if (!verified.ok()) return verified.status();
  if (!verified->ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(log_path.string(), ": ", verified->Summary(),
                     "; refusing to export an audit log that does not verify"));
  }

  ExportSummary summary;
  summary.entry_count = verified->entry_count;
  summary.head_hash = verified->head_hash;
  summary.exported_at = FormatEntryTime(now);
  summary.skipped_partial_line = verified->trailing_partial_line;

  absl::StatusOr<std::string> source = JsonText(log_path.filename().string());
  if (!source.ok()) return source.status();
  absl::StatusOr<std::string> lines_text = JsonText(lines);
  if (!lines_text.ok()) return lines_text.status();
  const std::string unsigned_object =
      absl::StrCat("{\"format\":\"", kBundleFormat, "\",\"exported_at\":\"", summary.exported_at,
                   "\",\"source\":", *source, ",\"public_key\":\"", key.public_key().ToHex(),
                   "\",\"entry_count\":", summary.entry_count, ",\"head_hash\":\"",
                   summary.head_hash, "\",\"lines\":", *lines_text, "}");
  const std::string bundle =
      AttachSignature(unsigned_object,
                      key.Sign(absl::StrCat(kBundleSignatureContext, unsigned_object))) +
      "\n";
  if (absl::Status s = storage::WriteFileAtomically(out_path, bundle, storage::kPublicFileMode,
                                                    storage::IfExists::kFail);
      !s.ok())
    return s;
  return summary;
}

std::string BundleVerification::Summary() const {
  if (bundle_failure.has_value()) return absl::StrCat("invalid bundle: ", *bundle_failure);
  return absl::StrCat("bundle exported ", exported_at, " from ", source, ": ", chain.Summary());
}

absl::StatusOr<BundleVerification> VerifyAuditBundle(const std::filesystem::path& path,
                                                     const crypto::SigningPublicKey& key,
                                                     std::optional<std::string> expected_head,
                                                     std::optional<std::uint64_t> expected_count) {
  absl::StatusOr<ChainExpectations> expect = PinnedExpectations(std::move(expected_head), expected_count);
  if (!expect.ok()) return expect.status();

  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  std::string_view object_text = *text;
  if (!object_text.empty() && object_text.back() == '\n') object_text.remove_suffix(1);

  BundleVerification result;
  auto fail = [&result](std::string why) {
    result.bundle_failure = std::move(why);
    return result;
  };
  absl::StatusOr<SignedParts> parts = SplitSignature(object_text);
  if (!parts.ok()) {
    return fail(absl::StrCat("not a signed audit bundle: ", parts.status().message()));
  }
  if (absl::Status s = core::CheckJsonBounds(object_text, core::kAuditBundleJson, "the bundle");
      !s.ok()) {
    return fail(absl::StrCat("not a signed audit bundle: ", s.message()));
  }
  const nlohmann::json bundle =
      nlohmann::json::parse(object_text, nullptr, /*allow_exceptions=*/false);
  if (bundle.is_discarded() || !bundle.is_object()) {
    return fail("not a signed audit bundle: not a JSON object");
  }
  if (!bundle.contains("format") || !bundle["format"].is_string() ||
      bundle["format"].get<std::string>() != kBundleFormat) {
    return fail(absl::StrCat("member \"format\": expected \"", kBundleFormat, "\""));
  }
  if (!key.Verify(absl::StrCat(kBundleSignatureContext, parts->unsigned_object),
                  parts->signature)) {
    std::string why = absl::StrCat("the bundle signature does not verify under public key ",
                                   key.ToHex(), ": the bundle was modified after export");
    if (bundle.contains("public_key") && bundle["public_key"].is_string() &&
        bundle["public_key"].get<std::string>() != key.ToHex()) {
      why = absl::StrCat("the bundle signature does not verify under public key ", key.ToHex(),
                         "; the bundle says it was signed by ",
                         bundle["public_key"].get<std::string>());
    }
    return fail(std::move(why));
  }
  for (const char* member : {"exported_at", "source", "head_hash"}) {
    if (!bundle.contains(member) || !bundle[member].is_string()) {
      return fail(absl::StrCat("member \"", member, "\": expected a string"));
    }
  }
  if (!bundle.contains("entry_count") || !bundle["entry_count"].is_number_unsigned()) {
    return fail("member \"entry_count\": expected an unsigned integer");
  }
  if (!bundle.contains("lines") || !bundle["lines"].is_array()) {
    return fail("member \"lines\": expected an array of strings");
  }
  result.exported_at = bundle["exported_at"].get<std::string>();
  result.source = bundle["source"].get<std::string>();

  ChainVerifier verifier(key, *std::move(expect));
  std::uint64_t index = 0;
  for (const nlohmann::json& line : bundle["lines"]) {
    ++index;
    if (!line.is_string() || line.get_ref<const std::string&>().find('\n') != std::string::npos) {
      return fail(absl::StrCat("lines[", index - 1, "]: expected one log line without newline"));
    }
    if (!verifier.AddLine(line.get_ref<const std::string&>())) break;
  }
  result.chain = verifier.Finish();
  if (result.chain.ok()) {
    if (bundle["entry_count"].get<std::uint64_t>() != result.chain.entry_count ||
        bundle["head_hash"].get<std::string>() != result.chain.head_hash) {
      return fail(absl::StrCat("the bundle declares ", bundle["entry_count"].get<std::uint64_t>(),
                               " entries with head ", bundle["head_hash"].get<std::string>(),
                               ", its lines hold ", result.chain.entry_count, " with head ",
                               result.chain.head_hash));
    }
  }
  return result;
}

}  // namespace cohort::audit
