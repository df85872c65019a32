#pragma once
// The per-round scalars of a job as a TensorBoard event file, so its curves show in a
// TensorBoard people already run (`tensorboard --logdir DIR`). No TensorFlow: the few
// protobuf messages are encoded here by hand, on protobuf's wire format.
//
// File: DIR/events.out.tfevents.<unix seconds>.<host>.<pid> (TensorBoard reads every file
// whose name contains "tfevents"), a sequence of TFRecords:
//
//   length       uint64, little-endian: the number of data bytes
//   length crc   uint32, little-endian: MaskedCrc32c of the 8 length bytes
//   data         `length` bytes: one serialized tensorflow.Event
//   data crc     uint32, little-endian: MaskedCrc32c of the data
//
// The messages, with TensorFlow's field numbers (tensorflow/core/util/event.proto and
// tensorflow/core/framework/summary.proto):
//
//   Event         { double wall_time = 1; int64 step = 2; string file_version = 3;
//                   Summary summary = 5; }
//   Summary       { repeated Value value = 1; }
//   Summary.Value { string tag = 1; float simple_value = 2; }
//
// The first record is an Event with file_version "brain.Event:2"; then one Event per
// round, at step = round, holding every scalar of the round (WriteRound lists the tags).
// Each round is appended and fdatasync'd through storage::File before the next.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "storage/file.h"

namespace cohort::server {

// CRC-32C (Castagnoli), and the rotated, offset form TFRecord stores.
uint32_t Crc32c(std::string_view data);
uint32_t MaskedCrc32c(std::string_view data);
// One TFRecord around `data`.
std::string FrameTfRecord(std::string_view data);
// A serialized Event: wall_time and step, with a summary of (tag, simple_value) pairs.
std::string EncodeScalarsEvent(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& scalars);
// The Event that opens an event file (file_version "brain.Event:2").
std::string EncodeFileVersionEvent(double wall_time);

// The scalars of one summary.json round entry (server/round_recorder.h), in this order,
// each only when the entry has it:
//   test/loss, test/accuracy                  server-side evaluation of the new model
//   train/loss                                the sites' training loss, weighted by samples
//   client_eval/accuracy                      the sites' held-out accuracy, weighted
//   client_eval/SITE/accuracy, client_eval/SITE/loss   each site's
//   round/seconds                             elapsed_seconds, else wall_seconds
//   round/PHASE_seconds                       each phase_seconds member
//   privacy/epsilon                           the job's spend under client-level DP
//   privacy/SITE/epsilon                      each site's DP-SGD spend (the server's mirror
//                                             of its ledger, job_epsilon, else epsilon)
std::vector<std::pair<std::string, float>> RoundScalars(const nlohmann::json& round_entry);

class TensorBoardWriter {
 public:
  // Creates `dir` (and its parents) and a new event file in it, opened with its first
  // record written and synced. Errors name the directory.
  static absl::StatusOr<std::unique_ptr<TensorBoardWriter>> Create(const std::filesystem::path& dir);
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // Appends the round's scalars (RoundScalars) as one Event at step = its "round", then
  // fdatasync. Not thread-safe: the recorder calls it from the thread that closes rounds.
  absl::Status WriteRound(const nlohmann::json& round_entry);
  const std::filesystem::path& path() const { return path_; }

 private:
  TensorBoardWriter(std::filesystem::path path, storage::File file);
  absl::Status Append(std::string_view event);

  std::filesystem::path path_;
  storage::File file_;
};

}  // namespace cohort::server
