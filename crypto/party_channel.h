#pragma once
// End-to-end sealed messages between the parties of a vertical job, relayed by a server
// that cannot read them (docs/vertical.md, "What the server learns").
//
// Introduction. Each party makes a fresh X25519 key pair for the job run and signs
//   "cohort party key v1" || u16 len(job) || job || u16 len(party) || party || public key
// with the private key of its startup kit (ECDSA P-256 or whatever key.pem holds; EVP).
// The server relays every party's PartyIntroduction (name, certificate PEM, public key,
// signature) to the others. A party accepts an introduction only if the certificate
// verifies against its own kit's ca.pem, names the party it claims with the site role, and
// the signature verifies under the certificate's key: a server that substitutes its own
// key cannot produce that signature, so it cannot stand in the middle. Site kits carry no
// CRL: a revoked site is kept out by the server's own check at the TLS handshake, so an
// introduction is checked against ca.pem alone. The signed `job` names the scope the key
// was made for (the job, or the federation when the job is not known yet); a fresh key
// pair per run is what keeps an old introduction from being useful to anyone.
//
// Channel. Two parties agree one key per direction (X25519, then HKDF-SHA256 binding the
// job, both names and both public keys; the lexicographically smaller name's key first).
// A message is sealed with AES-256-GCM under the sender's direction key; its associated
// data binds the job, sender, recipient, a topic (e.g. "psi/ring/2/1", "split/fwd") and
// a sequence number, so a message opens only as the message it was sealed as: a replayed,
// reordered, redirected or retitled message fails to open with DataLoss.
//
// Key schedule and associated data (integers big-endian; "first" is the party whose name
// sorts first bytewise, so both ends build the same bytes):
//   shared      = X25519(own secret key, peer public key)       all zeros: refused
//   key(dir)    = HKDF-SHA256(ikm = shared, salt = "cohort/party-keys/v1", L = 32,
//                 info = "cohort party key: first to second" (or "second to first")
//                        || u16 len(job) || job || u16 len(first) || first
//                        || u16 len(second) || second || first's key || second's key)
//   sealed      = nonce (12, random) || AES-256-GCM ciphertext || tag (16)
//   AAD         = "cohort party message v1" || u16 len(job) || job || u16 len(sender) ||
//                 sender || u16 len(recipient) || recipient || u16 len(topic) || topic ||
//                 u64 sequence
// Job, names and topics are 1 to kMaxKeyContextIdSize bytes (InvalidArgument otherwise).
// Random nonces allow about 2^32 messages per direction key (NIST SP 800-38D, 8.3).

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/key_agreement.h"
#include "crypto/secret.h"
#include "crypto/startup_kit.h"

namespace cohort::crypto {

struct PartyIntroduction {
  std::string job;
  std::string party;            // the party's site name, as in its certificate
  std::string certificate_pem;  // the party's certificate
  X25519PublicKey public_key{};
  std::vector<std::uint8_t> signature;  // over the layout above, by the certificate's key
};

// Signs `key_pair.public_key` for `job` with the kit's private key.
absl::StatusOr<PartyIntroduction> IntroduceParty(const StartupKit& kit, std::string_view job,
                                                 const X25519KeyPair& key_pair);

// Checks an introduction relayed from `expected_party` against `ca_pem` as above.
// PermissionDenied names the party and what failed (certificate chain, name, role,
// signature, job).
absl::Status VerifyPartyIntroduction(const PartyIntroduction& introduction, std::string_view ca_pem,
                                     std::string_view job, std::string_view expected_party);

// One party's end of a channel with one peer. Seal and Open are not thread-safe; use one
// channel per thread or guard it.
class PartyChannel {
 public:
  // `own` is this party's key pair for the job run; `peer` a verified introduction. The keys
  // bind `job`, whatever scope the introduction was signed for. InvalidArgument when the
  // peer has this party's own name; FailedPrecondition when its key is a low-order point.
  static absl::StatusOr<PartyChannel> Agree(std::string_view job, std::string_view own_party,
                                            const X25519KeyPair& own, const PartyIntroduction& peer);

  // nonce || ciphertext || tag (28 bytes more than `plaintext`).
  absl::StatusOr<std::vector<std::uint8_t>> Seal(std::string_view topic, std::uint64_t sequence,
                                                 std::span<const std::uint8_t> plaintext);
  // DataLoss when the message was not sealed by the peer for this party, topic and
  // sequence, or was altered.
  absl::StatusOr<std::vector<std::uint8_t>> Open(std::string_view topic, std::uint64_t sequence,
                                                 std::span<const std::uint8_t> sealed);

  const std::string& peer() const { return peer_; }

 private:
  PartyChannel() = default;
  std::string job_, own_, peer_;
  SecretBytes send_key_, receive_key_;
};

}  // namespace cohort::crypto
