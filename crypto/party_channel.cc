#include "crypto/party_channel.h"

#include <sodium.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/quote.h"
#include "crypto/aes_gcm.h"
#include "crypto/certificates.h"
#include "crypto/hkdf.h"
#include "crypto/openssl_util.h"
#include "crypto/sodium_util.h"
#include "crypto/x509_util.h"

namespace cohort::crypto {
namespace {

using internal::OpenSslError;
using internal::PkeyPtr;
using internal::ToAbsl;

constexpr std::string_view kIntroductionTag = "cohort party key v1";
constexpr std::string_view kKeySalt = "cohort/party-keys/v1";
// Direction labels: "first" is the party whose name sorts first (bytewise).
constexpr std::string_view kFirstToSecondLabel = "cohort party key: first to second";
constexpr std::string_view kSecondToFirstLabel = "cohort party key: second to first";
constexpr std::string_view kMessageTag = "cohort party message v1";
constexpr std::size_t kSealOverhead = Aes256Gcm::kNonceSize + Aes256Gcm::kTagSize;

std::span<const std::uint8_t> Bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// Job, party names and topics travel as u16 lengths and go into HKDF's info (at most 1024
// bytes in OpenSSL), so each is held to 1..kMaxKeyContextIdSize bytes.
absl::Status CheckField(absl::string_view what, std::string_view value) {
  if (!value.empty() && value.size() <= kMaxKeyContextIdSize) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, ": expected 1 to ", kMaxKeyContextIdSize,
                                                 " bytes, got ", value.size(), " (",
                                                 core::QuotePrefix(value), ")"));
}

void AppendWithLength(std::vector<std::uint8_t>& out, std::string_view value) {
  out.push_back(static_cast<std::uint8_t>(value.size() >> 8));
  out.push_back(static_cast<std::uint8_t>(value.size() & 0xff));
  out.insert(out.end(), value.begin(), value.end());
}

// What an introduction signs (party_channel.h).
std::vector<std::uint8_t> IntroductionMessage(std::string_view job, std::string_view party,
                                              const X25519PublicKey& public_key) {
  std::vector<std::uint8_t> message(kIntroductionTag.begin(), kIntroductionTag.end());
  AppendWithLength(message, job);
  AppendWithLength(message, party);
  message.insert(message.end(), public_key.begin(), public_key.end());
  return message;
}

// ECDSA and RSA keys sign a SHA-256 digest; Ed25519 and Ed448 sign the message itself and
// take no digest.
const EVP_MD* DigestFor(const EVP_PKEY* key) {
  const int id = EVP_PKEY_get_id(key);
  return id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
}

using MdCtxPtr = internal::OpenSslPtr<EVP_MD_CTX, EVP_MD_CTX_free>;

absl::StatusOr<std::vector<std::uint8_t>> SignMessage(EVP_PKEY* key,
                                                      std::span<const std::uint8_t> message) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr || EVP_DigestSignInit(ctx.get(), nullptr, DigestFor(key), nullptr, key) != 1) {
    return OpenSslError("EVP_DigestSignInit(party introduction)");
  }
  std::size_t size = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &size, message.data(), message.size()) != 1) {
    return OpenSslError("EVP_DigestSign(party introduction, size)");
  }
  std::vector<std::uint8_t> signature(size);
  if (EVP_DigestSign(ctx.get(), signature.data(), &size, message.data(), message.size()) != 1) {
    return OpenSslError("EVP_DigestSign(party introduction)");
  }
  signature.resize(size);  // DER-encoded ECDSA signatures vary in length.
  return signature;
}

bool VerifySignature(EVP_PKEY* key, std::span<const std::uint8_t> message,
                     std::span<const std::uint8_t> signature) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  const bool valid =
      ctx != nullptr &&
      EVP_DigestVerifyInit(ctx.get(), nullptr, DigestFor(key), nullptr, key) == 1 &&
      EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(),
                       message.size()) == 1;
  ERR_clear_error();  // A bad signature leaves errors in the queue; they are reported here.
  return valid;
}

// info(dir) = label || u16 len(job) || job || u16 len(first) || first || u16 len(second)
//             || second || first's public key || second's public key.
std::vector<std::uint8_t> KeyInfo(std::string_view label, std::string_view job,
                                  std::string_view first, std::string_view second,
                                  const X25519PublicKey& first_public,
                                  const X25519PublicKey& second_public) {
  std::vector<std::uint8_t> info(label.begin(), label.end());
  AppendWithLength(info, job);
  AppendWithLength(info, first);
  AppendWithLength(info, second);
  info.insert(info.end(), first_public.begin(), first_public.end());
  info.insert(info.end(), second_public.begin(), second_public.end());
  return info;
}

// AAD = tag || u16 len(job) || job || u16 len(sender) || sender || u16 len(recipient)
//       || recipient || u16 len(topic) || topic || u64 sequence (big-endian).
std::vector<std::uint8_t> MessageAad(std::string_view job, std::string_view sender,
                                     std::string_view recipient, std::string_view topic,
                                     std::uint64_t sequence) {
  std::vector<std::uint8_t> aad(kMessageTag.begin(), kMessageTag.end());
  AppendWithLength(aad, job);
  AppendWithLength(aad, sender);
  AppendWithLength(aad, recipient);
  AppendWithLength(aad, topic);
  for (int shift = 56; shift >= 0; shift -= 8) {
    aad.push_back(static_cast<std::uint8_t>(sequence >> shift));
  }
  return aad;
}

absl::Status Refuse(const PartyIntroduction& introduction, absl::string_view what) {
  return absl::PermissionDeniedError(absl::StrCat("introduction of party ",
                                                  core::QuotePrefix(introduction.party),
                                                  " refused: ", what));
}

}  // namespace

absl::StatusOr<PartyIntroduction> IntroduceParty(const StartupKit& kit, std::string_view job,
                                                 const X25519KeyPair& key_pair) {
  if (absl::Status s = CheckField("party introduction job", job); !s.ok()) return s;
  if (absl::Status s = CheckField("party introduction name", kit.name); !s.ok()) return s;
  absl::StatusOr<PkeyPtr> key = internal::ParsePrivateKey(
      kit.private_key_pem, absl::StrCat("private key of the startup kit of ", kit.name));
  if (!key.ok()) return key.status();
  absl::StatusOr<std::vector<std::uint8_t>> signature =
      SignMessage(key->get(), IntroductionMessage(job, kit.name, key_pair.public_key));
  if (!signature.ok()) return signature.status();
  PartyIntroduction introduction;
  introduction.job = std::string(job);
  introduction.party = kit.name;
  introduction.certificate_pem = kit.certificate_pem;
  introduction.public_key = key_pair.public_key;
  introduction.signature = std::move(*signature);
  return introduction;
}

absl::Status VerifyPartyIntroduction(const PartyIntroduction& introduction, std::string_view ca_pem,
                                     std::string_view job, std::string_view expected_party) {
  if (introduction.job != job) {
    return Refuse(introduction, absl::StrCat("it is for job ", core::QuotePrefix(introduction.job),
                                             ", this run is job ", core::QuotePrefix(job)));
  }
  if (introduction.party != expected_party) {
    return Refuse(introduction, absl::StrCat("it was relayed as the introduction of party ",
                                             core::QuotePrefix(expected_party)));
  }
  absl::StatusOr<CertificateIdentity> identity =
      VerifyCertificate(introduction.certificate_pem, ca_pem, /*crl_pem=*/"",
                        "its certificate", "this kit's CA (ca.pem)");
  if (!identity.ok()) {
    return Refuse(introduction,
                  absl::StrCat("certificate chain: ", identity.status().message()));
  }
  if (identity->name != expected_party) {
    return Refuse(introduction, absl::StrCat("its certificate names ",
                                             core::QuotePrefix(identity->name), ", not ",
                                             core::QuotePrefix(expected_party)));
  }
  if (identity->role != Role::kSite) {
    return Refuse(introduction, absl::StrCat("its certificate has role ",
                                             ToAbsl(RoleName(identity->role)),
                                             "; only sites are parties of a vertical job"));
  }
  absl::StatusOr<internal::X509Ptr> certificate =
      internal::ParseCertificate(introduction.certificate_pem, "party certificate");
  if (!certificate.ok()) return Refuse(introduction, certificate.status().message());
  EVP_PKEY* certified_key = X509_get0_pubkey(certificate->get());
  if (certified_key == nullptr) {
    ERR_clear_error();
    return Refuse(introduction, "its certificate's public key cannot be read");
  }
  if (!VerifySignature(certified_key,
                       IntroductionMessage(introduction.job, introduction.party,
                                           introduction.public_key),
                       introduction.signature)) {
    return Refuse(introduction,
                  "signature: the key exchange public key is not signed by the certificate's key "
                  "(substituted or altered in transit)");
  }
  return absl::OkStatus();
}

absl::StatusOr<PartyChannel> PartyChannel::Agree(std::string_view job, std::string_view own_party,
                                                 const X25519KeyPair& own,
                                                 const PartyIntroduction& peer) {
  if (absl::Status s = CheckField("party channel job", job); !s.ok()) return s;
  if (absl::Status s = CheckField("party channel own name", own_party); !s.ok()) return s;
  if (absl::Status s = CheckField("party channel peer name", peer.party); !s.ok()) return s;
  if (own_party == peer.party) {
    return absl::InvalidArgumentError(absl::StrCat(
        "party channel: the peer has this party's own name ", core::QuotePrefix(own_party),
        "; a channel joins two different parties"));
  }
  // `job` may differ from peer.job: an introduction may be signed for a wider scope (the
  // federation, when the job is not known yet); the keys below bind `job` either way.
  // X25519 refuses an all-zero shared secret (a low-order peer key) with FailedPrecondition.
  absl::StatusOr<SecretBytes> shared = X25519(own.secret_key.span(), peer.public_key);
  if (!shared.ok()) {
    return absl::Status(shared.status().code(),
                        absl::StrCat("party channel with ", core::QuotePrefix(peer.party), ": ",
                                     shared.status().message()));
  }

  const bool own_first = own_party < std::string_view(peer.party);
  const std::string_view first = own_first ? own_party : std::string_view(peer.party);
  const std::string_view second = own_first ? std::string_view(peer.party) : own_party;
  const X25519PublicKey& first_public = own_first ? own.public_key : peer.public_key;
  const X25519PublicKey& second_public = own_first ? peer.public_key : own.public_key;

  absl::StatusOr<SecretBytes> first_to_second =
      HkdfSha256(shared->span(), Bytes(kKeySalt),
                 KeyInfo(kFirstToSecondLabel, job, first, second, first_public, second_public),
                 Aes256Gcm::kKeySize);
  if (!first_to_second.ok()) return first_to_second.status();
  absl::StatusOr<SecretBytes> second_to_first =
      HkdfSha256(shared->span(), Bytes(kKeySalt),
                 KeyInfo(kSecondToFirstLabel, job, first, second, first_public, second_public),
                 Aes256Gcm::kKeySize);
  if (!second_to_first.ok()) return second_to_first.status();

  PartyChannel channel;
  channel.job_ = std::string(job);
  channel.own_ = std::string(own_party);
  channel.peer_ = peer.party;
  channel.send_key_ = std::move(own_first ? *first_to_second : *second_to_first);
  channel.receive_key_ = std::move(own_first ? *second_to_first : *first_to_second);
  return channel;
}

absl::StatusOr<std::vector<std::uint8_t>> PartyChannel::Seal(std::string_view topic,
                                                             std::uint64_t sequence,
                                                             std::span<const std::uint8_t> plaintext) {
  if (absl::Status s = CheckField("party message topic", topic); !s.ok()) return s;
  absl::StatusOr<Aes256Gcm> cipher = Aes256Gcm::Create(send_key_.span());
  if (!cipher.ok()) return cipher.status();
  internal::EnsureSodiumInitialized();
  std::vector<std::uint8_t> sealed(plaintext.size() + kSealOverhead);
  const std::span<std::uint8_t> nonce(sealed.data(), Aes256Gcm::kNonceSize);
  const std::span<std::uint8_t> ciphertext(sealed.data() + Aes256Gcm::kNonceSize, plaintext.size());
  const std::span<std::uint8_t> tag(ciphertext.data() + plaintext.size(), Aes256Gcm::kTagSize);
  // A fresh random nonce per message, as crypto/seal.h does: a sequence number could repeat
  // when a party restarts its run, a random nonce does not.
  randombytes_buf(nonce.data(), nonce.size());
  if (absl::Status s = cipher->Encrypt(nonce, MessageAad(job_, own_, peer_, topic, sequence),
                                       plaintext, ciphertext, tag);
      !s.ok()) {
    return s;
  }
  return sealed;
}

absl::StatusOr<std::vector<std::uint8_t>> PartyChannel::Open(std::string_view topic,
                                                             std::uint64_t sequence,
                                                             std::span<const std::uint8_t> sealed) {
  if (absl::Status s = CheckField("party message topic", topic); !s.ok()) return s;
  const auto where = [&] {
    return absl::StrCat("message from party ", core::QuotePrefix(peer_), " (topic ",
                        core::QuotePrefix(topic), ", sequence ", sequence, ")");
  };
  if (sealed.size() < kSealOverhead) {
    return absl::DataLossError(absl::StrCat(where(), ": ", sealed.size(),
                                            " bytes, shorter than the ", kSealOverhead,
                                            " of nonce and tag"));
  }
  absl::StatusOr<Aes256Gcm> cipher = Aes256Gcm::Create(receive_key_.span());
  if (!cipher.ok()) return cipher.status();
  const std::size_t size = sealed.size() - kSealOverhead;
  std::vector<std::uint8_t> plaintext(size);
  absl::Status s = cipher->Decrypt(sealed.first(Aes256Gcm::kNonceSize),
                                   MessageAad(job_, peer_, own_, topic, sequence),
                                   sealed.subspan(Aes256Gcm::kNonceSize, size),
                                   sealed.last(Aes256Gcm::kTagSize), plaintext);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat(where(), " did not open: ", s.message(),
                                               " (not sealed by that party for this party, "
                                               "topic and sequence, or altered)"));
  }
  return plaintext;
}

}  // namespace cohort::crypto
