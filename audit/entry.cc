#include "audit/entry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/bounded_json.h"
#include "core/quote.h"
#include "storage/sha256.h"

namespace cohort::audit {
namespace {

// Debian's abseil keeps its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), which std::string_view does not convert to; absl::StrCat needs this.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr std::string_view kSigOpen = ",\"sig\":\"";
constexpr std::size_t kSignatureHexChars = crypto::kSignatureBytes * 2;
// `,"sig":"` + 128 hex + `"}`
constexpr std::size_t kSigSuffixBytes = kSigOpen.size() + kSignatureHexChars + 2;

constexpr const char* kEntryTimeFormat = "%Y-%m-%dT%H:%M:%E3SZ";

bool IsLowerHex(std::string_view text, std::size_t length) {
  if (text.size() != length) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// JSON text of a string, refusing bytes that are not UTF-8 (nlohmann throws).
absl::StatusOr<std::string> JsonString(std::string_view member, std::string_view value) {
  try {
    return nlohmann::json(std::string(value))
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit record ", Av(member), ": expected UTF-8 text, got invalid bytes"));
  }
}

absl::StatusOr<std::string> JsonValue(std::string_view member, const nlohmann::json& value) {
  try {
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit record ", Av(member),
                     ": expected a JSON value with UTF-8 strings, got invalid bytes"));
  }
}

absl::Status MemberError(std::string_view member, std::string_view expected,
                         const nlohmann::json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat("member \"", Av(member), "\": expected ", Av(expected), ", got ", core::JsonPrefix(got)));
}

absl::StatusOr<std::string> RequireString(const nlohmann::json& object, std::string_view member) {
  auto it = object.find(member);
  if (it == object.end()) {
    return absl::InvalidArgumentError(absl::StrCat("member \"", Av(member), "\" is missing"));
  }
  if (!it->is_string()) return MemberError(member, "a string", *it);
  return it->get<std::string>();
}

}  // namespace

std::string Target::ToString() const {
  std::string text;
  auto add = [&text](std::string_view key, const std::string& value) {
    if (value.empty()) return;
    if (!text.empty()) text += ' ';
    absl::StrAppend(&text, Av(key), "=", value);
  };
  add("job", job);
  add("parameter", parameter);
  add("participant", participant);
  return text;
}

std::string FormatEntryTime(absl::Time time) {
  return absl::FormatTime(kEntryTimeFormat, time, absl::UTCTimeZone());
}

absl::StatusOr<absl::Time> ParseEntryTime(std::string_view text) {
  absl::Time time;
  std::string error;
  // Parsing then re-formatting must give back the same text: this accepts only
  // the one spelling the writer produces.
  if (!absl::ParseTime(kEntryTimeFormat, std::string(text), absl::UTCTimeZone(), &time, &error) ||
      FormatEntryTime(time) != text) {
    return absl::InvalidArgumentError(
        absl::StrCat("time \"", Av(text),
                     "\": expected RFC 3339 UTC with milliseconds, YYYY-MM-DDTHH:MM:SS.mmmZ"));
  }
  return time;
}

namespace action {
bool IsKnown(std::string_view name) {
  for (const char* known : kAll) {
    if (name == known) return true;
  }
  return false;
}
}  // namespace action

bool IsValidActionName(std::string_view action) {
  bool segment_start = true;
  for (char c : action) {
    if (segment_start) {
      if (c < 'a' || c > 'z') return false;
      segment_start = false;
    } else if (c == '.') {
      segment_start = true;
    } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
      return false;
    }
  }
  return !action.empty() && !segment_start;
}

std::string LineHash(std::string_view line_without_newline) {
  return storage::Sha256().Update(line_without_newline).Update("\n").FinishHex();
}

absl::StatusOr<std::string> EncodeUnsignedEntry(std::uint64_t seq, std::string_view time,
                                                const Record& record, std::string_view prev) {
  if (record.actor.empty()) {
    return absl::InvalidArgumentError("audit record actor: expected a non-empty identity");
  }
  if (!IsValidActionName(record.action)) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit record action \"", record.action,
                     "\": expected dotted lowercase words such as \"param.set\""));
  }
  if (!IsLowerHex(prev, 64)) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit record prev \"", Av(prev), "\": expected 64 lowercase hex characters"));
  }
  if (absl::StatusOr<absl::Time> parsed = ParseEntryTime(time); !parsed.ok()) {
    return parsed.status();
  }

  // Built member by member so that the byte layout is exactly the documented one.
  std::string out = absl::StrCat("{\"seq\":", seq, ",\"time\":\"", Av(time), "\"");
  auto add_string = [&out](std::string_view member, std::string_view value) -> absl::Status {
    absl::StatusOr<std::string> text = JsonString(member, value);
    if (!text.ok()) return text.status();
    absl::StrAppend(&out, ",\"", Av(member), "\":", *text);
    return absl::OkStatus();
  };
  if (absl::Status s = add_string("actor", record.actor); !s.ok()) return s;
  if (absl::Status s = add_string("role", record.role); !s.ok()) return s;
  if (absl::Status s = add_string("action", record.action); !s.ok()) return s;

  out += ",\"target\":{";
  bool first = true;
  for (const auto& [member, value] :
       {std::pair<std::string_view, const std::string*>{"job", &record.target.job},
        {"parameter", &record.target.parameter},
        {"participant", &record.target.participant}}) {
    if (value->empty()) continue;
    absl::StatusOr<std::string> text = JsonString(absl::StrCat("target.", Av(member)), *value);
    if (!text.ok()) return text.status();
    absl::StrAppend(&out, first ? "" : ",", "\"", Av(member), "\":", *text);
    first = false;
  }
  out += "}";

  absl::StatusOr<std::string> old_text = JsonValue("old", record.old_value);
  if (!old_text.ok()) return old_text.status();
  absl::StatusOr<std::string> new_text = JsonValue("new", record.new_value);
  if (!new_text.ok()) return new_text.status();
  absl::StrAppend(&out, ",\"old\":", *old_text, ",\"new\":", *new_text);

  if (record.reason.has_value()) {
    if (absl::Status s = add_string("reason", *record.reason); !s.ok()) return s;
  } else {
    out += ",\"reason\":null";
  }
  absl::StrAppend(&out, ",\"prev\":\"", Av(prev), "\"}");
  // Readers refuse a line nested deeper than this (ParseEntryLine), so none is written;
  // its length is the writer's to check, with the signature attached.
  const core::JsonLimits depth_only{out.size(), core::kAuditLineJson.max_depth};
  if (absl::Status s = core::CheckJsonBounds(out, depth_only, "audit record old/new"); !s.ok()) return s;
  return out;
}

std::string AttachSignature(std::string_view unsigned_object, const crypto::Signature& signature) {
  std::string_view without_brace = unsigned_object.substr(0, unsigned_object.size() - 1);
  return absl::StrCat(Av(without_brace), Av(kSigOpen), crypto::SignatureToHex(signature), "\"}");
}

absl::StatusOr<SignedParts> SplitSignature(std::string_view text) {
  // The shortest possible object with a sig member is `{` + suffix.
  if (text.size() < kSigSuffixBytes + 1 || text.front() != '{' ||
      text.substr(text.size() - kSigSuffixBytes, kSigOpen.size()) != kSigOpen ||
      text.substr(text.size() - 2) != "\"}") {
    return absl::InvalidArgumentError(
        "expected the object to end with the member ,\"sig\":\"<128 hex>\"}");
  }
  std::string_view hex = text.substr(text.size() - kSignatureHexChars - 2, kSignatureHexChars);
  if (!IsLowerHex(hex, kSignatureHexChars)) {
    return absl::InvalidArgumentError("member \"sig\": expected 128 lowercase hex characters");
  }
  absl::StatusOr<crypto::Signature> signature = crypto::SignatureFromHex(hex);
  if (!signature.ok()) return signature.status();
  return SignedParts{absl::StrCat(Av(text.substr(0, text.size() - kSigSuffixBytes)), "}"),
                     *signature};
}

absl::StatusOr<Entry> EntryFromJson(const nlohmann::json& object, std::string_view line) {
  if (!object.is_object()) return MemberError("(line)", "a JSON object", object);
  Entry entry;

  auto seq = object.find("seq");
  if (seq == object.end()) return absl::InvalidArgumentError("member \"seq\" is missing");
  if (!seq->is_number_unsigned()) return MemberError("seq", "an unsigned integer", *seq);
  entry.seq = seq->get<std::uint64_t>();

  absl::StatusOr<std::string> time = RequireString(object, "time");
  if (!time.ok()) return time.status();
  absl::StatusOr<absl::Time> timestamp = ParseEntryTime(*time);
  if (!timestamp.ok()) return timestamp.status();
  entry.time = *std::move(time);
  entry.timestamp = *timestamp;

  absl::StatusOr<std::string> actor = RequireString(object, "actor");
  if (!actor.ok()) return actor.status();
  if (actor->empty()) return MemberError("actor", "a non-empty identity", *object.find("actor"));
  entry.actor = *std::move(actor);

  absl::StatusOr<std::string> role = RequireString(object, "role");
  if (!role.ok()) return role.status();
  entry.role = *std::move(role);

  absl::StatusOr<std::string> action_name = RequireString(object, "action");
  if (!action_name.ok()) return action_name.status();
  if (!IsValidActionName(*action_name)) {
    return MemberError("action", "dotted lowercase words", *object.find("action"));
  }
  entry.action = *std::move(action_name);

  auto target = object.find("target");
  if (target == object.end()) return absl::InvalidArgumentError("member \"target\" is missing");
  if (!target->is_object()) return MemberError("target", "an object", *target);
  for (const auto& [member, field] :
       {std::pair<std::string_view, std::string*>{"job", &entry.target.job},
        {"parameter", &entry.target.parameter},
        {"participant", &entry.target.participant}}) {
    auto it = target->find(member);
    if (it == target->end()) continue;
    if (!it->is_string()) return MemberError(absl::StrCat("target.", Av(member)), "a string", *it);
    *field = it->get<std::string>();
  }

  for (const auto& [member, field] :
       {std::pair<std::string_view, nlohmann::json*>{"old", &entry.old_value},
        {"new", &entry.new_value}}) {
    auto it = object.find(member);
    if (it == object.end()) {
      return absl::InvalidArgumentError(absl::StrCat("member \"", Av(member), "\" is missing"));
    }
    *field = *it;
  }

  auto reason = object.find("reason");
  if (reason != object.end() && !reason->is_null()) {
    if (!reason->is_string()) return MemberError("reason", "a string or null", *reason);
    entry.reason = reason->get<std::string>();
  }

  absl::StatusOr<std::string> prev = RequireString(object, "prev");
  if (!prev.ok()) return prev.status();
  if (!IsLowerHex(*prev, 64)) {
    return MemberError("prev", "64 lowercase hex characters", *object.find("prev"));
  }
  entry.prev = *std::move(prev);

  absl::StatusOr<std::string> sig = RequireString(object, "sig");
  if (!sig.ok()) return sig.status();
  if (!IsLowerHex(*sig, kSignatureHexChars)) {
    return MemberError("sig", "128 lowercase hex characters", *object.find("sig"));
  }
  entry.sig = *std::move(sig);

  entry.line = std::string(line);
  return entry;
}

absl::StatusOr<Entry> ParseEntryLine(std::string_view line) {
  if (absl::Status s = core::CheckJsonBounds(line, core::kAuditLineJson, "entry"); !s.ok()) return s;
  nlohmann::json object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  return EntryFromJson(object, line);
}

}  // namespace cohort::audit
