#pragma once
// The "vertical" section of a job config (job_type "vertical"): who the parties are, which
// one holds the labels, each party's bottom model and the top model, and how long to
// train. docs/vertical.md shows a whole file.
//
//   "job_type": "vertical",
//   "vertical": {
//     "id_column": "id",              every party's identifier column (they must agree)
//     "label_party": "bank",          the party holding the labels, the top model and loss
//     "epochs": 30,
//     "eval_fraction": 0.2,           share of the aligned rows held out for evaluation
//     "gradient_noise_std": 0.0,      label protection: Gaussian noise on the gradients
//                                     returned to feature parties (0: off)
//     "party_timeout_s": 60,          a party silent this long fails the job
//     "chunk_bytes": 1048576,         PSI lists travel in chunks of this many bytes
//     "top_model": {model config},    input_shape [sum of the bottom output sizes]
//     "parties": [
//       {"name": "bank", "bottom_model": {model config},
//        "data": {party data spec, training/vertical_data.h}},   data: `cohort run` only
//       {"name": "clinic", ...}]
//   }
// The training_config section (optimizer, learning rate, batch size...) applies to every
// part. Model configs are validated by the training layer; this checks the rest.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace cohort::core {

struct VerticalParty {
  std::string name;                                         // core::ValidateName
  nlohmann::json bottom_model = nlohmann::json::object();   // model config
  nlohmann::json data = nlohmann::json::object();           // party data spec; may be empty
};

struct VerticalConfig {
  std::string id_column = "id";
  std::string label_party;
  int64_t epochs = 10;
  double eval_fraction = 0.2;
  double gradient_noise_std = 0.0;
  double party_timeout_s = 60;
  int64_t chunk_bytes = 1 << 20;
  nlohmann::json top_model = nlohmann::json::object();
  std::vector<VerticalParty> parties;  // at least 2, unique names, label_party among them

  // Index of `party` in `parties`, or -1.
  int PartyIndex(const std::string& party) const;
};

// Errors name the key: `vertical.parties[1].name: expected a name ...`.
absl::StatusOr<VerticalConfig> ParseVerticalConfig(const nlohmann::json& json);
nlohmann::json ToJson(const VerticalConfig& config);

}  // namespace cohort::core
