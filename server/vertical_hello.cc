// A party's hello checked against the job: the second half of the vertical driver's
// start, kept apart from the routing and recording in vertical_job.cc. Every refusal names
// the party and the job key it disagrees with.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/quote.h"
#include "server/vertical_job.h"

namespace cohort::server {
namespace {

// Elements of a shape the job config validated (core::ParseVerticalConfig).
int64_t Product(const nlohmann::json& shape) {
  int64_t n = 1;
  for (const nlohmann::json& d : shape) n *= d.get<int64_t>();
  return n;
}

}  // namespace

absl::Status VerticalJob::CheckHello(const Party& party, const v1::PartyHello& hello) const {
  const core::VerticalConfig& v = options_.config.vertical;
  const core::VerticalParty& spec = v.parties[static_cast<size_t>(v.PartyIndex(party.name))];
  const std::string who = absl::StrCat("party ", "\"", party.name, "\"");
  if (hello.id_column() != v.id_column) {
    return absl::InvalidArgumentError(absl::StrCat(who, " uses identifier column ", core::QuotePrefix(hello.id_column()),
                                                   " but the job says \"", v.id_column, "\" (vertical.id_column)"));
  }
  int64_t features = 1;
  for (int64_t d : hello.feature_shape()) features = d > 0 && features <= (int64_t{1} << 40) / d ? features * d : -1;
  const int64_t expected = Product(spec.bottom_model["input_shape"]);
  if (hello.feature_shape().empty() || features != expected) {
    return absl::InvalidArgumentError(absl::StrCat(who, " has ", features < 0 ? 0 : features,
                                                   " feature columns but its bottom_model.input_shape says ", expected,
                                                   " (its rows have shape ", "[", absl::StrJoin(hello.feature_shape(), ", "), "]",
                                                   ", the model expects ", spec.bottom_model["input_shape"].dump(), ")"));
  }
  if (hello.rows() <= 0) return absl::InvalidArgumentError(absl::StrCat(who, " has no rows"));
  const bool label_party = party.name == v.label_party;
  if (hello.has_labels() && !label_party) {
    return absl::InvalidArgumentError(absl::StrCat(who, " holds labels, but the job's label party is \"",
                                                   v.label_party, "\" (vertical.label_party); remove its label column"));
  }
  if (!hello.has_labels() && label_party) {
    return absl::InvalidArgumentError(absl::StrCat(who, " is the label party (vertical.label_party) but holds no labels; "
                                                   "give it a label column"));
  }
  if (label_party && hello.num_classes() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(who, " has labels of ", hello.num_classes(),
                                                   " classes; at least 2 are needed"));
  }
  if (hello.introduction().public_key().size() != 32) {
    return absl::InvalidArgumentError(absl::StrCat(who, " sent a public key of ", hello.introduction().public_key().size(),
                                                   " bytes; an X25519 key has 32"));
  }
  return absl::OkStatus();
}

}  // namespace cohort::server
