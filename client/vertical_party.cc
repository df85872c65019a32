#include "client/vertical_party.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <span>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/job_config.h"
#include "client/party_channels.h"
#include "client/psi_ring.h"
#include "crypto/key_agreement.h"
#include "crypto/party_channel.h"
#include "crypto/psi.h"
#include "crypto/startup_kit.h"
#include "storage/atomic_write.h"
#include "training/model_spec.h"
#include "training/split_learning.h"
#include "training/trainer.h"
#include "wire/convert.h"
#include "wire/federation_client.h"
#include "wire/vertical_client.h"

namespace cohort::client {
namespace {

namespace psi = crypto::psi;
using Clock = std::chrono::steady_clock;

std::span<const uint8_t> BytesOf(std::span<const float> values) {
  return {reinterpret_cast<const uint8_t*>(values.data()), values.size_bytes()};
}

absl::StatusOr<std::vector<float>> FloatsOf(const std::vector<uint8_t>& bytes, size_t expected, const std::string& what) {
  if (bytes.size() != expected * sizeof(float)) {
    return absl::DataLossError(absl::StrCat(what, ": expected ", expected, " values, got ", bytes.size(), " bytes"));
  }
  std::vector<float> values(expected);
  std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}


// The features of `rows` of `table`, back to back.
void Gather(const training::VerticalTable& table, std::span<const size_t> rows, std::vector<float>* out) {
  const size_t width = table.feature_size();
  out->resize(rows.size() * width);
  for (size_t r = 0; r < rows.size(); ++r) {
    std::memcpy(out->data() + r * width, table.features.data() + rows[r] * width, width * sizeof(float));
  }
}

struct EpochMetrics {
  double train_loss = 0, train_accuracy = 0, eval_loss = 0, eval_accuracy = 0, seconds = 0;
};

// One party's run after the server started the job.
class PartyRun {
 public:
  PartyRun(const VerticalPartyOptions& options, const crypto::StartupKit& kit, training::VerticalTable table,
           const crypto::X25519KeyPair& key_pair, wire::VerticalClient& client, v1::VerticalStart start)
      : options_(options), kit_(kit), table_(std::move(table)), key_pair_(key_pair), client_(client),
        start_(std::move(start)) {}

  absl::Status Run() {
    if (absl::Status s = Prepare(); !s.ok()) return s;
    if (absl::Status s = AgreeChannels(); !s.ok()) return s;
    absl::StatusOr<std::vector<size_t>> rows = AlignRows();
    if (!rows.ok()) return rows.status();
    table_ = table_.Rows(*rows);
    if (absl::Status s = CreateModels(); !s.ok()) return s;
    // Feature parties tell the label party their output size (the first split message):
    // the server knows no models, and the top model needs the sum.
    if (!is_label()) {
      const uint64_t size = static_cast<uint64_t>(bottom_->output_size());
      uint8_t bytes[8];
      for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(size >> (8 * i));
      if (absl::Status s = client_.Send(label_name(), "split/size", 0, bytes); !s.ok()) return s;
    } else if (absl::Status s = CollectOutputSizes(); !s.ok()) {
      return s;
    }
    if (absl::Status s = RunEpochs(); !s.ok()) return s;
    return Save();
  }

 private:
  bool is_label() const { return me_ == label_; }
  const std::string& label_name() const { return parties_[label_]; }
  const std::string& job() const { return start_.job(); }

  absl::Status Prepare() {
    parties_.assign(start_.parties().begin(), start_.parties().end());
    const auto own = std::find(parties_.begin(), parties_.end(), kit_.name);
    const auto label = std::find(parties_.begin(), parties_.end(), start_.label_party());
    if (own == parties_.end() || label == parties_.end()) {
      return absl::FailedPreconditionError(absl::StrCat("the server's start names parties [", absl::StrJoin(parties_, ", "),
                                                        "] and label party \"", start_.label_party(),
                                                        "\", which do not include \"", kit_.name, "\" and the label party"));
    }
    me_ = static_cast<size_t>(own - parties_.begin());
    label_ = static_cast<size_t>(label - parties_.begin());
    auto parse = [](const std::string& text, const char* what) -> absl::StatusOr<nlohmann::json> {
      nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat("the job's ", what, " is not JSON"));
      return json;
    };
    absl::StatusOr<nlohmann::json> training_json = parse(start_.training_config_json(), "training_config");
    if (!training_json.ok()) return training_json.status();
    absl::StatusOr<core::TrainingConfig> training = core::ParseTrainingConfig(*training_json);
    if (!training.ok()) return training.status();
    training_ = *training;
    threads_ = options_.threads > 0 ? options_.threads : static_cast<int>(std::max<int64_t>(1, training_.threads));
    training::SetTrainingThreads(threads_);
    absl::StatusOr<nlohmann::json> bottom_json = parse(start_.bottom_model_json(), "bottom_model");
    if (!bottom_json.ok()) return bottom_json.status();
    absl::StatusOr<training::ModelSpec> bottom = training::ParseModelSpec(*bottom_json);
    if (!bottom.ok()) return bottom.status();
    bottom_spec_ = *bottom;
    if (bottom_spec_.input_shape != table_.feature_shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "party \"", kit_.name, "\" has features of shape [", absl::StrJoin(table_.feature_shape, ", "),
          "] but its bottom_model.input_shape says [", absl::StrJoin(bottom_spec_.input_shape, ", "), "]"));
    }
    if (is_label()) {
      absl::StatusOr<nlohmann::json> top_json = parse(start_.top_model_json(), "top_model");
      if (!top_json.ok()) return top_json.status();
      absl::StatusOr<training::ModelSpec> top = training::ParseModelSpec(*top_json);
      if (!top.ok()) return top.status();
      top_spec_ = *top;
    }
    return absl::OkStatus();
  }

  absl::Status AgreeChannels() {
    absl::StatusOr<std::map<std::string, crypto::PartyChannel>> channels =
        AgreePartyChannels(start_, kit_, key_pair_, parties_, me_);
    if (!channels.ok()) return channels.status();
    client_.SetChannels(std::move(*channels), start_.chunk_bytes() > 0 ? start_.chunk_bytes() : 1 << 20);
    return absl::OkStatus();
  }

  // Private set intersection over the ring of parties (client/psi_ring.h): this party's row
  // indices of the shared rows, in the order every party shares.
  absl::StatusOr<std::vector<size_t>> AlignRows() {
    const auto started = Clock::now();
    absl::StatusOr<std::vector<size_t>> rows =
        IntersectOverRing({client_, parties_, me_, label_, job(), threads_}, table_.identifiers);
    if (!rows.ok()) return rows.status();
    // The blinded values' order changes with every run's fresh scalars. Every party holds
    // the same identifier for each shared row, so ordering the shared rows by identifier
    // gives one order at every party that is also the same in every run: a job's held-out
    // rows and batches then depend on its seed alone (and match training::IntersectByIdentifier).
    std::sort(rows->begin(), rows->end(),
              [this](size_t a, size_t b) { return table_.identifiers[a] < table_.identifiers[b]; });
    set_size_ = static_cast<int64_t>(table_.rows());
    v1::PartyReport report;
    report.set_stage(v1::PartyReport::PSI_DONE);
    report.set_set_size(set_size_);
    report.set_intersection_size(static_cast<int64_t>(rows->size()));
    report.set_seconds(std::chrono::duration<double>(Clock::now() - started).count());
    if (absl::Status s = client_.Report(report); !s.ok()) return s;
    spdlog::info("party={} job={} psi: {} own rows, {} shared, {:.2f} s", kit_.name, job(), set_size_, rows->size(),
                 report.seconds());
    if (options_.stats != nullptr) {
      options_.stats->psi_seconds = report.seconds();
      options_.stats->intersection_size = static_cast<int64_t>(rows->size());
    }
    return rows;
  }

  // The label party: every feature party's bottom output size, checked against the top.
  absl::Status CollectOutputSizes() {
    part_sizes_.assign(parties_.size(), 0);
    int64_t sum = 0;
    for (size_t p = 0; p < parties_.size(); ++p) {
      if (p == me_) {
        part_sizes_[p] = bottom_->output_size();
      } else {
        absl::StatusOr<std::vector<uint8_t>> bytes = client_.Receive(parties_[p], "split/size", 0, kPartyMessageWait);
        if (!bytes.ok()) return bytes.status();
        if (bytes->size() != 8) {
          return absl::DataLossError(absl::StrCat("party \"", parties_[p], "\" sent a ", bytes->size(),
                                                  "-byte output size; expected 8"));
        }
        uint64_t size = 0;
        for (int i = 0; i < 8; ++i) size |= static_cast<uint64_t>((*bytes)[static_cast<size_t>(i)]) << (8 * i);
        part_sizes_[p] = static_cast<int64_t>(size);
      }
      sum += part_sizes_[p];
    }
    const int64_t top_input = top_spec_.input_shape.empty() ? -1 : top_spec_.input_shape[0];
    if (sum != top_input) {
      std::vector<std::string> parts;
      for (size_t p = 0; p < parties_.size(); ++p) parts.push_back(absl::StrCat(parties_[p], ": ", part_sizes_[p]));
      return absl::InvalidArgumentError(absl::StrCat("the bottom models' outputs (", absl::StrJoin(parts, ", "),
                                                     ") sum to ", sum, " but top_model.input_shape says ", top_input));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<float>> ReceiveFloats(size_t from, const std::string& topic, uint64_t sequence,
                                                   size_t expected) {
    absl::StatusOr<std::vector<uint8_t>> bytes = client_.Receive(parties_[from], topic, sequence, kPartyMessageWait);
    if (!bytes.ok()) return bytes.status();
    return FloatsOf(*bytes, expected, absl::StrCat("party \"", parties_[from], "\" on ", topic, " #", sequence));
  }

  // One training batch. Returns (loss, correct) at the label party.
  absl::StatusOr<std::pair<double, int64_t>> TrainBatch(std::span<const size_t> rows, uint64_t step) {
    Gather(table_, rows, &scratch_);
    const int64_t count = static_cast<int64_t>(rows.size());
    absl::StatusOr<std::vector<float>> own = bottom_->Forward(scratch_, count, /*train=*/true);
    if (!own.ok()) return own.status();
    if (!is_label()) {
      if (absl::Status s = client_.Send(label_name(), "split/fwd", step, BytesOf(*own)); !s.ok()) return s;
      absl::StatusOr<std::vector<float>> gradient =
          ReceiveFloats(label_, "split/grad", step, own->size());
      if (!gradient.ok()) return gradient.status();
      if (absl::Status s = bottom_->Backward(*gradient); !s.ok()) return s;
      return std::pair<double, int64_t>{0, 0};
    }
    // The feature parties' outputs arrived while this party ran its own bottom.
    std::vector<std::vector<float>> outputs(parties_.size());
    outputs[me_] = std::move(*own);
    for (size_t p = 0; p < parties_.size(); ++p) {
      if (p == me_) continue;
      absl::StatusOr<std::vector<float>> part =
          ReceiveFloats(p, "split/fwd", step, rows.size() * static_cast<size_t>(part_sizes_[p]));
      if (!part.ok()) return part.status();
      outputs[p] = std::move(*part);
    }
    labels_.clear();
    for (size_t r : rows) labels_.push_back(table_.labels[r]);
    const std::vector<std::span<const float>> parts(outputs.begin(), outputs.end());
    absl::StatusOr<training::TopModel::StepResult> result = top_->TrainStep(parts, part_sizes_, labels_);
    if (!result.ok()) return result.status();
    for (size_t p = 0; p < parties_.size(); ++p) {
      if (p == me_) continue;
      std::vector<float>& gradient = result->part_gradients[p];
      training::AddGradientNoise(gradient, start_.gradient_noise_std(), noise_seed_, step, p);
      if (absl::Status s = client_.Send(parties_[p], "split/grad", step, BytesOf(gradient)); !s.ok()) return s;
    }
    if (absl::Status s = bottom_->Backward(result->part_gradients[me_]); !s.ok()) return s;
    return std::pair<double, int64_t>{result->loss, result->correct};
  }

  // Evaluation on the held-out aligned rows; (loss_sum, correct) at the label party.
  absl::StatusOr<training::TopModel::EvalResult> Evaluate(const std::vector<size_t>& rows, int64_t epoch) {
    training::TopModel::EvalResult total;
    const size_t batch = static_cast<size_t>(std::max<int64_t>(1, training_.eval_batch_size));
    const uint64_t batches = (rows.size() + batch - 1) / batch;
    for (uint64_t b = 0; b < batches; ++b) {
      const std::span<const size_t> part(rows.data() + b * batch, std::min(batch, rows.size() - b * batch));
      const uint64_t sequence = static_cast<uint64_t>(epoch) * batches + b;
      Gather(table_, part, &scratch_);
      absl::StatusOr<std::vector<float>> own = bottom_->Forward(scratch_, static_cast<int64_t>(part.size()), false);
      if (!own.ok()) return own.status();
      if (!is_label()) {
        if (absl::Status s = client_.Send(label_name(), "split/eval", sequence, BytesOf(*own)); !s.ok()) return s;
        continue;
      }
      std::vector<std::vector<float>> outputs(parties_.size());
      outputs[me_] = std::move(*own);
      for (size_t p = 0; p < parties_.size(); ++p) {
        if (p == me_) continue;
        absl::StatusOr<std::vector<float>> out =
            ReceiveFloats(p, "split/eval", sequence, part.size() * static_cast<size_t>(part_sizes_[p]));
        if (!out.ok()) return out.status();
        outputs[p] = std::move(*out);
      }
      labels_.clear();
      for (size_t r : part) labels_.push_back(table_.labels[r]);
      const std::vector<std::span<const float>> parts(outputs.begin(), outputs.end());
      absl::StatusOr<training::TopModel::EvalResult> e = top_->Evaluate(parts, part_sizes_, labels_);
      if (!e.ok()) return e.status();
      total.loss_sum += e->loss_sum;
      total.correct += e->correct;
      total.rows += e->rows;
    }
    return total;
  }

  absl::Status CreateModels() {
    const uint64_t seed = start_.seed();
    split_ = training::SplitAlignedRows(table_.rows(), start_.eval_fraction(), seed);
    if (split_.train.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("the ", table_.rows(), " shared rows leave no training rows at "
                                                        "eval_fraction ", start_.eval_fraction()));
    }
    const int64_t batch_size =
        std::max<int64_t>(1, std::min<int64_t>(training_.batch_size, static_cast<int64_t>(split_.train.size())));
    const int64_t steps_per_epoch = (static_cast<int64_t>(split_.train.size()) + batch_size - 1) / batch_size;
    const int64_t epochs = start_.epochs();
    const int64_t total_steps = std::max<int64_t>(1, steps_per_epoch * epochs);
    // Seeds as in training/split_in_process.h: bottom p from seed + p, the top from seed + n.
    absl::StatusOr<std::unique_ptr<training::BottomModel>> bottom =
        training::BottomModel::Create(bottom_spec_, training_, total_steps, seed + me_);
    if (!bottom.ok()) return bottom.status();
    bottom_ = std::move(*bottom);
    if (is_label()) {
      absl::StatusOr<std::unique_ptr<training::TopModel>> top =
          training::TopModel::Create(top_spec_, training_, total_steps, seed + parties_.size());
      if (!top.ok()) return top.status();
      top_ = std::move(*top);
    }
    return absl::OkStatus();
  }

  absl::Status RunEpochs() {
    const uint64_t seed = start_.seed();
    const int64_t batch_size =
        std::max<int64_t>(1, std::min<int64_t>(training_.batch_size, static_cast<int64_t>(split_.train.size())));
    uint64_t step = 0;
    std::vector<size_t> rows;
    for (int64_t epoch = 0; epoch < start_.epochs(); ++epoch) {
      const auto started = Clock::now();
      const std::vector<size_t> order = training::EpochOrder(split_.train.size(), seed, static_cast<uint64_t>(epoch));
      double loss_sum = 0;
      int64_t correct = 0, batches = 0;
      for (size_t begin = 0; begin < order.size(); begin += static_cast<size_t>(batch_size)) {
        const size_t end = std::min(order.size(), begin + static_cast<size_t>(batch_size));
        rows.clear();
        for (size_t i = begin; i < end; ++i) rows.push_back(split_.train[order[i]]);
        absl::StatusOr<std::pair<double, int64_t>> result = TrainBatch(rows, step++);
        if (!result.ok()) return result.status();
        loss_sum += result->first;
        correct += result->second;
        ++batches;
      }
      const double train_seconds = std::chrono::duration<double>(Clock::now() - started).count();
      if (options_.stats != nullptr) {
        options_.stats->train_seconds += train_seconds;
        options_.stats->train_samples += static_cast<int64_t>(split_.train.size());
      }
      absl::StatusOr<training::TopModel::EvalResult> eval = Evaluate(split_.eval, epoch);
      if (!eval.ok()) return eval.status();
      if (!is_label()) continue;
      last_.train_loss = batches > 0 ? loss_sum / static_cast<double>(batches) : 0;
      last_.train_accuracy = static_cast<double>(correct) / static_cast<double>(split_.train.size());
      last_.eval_loss = eval->rows > 0 ? eval->loss_sum / static_cast<double>(eval->rows) : 0;
      last_.eval_accuracy = eval->rows > 0 ? static_cast<double>(eval->correct) / static_cast<double>(eval->rows) : 0;
      last_.seconds = train_seconds;
      v1::PartyReport report;
      report.set_stage(v1::PartyReport::EPOCH_DONE);
      report.set_epoch(epoch + 1);
      report.set_train_loss(last_.train_loss);
      report.set_train_accuracy(last_.train_accuracy);
      report.set_eval_loss(last_.eval_loss);
      report.set_eval_accuracy(last_.eval_accuracy);
      report.set_seconds(train_seconds);
      report.set_train_rows(static_cast<int64_t>(split_.train.size()));
      report.set_eval_rows(static_cast<int64_t>(split_.eval.size()));
      if (options_.stats != nullptr) options_.stats->eval_accuracy = last_.eval_accuracy;
      if (absl::Status s = client_.Report(report); !s.ok()) return s;
      spdlog::info("party={} job={} epoch {}/{}: train loss {:.4f} accuracy {:.4f}, eval loss {:.4f} accuracy {:.4f}, "
                   "{:.2f} s ({:.0f} samples/s)",
                   kit_.name, job(), epoch + 1, start_.epochs(), last_.train_loss, last_.train_accuracy,
                   last_.eval_loss, last_.eval_accuracy, train_seconds,
                   static_cast<double>(split_.train.size()) / std::max(train_seconds, 1e-9));
    }
    return absl::OkStatus();
  }

  absl::Status Save() {
    std::error_code ec;
    std::filesystem::create_directories(options_.out_dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("--out ", options_.out_dir.string(), ": ", ec.message()));
    if (absl::Status s = bottom_->Save(options_.out_dir / "model.pt"); !s.ok()) return s;
    nlohmann::json what = {{"job", job()},
                           {"party", kit_.name},
                           {"role", is_label() ? "label" : "feature"},
                           {"parties", parties_},
                           {"bottom_model", bottom_spec_.config},
                           {"bottom_output_size", bottom_->output_size()},
                           {"rows", set_size_},
                           {"aligned_rows", table_.rows()},
                           {"train_rows", split_.train.size()},
                           {"eval_rows", split_.eval.size()},
                           {"epochs", start_.epochs()},
                           {"files", is_label() ? nlohmann::json{"model.pt", "top.pt"} : nlohmann::json{"model.pt"}}};
    if (is_label()) {
      if (absl::Status s = top_->Save(options_.out_dir / "top.pt"); !s.ok()) return s;
      what["top_model"] = top_spec_.config;
      what["part_sizes"] = part_sizes_;
      what["eval_accuracy"] = last_.eval_accuracy;
      what["eval_loss"] = last_.eval_loss;
      what["train_loss"] = last_.train_loss;
    }
    if (absl::Status s = storage::WriteFileAtomically(options_.out_dir / "party.json", what.dump(2) + "\n"); !s.ok()) {
      return s;
    }
    v1::PartyReport report;
    report.set_stage(v1::PartyReport::FINISHED);
    return client_.Report(report);
  }

  const VerticalPartyOptions& options_;
  const crypto::StartupKit& kit_;
  training::VerticalTable table_;
  const crypto::X25519KeyPair& key_pair_;
  wire::VerticalClient& client_;
  const v1::VerticalStart start_;

  std::vector<std::string> parties_;
  size_t me_ = 0, label_ = 0;
  core::TrainingConfig training_;
  int threads_ = 1;
  training::ModelSpec bottom_spec_, top_spec_;
  std::unique_ptr<training::BottomModel> bottom_;
  std::unique_ptr<training::TopModel> top_;
  std::vector<int64_t> part_sizes_;  // label party: per party, config order
  training::AlignedSplit split_;
  int64_t set_size_ = 0;
  EpochMetrics last_;
  std::vector<float> scratch_;
  std::vector<int64_t> labels_;
  // The label-protection noise's seed is this party's own secret: drawn from the
  // kernel's generator, never the job's seed, which every feature party knows and could
  // use to regenerate the noise and subtract it.
  const uint64_t noise_seed_ = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
};

}  // namespace

absl::Status RunVerticalParty(const VerticalPartyOptions& options) {
  absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(options.kit_dir);
  if (!kit.ok()) return kit.status();
  absl::StatusOr<wire::SiteConnection> site = wire::SiteConnectionFromKit(options.kit_dir);
  if (!site.ok()) return site.status();
  if (!options.server_address.empty()) site->connection.address = options.server_address;
  absl::StatusOr<training::VerticalTable> table = training::ReadVerticalTable(options.data);
  if (!table.ok()) {
    return absl::Status(table.status().code(), absl::StrCat("party \"", kit->name, "\": ", table.status().message()));
  }
  const crypto::X25519KeyPair key_pair = crypto::GenerateX25519KeyPair();
  absl::StatusOr<crypto::PartyIntroduction> intro = crypto::IntroduceParty(*kit, kit->federation, key_pair);
  if (!intro.ok()) return intro.status();
  v1::PartyHello hello;
  *hello.mutable_introduction() = wire::ToProto(*intro);
  hello.set_id_column(options.data.id_column);
  for (int64_t d : table->feature_shape) hello.add_feature_shape(d);
  hello.set_rows(static_cast<int64_t>(table->rows()));
  hello.set_has_labels(table->has_labels());
  hello.set_num_classes(table->num_classes);
  spdlog::info("party={} {} rows, features [{}]{}; connecting to {}", kit->name, table->rows(),
               absl::StrJoin(table->feature_shape, ", "), table->has_labels() ? ", with labels" : "",
               site->connection.address);

  wire::VerticalClientOptions client_options;
  client_options.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(options.connect_timeout_s * 1000));
  client_options.reconnect_for = std::chrono::milliseconds(static_cast<int64_t>(options.reconnect_for_s * 1000));
  absl::StatusOr<std::unique_ptr<wire::VerticalClient>> client =
      wire::VerticalClient::Connect(site->connection, std::move(hello), client_options);
  if (!client.ok()) return client.status();
  absl::StatusOr<v1::VerticalStart> start = (*client)->WaitForStart(std::chrono::hours(1));
  if (!start.ok()) return start.status();
  spdlog::info("party={} job={} started: parties [{}], label party {}", kit->name, start->job(),
               absl::StrJoin(start->parties(), ", "), start->label_party());

  PartyRun run(options, *kit, std::move(*table), key_pair, **client, std::move(*start));
  absl::Status result = run.Run();
  if (options.stats != nullptr) {
    options.stats->bytes_sent = (*client)->bytes_sent();
    options.stats->bytes_received = (*client)->bytes_received();
  }
  if (!result.ok()) {
    if (result.code() == absl::StatusCode::kAborted) return result;  // the server's reason
    v1::PartyReport failed;
    failed.set_stage(v1::PartyReport::FAILED);
    failed.set_error(std::string(result.message()));
    (void)(*client)->Report(failed);
    // The server aborts the job with this party's error; wait for that to go out.
    (void)(*client)->WaitForFinish(std::chrono::seconds(5));
    return result;
  }
  return (*client)->WaitForFinish(std::chrono::minutes(5));
}

}  // namespace cohort::client
