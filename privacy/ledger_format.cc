#include "privacy/ledger_format.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "storage/sha256.h"

namespace cohort::privacy {
namespace {

using Json = nlohmann::ordered_json;

std::string Dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

absl::Status Corrupt(absl::string_view why) {
  return absl::DataLossError(why);
}

// Typed field access that reports what was wrong instead of throwing.
class Fields {
 public:
  explicit Fields(const Json& object) : object_(object) {}

  absl::StatusOr<const Json*> Get(const char* key, Json::value_t type) const {
    auto it = object_.find(key);
    if (it == object_.end()) {
      return Corrupt(absl::StrCat("missing field \"", key, "\""));
    }
    bool ok = false;
    switch (type) {
      case Json::value_t::number_float:
        ok = it->is_number();
        break;
      case Json::value_t::number_integer:
        ok = it->is_number_integer();
        break;
      default:
        ok = it->type() == type;
    }
    if (!ok) {
      return Corrupt(absl::StrCat("field \"", key, "\" has the wrong type (",
                                  it->type_name(), ")"));
    }
    return &*it;
  }
  absl::StatusOr<std::string> String(const char* key) const {
    auto field = Get(key, Json::value_t::string);
    if (!field.ok()) return field.status();
    return (*field)->get<std::string>();
  }
  absl::StatusOr<double> Number(const char* key) const {
    auto field = Get(key, Json::value_t::number_float);
    if (!field.ok()) return field.status();
    return (*field)->get<double>();
  }
  absl::StatusOr<int64_t> Integer(const char* key) const {
    auto field = Get(key, Json::value_t::number_integer);
    if (!field.ok()) return field.status();
    return (*field)->get<int64_t>();
  }

 private:
  const Json& object_;
};

// Assigns the value of a StatusOr expression or returns its error.
#define COHORT_LEDGER_ASSIGN(lhs, expr)           \
  auto lhs##_or = (expr);                         \
  if (!lhs##_or.ok()) return lhs##_or.status();   \
  auto lhs = *std::move(lhs##_or)

absl::StatusOr<Json> ParseObject(std::string_view line, const char* kind) {
  if (absl::Status s = core::CheckJsonBounds(line, core::kLedgerLineJson, "entry"); !s.ok()) {
    return Corrupt(s.message());
  }
  Json json = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return Corrupt("not a JSON object (corrupt or edited)");
  }
  COHORT_LEDGER_ASSIGN(found, Fields(json).String("kind"));
  if (found != kind) {
    return Corrupt(
        absl::StrCat("expected kind \"", kind, "\", found \"", found, "\""));
  }
  return json;
}

}  // namespace

std::string_view MechanismName(Mechanism mechanism) {
  switch (mechanism) {
    case Mechanism::kDpSgd:
      return "dp-sgd";
    case Mechanism::kClientDp:
      return "client-dp";
  }
  return "unknown";
}

absl::Status ValidateText(std::string_view text, std::string_view key) {
  if (text.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(key), ": expected non-empty text, got \"\""));
  }
  try {
    (void)Json(std::string(text)).dump();
  } catch (const Json::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(key), ": expected UTF-8 text"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSpendRequest(const SpendRequest& request) {
  if (absl::Status s = ValidateText(request.job, "job"); !s.ok()) return s;
  if (request.round < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("round: expected an integer >= 0, got ", request.round));
  }
  if (absl::Status s =
          ValidateSamplingRate(request.sampling_rate, "sampling_rate");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          ValidateNoiseMultiplier(request.noise_multiplier, "noise_multiplier");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateSteps(request.steps, "steps"); !s.ok()) return s;
  return ValidateClipNorm(request.clip_norm, "clip_norm");
}

namespace ledger_format {

std::string ZeroHash() { return std::string(64, '0'); }

std::string HashLine(std::string_view line) { return storage::Sha256Hex(line); }

std::string NowRfc3339() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const long long millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(
          now.time_since_epoch())
          .count() %
      1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &utc);
  char out[48];
  std::snprintf(out, sizeof(out), "%s.%03lldZ", date, millis);
  return out;
}

std::string EncodeHeader(const Header& header) {
  Json json;
  json["kind"] = "header";
  json["version"] = kVersion;
  json["site"] = header.site;
  json["budget"] = {{"epsilon", header.budget.epsilon},
                    {"delta", header.budget.delta}};
  json["accountant"] = kAccountantName;
  json["created"] = header.created;
  json["prev"] = header.prev;
  return Dump(json);
}

std::string EncodeSpend(const SpendEntry& entry) {
  const SpendRequest& request = entry.request;
  Json json;
  json["kind"] = "spend";
  json["seq"] = entry.seq;
  json["time"] = entry.time;
  json["job"] = request.job;
  json["round"] = request.round;
  json["mechanism"] = std::string(MechanismName(request.mechanism));
  json["parameters"] = {{"q", request.sampling_rate},
                        {"sigma", request.noise_multiplier},
                        {"steps", request.steps},
                        {"clip", request.clip_norm}};
  json["epsilon_after"] = entry.epsilon_after;
  json["delta"] = entry.delta;
  json["prev"] = entry.prev;
  return Dump(json);
}

absl::StatusOr<Header> ParseHeader(std::string_view line) {
  COHORT_LEDGER_ASSIGN(json, ParseObject(line, "header"));
  Fields fields(json);
  COHORT_LEDGER_ASSIGN(version, fields.Integer("version"));
  if (version != kVersion) {
    return Corrupt(absl::StrCat("unsupported format version ", version,
                                " (this build reads ", kVersion, ")"));
  }
  Header header;
  COHORT_LEDGER_ASSIGN(site, fields.String("site"));
  COHORT_LEDGER_ASSIGN(budget, fields.Get("budget", Json::value_t::object));
  Fields budget_fields(*budget);
  COHORT_LEDGER_ASSIGN(epsilon, budget_fields.Number("epsilon"));
  COHORT_LEDGER_ASSIGN(delta, budget_fields.Number("delta"));
  COHORT_LEDGER_ASSIGN(created, fields.String("created"));
  COHORT_LEDGER_ASSIGN(prev, fields.String("prev"));
  header.site = std::move(site);
  header.budget = {epsilon, delta};
  header.created = std::move(created);
  header.prev = std::move(prev);
  if (absl::Status s = ValidatePrivacyBudget(header.budget, "budget"); !s.ok()) {
    return Corrupt(s.message());
  }
  return header;
}

absl::StatusOr<SpendEntry> ParseSpend(std::string_view line) {
  COHORT_LEDGER_ASSIGN(json, ParseObject(line, "spend"));
  Fields fields(json);
  SpendEntry entry;
  COHORT_LEDGER_ASSIGN(seq, fields.Integer("seq"));
  COHORT_LEDGER_ASSIGN(time, fields.String("time"));
  COHORT_LEDGER_ASSIGN(job, fields.String("job"));
  COHORT_LEDGER_ASSIGN(round, fields.Integer("round"));
  COHORT_LEDGER_ASSIGN(mechanism, fields.String("mechanism"));
  COHORT_LEDGER_ASSIGN(parameters, fields.Get("parameters", Json::value_t::object));
  Fields params(*parameters);
  COHORT_LEDGER_ASSIGN(q, params.Number("q"));
  COHORT_LEDGER_ASSIGN(sigma, params.Number("sigma"));
  COHORT_LEDGER_ASSIGN(steps, params.Integer("steps"));
  COHORT_LEDGER_ASSIGN(clip, params.Number("clip"));
  COHORT_LEDGER_ASSIGN(epsilon_after, fields.Number("epsilon_after"));
  COHORT_LEDGER_ASSIGN(delta, fields.Number("delta"));
  COHORT_LEDGER_ASSIGN(prev, fields.String("prev"));

  if (mechanism == MechanismName(Mechanism::kDpSgd)) {
    entry.request.mechanism = Mechanism::kDpSgd;
  } else if (mechanism == MechanismName(Mechanism::kClientDp)) {
    entry.request.mechanism = Mechanism::kClientDp;
  } else {
    return Corrupt(absl::StrCat("unknown mechanism \"", mechanism,
                                "\" (expected \"dp-sgd\" or \"client-dp\")"));
  }
  entry.seq = seq;
  entry.time = std::move(time);
  entry.request.job = std::move(job);
  entry.request.round = round;
  entry.request.sampling_rate = q;
  entry.request.noise_multiplier = sigma;
  entry.request.steps = steps;
  entry.request.clip_norm = clip;
  entry.epsilon_after = epsilon_after;
  entry.delta = delta;
  entry.prev = std::move(prev);
  if (absl::Status s = ValidateSpendRequest(entry.request); !s.ok()) {
    return Corrupt(s.message());
  }
  return entry;
}

#undef COHORT_LEDGER_ASSIGN

std::string QuotedForLog(std::string_view text) {
  return Dump(Json(std::string(text)));
}

}  // namespace ledger_format
}  // namespace cohort::privacy
