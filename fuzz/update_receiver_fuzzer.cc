// Fuzzes the server's receiver of update chunks (core::UpdateReceiver, with the sealed
// stream opener both ends use, wire::SealedSession) as an upload drives it, and the fold
// of an accepted update (core::StreamingFedAvg), which opens the spooled chunks again.
//
// The harness holds both ends of one session (fixed job and client names, fresh X25519
// keys per process). The input is an upload:
//   byte 0     tensors of the update's manifest: 1 + (b % 3)
//   then       per tensor, one byte: its length in floats, 1 + b (up to 256)
//   then       chunk_bytes = 4 * (1 + b % 64): small, so short inputs span many chunks
//   then       flags: bit 0 declares the right chunk count (else the next byte is the
//              count declared), bit 1 bounds the update's L2 norm at 10, bit 2 finishes
//              the upload at the end of the input
//   then       chunks until the input ends, each
//                op      bit 0: the harness seals the payload as the client would (else
//                        the payload is fed as it is: forged or replayed bytes);
//                        bit 1: fed in place (AddChunkInPlace) rather than copied;
//                        bit 2: the next expected index (else the index byte);
//                        bit 3: the declared count (else the count byte)
//                index   u8, count u8
//                length  u16 little-endian, cut to what is left
//                payload the chunk's plaintext (sealed) or its bytes as sent
// Round 3, model version 7 for the seal; bit 4 of op seals for round 4 instead (a chunk
// from another round, which must not open).
//
// Properties beyond "no crash, leak or hang": an update the receiver accepts folds, alone
// at weight 1 into a zero model, to exactly the plaintext the harness sealed, and only
// chunks the harness sealed for this stream are ever accepted.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/fedavg.h"
#include "core/parameter_set.h"
#include "crypto/key_agreement.h"
#include "fuzz/fuzz_scratch.h"
#include "wire/sealing.h"

namespace {

using namespace cohort;

constexpr uint64_t kRound = 3;
constexpr uint64_t kModelVersion = 7;

struct Sessions {
  std::shared_ptr<wire::SealedSession> client;
  std::shared_ptr<wire::SealedSession> server;
};

const Sessions& HarnessSessions() {
  static const Sessions sessions = [] {
    crypto::X25519KeyPair client_keys = crypto::GenerateX25519KeyPair();
    crypto::X25519KeyPair server_keys = crypto::GenerateX25519KeyPair();
    auto as_text = [](const crypto::X25519PublicKey& key) {
      return std::string(reinterpret_cast<const char*>(key.data()), key.size());
    };
    Sessions s;
    s.client = *wire::SealedSession::Agree(client_keys, as_text(server_keys.public_key), crypto::Side::kClient,
                                           "fuzz-job", "site-a");
    s.server = *wire::SealedSession::Agree(server_keys, as_text(client_keys.public_key), crypto::Side::kServer,
                                           "fuzz-job", "site-a");
    return s;
  }();
  return sessions;
}

// Reads the input front to back; past its end every read is 0 / empty.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::vector<std::byte> Bytes(size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    std::vector<std::byte> out(reinterpret_cast<const std::byte*>(data_ + pos_),
                               reinterpret_cast<const std::byte*>(data_ + pos_ + n));
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Sessions& sessions = HarnessSessions();
  Input in(data, size);
  std::vector<core::TensorSpec> tensors;
  const int num_tensors = 1 + in.Byte() % 3;
  for (int t = 0; t < num_tensors; ++t) {
    tensors.push_back({absl::StrCat("t", t), core::DType::kFloat32, {1 + int64_t{in.Byte()}}});
  }
  const core::Manifest manifest(tensors);
  const size_t chunk_bytes = 4 * (1 + in.Byte() % 64);
  const uint32_t right_count = core::ChunkCount(manifest.total_bytes(), chunk_bytes);
  const uint8_t flags = in.Byte();
  const uint32_t declared_count = (flags & 1) ? right_count : in.Byte();
  const core::UpdateLimits limits{.max_l2_norm = (flags & 2) ? 10.0 : 0.0};

  const std::filesystem::path spool = fuzz::ScratchDir() / "update.spool";
  absl::StatusOr<core::UpdateReceiver> receiver = core::UpdateReceiver::Open(
      manifest, declared_count, chunk_bytes, spool, limits,
      sessions.server->StreamOpener(kRound, kModelVersion, declared_count));
  if (!receiver.ok()) fuzz::PropertyFailed(absl::StrCat("Open: ", receiver.status().message()));

  std::vector<std::byte> accepted_plaintext;  // what the accepted chunks hold, in order
  uint32_t next_index = 0;
  while (!in.empty()) {
    const uint8_t op = in.Byte();
    const uint8_t index_byte = in.Byte(), count_byte = in.Byte();
    const uint32_t index = (op & 4) ? next_index : index_byte;
    const uint32_t count = (op & 8) ? declared_count : count_byte;
    const size_t length = size_t{in.Byte()} | size_t{in.Byte()} << 8;
    const std::vector<std::byte> payload = in.Bytes(length);
    std::vector<std::byte> wire_bytes = payload;
    bool sealed_here = false;
    if (op & 1) {
      // The sealer refuses a place no stream has (index past count, count 0): the bytes
      // then go as they are.
      std::vector<std::byte> sealed(crypto::SealedSize(payload.size()));
      if (sessions.client->SealChunk((op & 16) ? kRound + 1 : kRound, kModelVersion, index, count, payload, sealed)
              .ok()) {
        wire_bytes = std::move(sealed);
        sealed_here = true;
      }
    }
    const absl::Status added = (op & 2) ? receiver->AddChunkInPlace(index, count, wire_bytes)
                                        : receiver->AddChunk(index, count, wire_bytes);
    if (!added.ok()) continue;
    // Accepted: only a chunk sealed here, for this round, at the place it was accepted.
    if (!sealed_here || (op & 16) || index != next_index || count != declared_count) {
      fuzz::PropertyFailed(absl::StrCat("accepted chunk ", index, " of ", count, " (op ", op,
                                        ") that was not sealed for its place"));
    }
    accepted_plaintext.insert(accepted_plaintext.end(), payload.begin(), payload.end());
    ++next_index;
  }
  if (!(flags & 4)) return 0;

  absl::StatusOr<core::SpooledUpdate> update = receiver->Finish(1.0, "site-a");
  if (!update.ok()) return 0;
  if (accepted_plaintext.size() != manifest.total_bytes()) {
    fuzz::PropertyFailed(absl::StrCat("finished an update of ", accepted_plaintext.size(), " bytes for a model of ",
                                      manifest.total_bytes()));
  }
  core::StreamingFedAvg fedavg(manifest, /*threads=*/1, /*fold_batch=*/2);
  if (absl::Status s = fedavg.Add(*std::move(update)); !s.ok()) fuzz::PropertyFailed(absl::StrCat("Add: ", s.message()));
  core::ParameterSet global(manifest);
  if (absl::Status s = fedavg.ApplyTo(global); !s.ok()) fuzz::PropertyFailed(absl::StrCat("ApplyTo: ", s.message()));
  if (std::memcmp(global.bytes().data(), accepted_plaintext.data(), accepted_plaintext.size()) != 0) {
    // -0.0 + 0.0 folds to +0.0: compare as floats where the bytes differ.
    const auto* want = reinterpret_cast<const float*>(accepted_plaintext.data());
    const auto* got = reinterpret_cast<const float*>(global.bytes().data());
    for (size_t i = 0; i < accepted_plaintext.size() / sizeof(float); ++i) {
      if (!(want[i] == got[i])) {
        fuzz::PropertyFailed(absl::StrCat("the folded update differs from what was sent at float ", i, ": ",
                                          got[i], " for ", want[i]));
      }
    }
  }
  return 0;
}
