#include "server/tensorboard_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <chrono>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"

namespace cohort::server {
namespace {

// The table of the reflected Castagnoli polynomial 0x82F63B78, built once at compile time.
constexpr std::array<uint32_t, 256> kCrc32cTable = [] {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    table[i] = crc;
  }
  return table;
}();

void PutLittleEndian(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

// Protobuf's wire format: a key is (field number << 3) | wire type, as a varint.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void PutVarint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void PutKey(std::string& out, uint32_t field, WireType type) { PutVarint(out, (uint64_t{field} << 3) | type); }

void PutBytes(std::string& out, uint32_t field, std::string_view bytes) {
  PutKey(out, field, kLengthDelimited);
  PutVarint(out, bytes.size());
  out.append(bytes);
}

std::string EventHeader(double wall_time, std::optional<int64_t> step) {
  std::string event;
  PutKey(event, 1, kFixed64);  // wall_time
  PutLittleEndian(event, std::bit_cast<uint64_t>(wall_time), 8);
  if (step) {
    PutKey(event, 2, kVarint);  // step: int64, negative values as 10-byte two's complement
    PutVarint(event, static_cast<uint64_t>(*step));
  }
  return event;
}

double UnixSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::optional<double> Number(const nlohmann::json& object, const char* key) {
  if (!object.is_object()) return std::nullopt;
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

}  // namespace

uint32_t Crc32c(std::string_view data) {
  uint32_t crc = 0xffffffffu;
  for (const char c : data) crc = kCrc32cTable[(crc ^ static_cast<uint8_t>(c)) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t MaskedCrc32c(std::string_view data) {
  const uint32_t crc = Crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string FrameTfRecord(std::string_view data) {
  std::string record;
  PutLittleEndian(record, data.size(), 8);
  const uint32_t length_crc = MaskedCrc32c(record);
  PutLittleEndian(record, length_crc, 4);
  record.append(data);
  PutLittleEndian(record, MaskedCrc32c(data), 4);
  return record;
}

std::string EncodeScalarsEvent(double wall_time, int64_t step,
                               const std::vector<std::pair<std::string, float>>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    PutBytes(v, 1, tag);  // tag
    PutKey(v, 2, kFixed32);  // simple_value
    PutLittleEndian(v, std::bit_cast<uint32_t>(value), 4);
    PutBytes(summary, 1, v);  // Summary.value
  }
  std::string event = EventHeader(wall_time, step);
  PutBytes(event, 5, summary);  // Event.summary
  return event;
}

std::string EncodeFileVersionEvent(double wall_time) {
  std::string event = EventHeader(wall_time, std::nullopt);
  PutBytes(event, 3, "brain.Event:2");  // file_version
  return event;
}

std::vector<std::pair<std::string, float>> RoundScalars(const nlohmann::json& r) {
  std::vector<std::pair<std::string, float>> scalars;
  auto add = [&](std::string tag, std::optional<double> value) {
    if (value) scalars.emplace_back(std::move(tag), static_cast<float>(*value));
  };
  add("test/loss", Number(r, "test_loss"));
  add("test/accuracy", Number(r, "test_accuracy"));
  add("train/loss", Number(r, "train_loss"));
  add("client_eval/accuracy", Number(r, "client_eval_accuracy"));
  const nlohmann::json clients = r.is_object() ? r.value("clients", nlohmann::json::array()) : nlohmann::json();
  if (clients.is_array()) {
    for (const nlohmann::json& c : clients) {
      if (!c.is_object() || !c.contains("site") || !c["site"].is_string()) continue;
      const std::string site = c["site"].get<std::string>();
      add(absl::StrCat("client_eval/", site, "/accuracy"), Number(c, "eval_accuracy"));
      add(absl::StrCat("client_eval/", site, "/loss"), Number(c, "eval_loss"));
    }
  }
  std::optional<double> seconds = Number(r, "elapsed_seconds");
  add("round/seconds", seconds ? seconds : Number(r, "wall_seconds"));
  if (r.is_object() && r.contains("phase_seconds") && r["phase_seconds"].is_object()) {
    for (const auto& [phase, value] : r["phase_seconds"].items()) {
      if (value.is_number()) add(absl::StrCat("round/", phase, "_seconds"), value.get<double>());
    }
  }
  if (r.is_object() && r.contains("privacy")) add("privacy/epsilon", Number(r["privacy"], "epsilon"));
  if (clients.is_array()) {
    for (const nlohmann::json& c : clients) {
      if (!c.is_object() || !c.contains("site") || !c["site"].is_string() || !c.contains("privacy")) continue;
      std::optional<double> epsilon = Number(c["privacy"], "job_epsilon");
      add(absl::StrCat("privacy/", c["site"].get<std::string>(), "/epsilon"),
          epsilon ? epsilon : Number(c["privacy"], "epsilon"));
    }
  }
  return scalars;
}

TensorBoardWriter::TensorBoardWriter(std::filesystem::path path, storage::File file)
    : path_(std::move(path)), file_(std::move(file)) {}

absl::StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Create(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tensorboard ", dir.string(), ": cannot create the directory: ", ec.message()));
  }
  std::array<char, 256> host{};
  if (::gethostname(host.data(), host.size() - 1) != 0) std::strcpy(host.data(), "localhost");
  const double now = UnixSeconds();
  // A new file per server start, as TensorFlow does: a resumed job adds one beside it.
  const std::filesystem::path path =
      dir / absl::StrCat("events.out.tfevents.", static_cast<int64_t>(now), ".", host.data(), ".", ::getpid());
  absl::StatusOr<storage::File> file =
      storage::File::Open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND, storage::kPublicFileMode);
  if (!file.ok()) return file.status();
  std::unique_ptr<TensorBoardWriter> writer(new TensorBoardWriter(path, std::move(*file)));
  if (absl::Status s = writer->Append(EncodeFileVersionEvent(now)); !s.ok()) return s;
  return writer;
}

absl::Status TensorBoardWriter::WriteRound(const nlohmann::json& round_entry) {
  const std::optional<double> round = Number(round_entry, "round");
  if (!round) return absl::InvalidArgumentError("TensorBoard: a round entry without a \"round\" number");
  return Append(EncodeScalarsEvent(UnixSeconds(), static_cast<int64_t>(*round), RoundScalars(round_entry)));
}

absl::Status TensorBoardWriter::Append(std::string_view event) {
  if (absl::Status s = file_.WriteAll(FrameTfRecord(event)); !s.ok()) return s;
  return file_.DataSync();
}

}  // namespace cohort::server
