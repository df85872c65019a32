#include "core/vertical_config.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "core/config_reader.h"
#include "core/limits.h"
#include "core/names.h"
#include "core/quote.h"

namespace cohort::core {
namespace {

// More parties than this is a configuration mistake, not a federation: the PSI ring and
// the label party's top model both grow with every party.
constexpr int64_t kMaxParties = 64;
constexpr double kMaxTimeoutSeconds = 7 * 24 * 3600.0;

// A model config the server must read without the training layer: an object whose
// "input_shape" is a non-empty array of integers >= 1 (the training layer checks the rest).
absl::Status CheckModelConfig(const std::string& key, const nlohmann::json& model) {
  if (!model.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected a model config object, got ", JsonPrefix(model)));
  }
  if (!model.contains("input_shape")) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, ".input_shape: missing; the model must say the shape of one row, e.g. [15]"));
  }
  const nlohmann::json& shape = model.at("input_shape");
  bool ok = shape.is_array() && !shape.empty() && shape.size() <= 8;
  for (const nlohmann::json& d : shape) ok = ok && d.is_number_integer() && d.get<int64_t>() >= 1 && d.get<int64_t>() <= (1 << 24);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        key, ".input_shape: expected 1 to 8 integers in [1, 16777216], got ", JsonPrefix(shape)));
  }
  return absl::OkStatus();
}

}  // namespace

int VerticalConfig::PartyIndex(const std::string& party) const {
  for (size_t i = 0; i < parties.size(); ++i) {
    if (parties[i].name == party) return static_cast<int>(i);
  }
  return -1;
}

absl::StatusOr<VerticalConfig> ParseVerticalConfig(const nlohmann::json& json) {
  VerticalConfig c;
  ConfigReader r("vertical", json);
  r.String("id_column", &c.id_column);
  r.String("label_party", &c.label_party);
  r.Integer("epochs", &c.epochs, 1, 100000);
  r.Number("eval_fraction", &c.eval_fraction, 0, 0.9);
  r.Number("gradient_noise_std", &c.gradient_noise_std, 0, 1e6);
  r.Number("party_timeout_s", &c.party_timeout_s, 0, kMaxTimeoutSeconds, /*min_exclusive=*/true);
  r.Integer("chunk_bytes", &c.chunk_bytes, static_cast<int64_t>(kMinChunkBytes), static_cast<int64_t>(kMaxChunkBytes));
  r.Object("top_model", &c.top_model);
  r.Known("parties");
  if (absl::Status s = r.Finish(); !s.ok()) return s;

  if (c.id_column.empty() || c.id_column.size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat("vertical.id_column: expected a column name of 1 to 256 bytes, got ",
                                                   JsonPrefix(json.at("id_column"))));
  }
  if (!json.contains("top_model")) {
    return absl::InvalidArgumentError(
        "vertical.top_model: missing; the label party's model over the concatenated bottom outputs");
  }
  if (absl::Status s = CheckModelConfig("vertical.top_model", c.top_model); !s.ok()) return s;

  if (!json.contains("parties")) {
    return absl::InvalidArgumentError("vertical.parties: missing; list at least 2 parties, each {\"name\", \"bottom_model\"}");
  }
  const nlohmann::json& parties = json.at("parties");
  if (!parties.is_array() || parties.size() < 2 || parties.size() > static_cast<size_t>(kMaxParties)) {
    return absl::InvalidArgumentError(absl::StrCat("vertical.parties: expected a list of 2 to ", kMaxParties,
                                                   " parties, got ", JsonPrefix(parties)));
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < parties.size(); ++i) {
    const std::string key = absl::StrCat("vertical.parties[", i, "]");
    VerticalParty party;
    ConfigReader pr(key, parties[i]);
    pr.String("name", &party.name);
    pr.Object("bottom_model", &party.bottom_model);
    pr.Object("data", &party.data);
    if (absl::Status s = pr.Finish(); !s.ok()) return s;
    if (!parties[i].contains("name")) return absl::InvalidArgumentError(absl::StrCat(key, ".name: missing"));
    if (absl::Status s = ValidateName(key + ".name", party.name); !s.ok()) return s;
    if (!seen.insert(party.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, ".name: party \"", party.name, "\" is listed twice; each party once"));
    }
    if (!parties[i].contains("bottom_model")) {
      return absl::InvalidArgumentError(absl::StrCat(key, ".bottom_model: missing; the party's model over its own columns"));
    }
    if (absl::Status s = CheckModelConfig(key + ".bottom_model", party.bottom_model); !s.ok()) return s;
    c.parties.push_back(std::move(party));
  }

  if (c.label_party.empty()) {
    return absl::InvalidArgumentError("vertical.label_party: missing; name the party that holds the labels");
  }
  if (c.PartyIndex(c.label_party) < 0) {
    std::string names;
    for (const VerticalParty& p : c.parties) absl::StrAppend(&names, names.empty() ? "" : ", ", p.name);
    return absl::InvalidArgumentError(absl::StrCat("vertical.label_party: ", QuotePrefix(c.label_party),
                                                   " is not one of vertical.parties (", names, ")"));
  }
  return c;
}

nlohmann::json ToJson(const VerticalConfig& c) {
  nlohmann::json parties = nlohmann::json::array();
  for (const VerticalParty& p : c.parties) {
    nlohmann::json party = {{"name", p.name}, {"bottom_model", p.bottom_model}};
    if (!p.data.empty()) party["data"] = p.data;
    parties.push_back(std::move(party));
  }
  return {{"id_column", c.id_column},
          {"label_party", c.label_party},
          {"epochs", c.epochs},
          {"eval_fraction", c.eval_fraction},
          {"gradient_noise_std", c.gradient_noise_std},
          {"party_timeout_s", c.party_timeout_s},
          {"chunk_bytes", c.chunk_bytes},
          {"top_model", c.top_model},
          {"parties", std::move(parties)}};
}

}  // namespace cohort::core
