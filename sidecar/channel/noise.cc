#include "sidecar/channel/noise.h"

#include <sodium.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"

namespace veil::channel {
namespace {

constexpr size_t kDhLen = vault::kX25519Bytes;
constexpr size_t kHashLen = vault::kSha256Bytes;
constexpr size_t kTagLen = vault::kAeadTagBytes;

absl::Status Malformed(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                         absl::StrCat("handshake failed: ", why), reason::kHandshakeFailed);
}

}  // namespace

void CipherState::Rekey() {
  std::string out;
  vault::ChaChaPolyEncrypt(key_, UINT64_MAX, "", std::string(32, '\0'), out);
  key_ = vault::SecretBytes::CopyOf(absl::string_view(out).substr(0, 32));
  sodium_memzero(out.data(), out.size());
}

HandshakeState::HandshakeState(Role role, absl::string_view prologue, const StaticKey& s,
                               std::optional<vault::X25519KeyPair> fixed_ephemeral_for_testing_only)
    : role_(role), s_(s), fixed_e_(std::move(fixed_ephemeral_for_testing_only)) {
  // InitializeSymmetric (spec 5.2): the name fits in HASHLEN, so h = name padded with zeros.
  h_.assign(kHashLen, '\0');
  std::memcpy(h_.data(), kNoiseProtocolName, sizeof(kNoiseProtocolName) - 1);
  ck_ = vault::SecretBytes::CopyOf(h_);
  MixHash(prologue);
}

HandshakeState::Next HandshakeState::next() const {
  if (failed_) return Next::kFailed;
  if (message_ == 3) return Next::kDone;
  bool initiator_turn = message_ % 2 == 0;
  return initiator_turn == (role_ == Role::kInitiator) ? Next::kWrite : Next::kRead;
}

void HandshakeState::MixHash(absl::string_view data) {
  auto digest = vault::Sha256(absl::StrCat(h_, data));
  h_.assign(reinterpret_cast<const char*>(digest.data()), digest.size());
}

absl::Status HandshakeState::MixKey(absl::StatusOr<vault::SecretBytes> dh) {
  if (!dh.ok()) return Malformed(dh.status().message());
  vault::SecretBytes ck, k;
  vault::NoiseHkdf(ck_, dh->span(), &ck, &k);
  ck_ = std::move(ck);
  k_ = CipherState(std::move(k));
  n_ = 0;
  return absl::OkStatus();
}

void HandshakeState::EncryptAndHash(absl::string_view plaintext, std::string& out) {
  size_t start = out.size();
  if (k_.has_key()) {
    k_.Encrypt(n_++, h_, plaintext, out);
  } else {
    out.append(plaintext.data(), plaintext.size());
  }
  MixHash(absl::string_view(out).substr(start));
}

absl::Status HandshakeState::DecryptAndHash(absl::string_view ciphertext, std::string& out) {
  if (k_.has_key()) {
    absl::Status s = k_.Decrypt(n_, h_, ciphertext, out);
    if (!s.ok()) return Malformed("a handshake message failed authentication");
    ++n_;
  } else {
    out.append(ciphertext.data(), ciphertext.size());
  }
  MixHash(ciphertext);
  return absl::OkStatus();
}

absl::Status HandshakeState::Fail(absl::Status why) {
  failed_ = true;
  return why;
}

absl::StatusOr<std::string> HandshakeState::WriteMessage(absl::string_view payload) {
  if (next() != Next::kWrite) {
    return Fail(ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                                "handshake message written in the wrong state",
                                reason::kHandshakeFailed));
  }
  std::string out;
  auto write_e = [&] {
    e_ = fixed_e_.has_value() ? std::move(*fixed_e_) : vault::GenerateX25519();
    fixed_e_.reset();
    out += e_->public_key;
    MixHash(e_->public_key);
  };
  auto write_s = [&] { EncryptAndHash(s_.public_key(), out); };
  absl::Status s;
  switch (message_) {
    case 0:  // -> e
      write_e();
      break;
    case 1:  // <- e, ee, s, es
      write_e();
      s = MixKey(vault::X25519(e_->secret, re_));
      if (s.ok()) write_s();
      if (s.ok()) s = MixKey(s_.Dh(re_));  // es, responder: DH(s, re)
      break;
    case 2:  // -> s, se
      write_s();
      s = MixKey(s_.Dh(re_));  // se, initiator: DH(s, re)
      break;
  }
  if (!s.ok()) return Fail(s);
  EncryptAndHash(payload, out);
  if (out.size() > kNoiseMaxMessageBytes) {
    return Fail(absl::InvalidArgumentError("handshake message longer than 65535 bytes"));
  }
  ++message_;
  return out;
}

absl::StatusOr<std::string> HandshakeState::ReadMessage(absl::string_view message) {
  if (next() != Next::kRead) {
    return Fail(ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                                "handshake message received in the wrong state",
                                reason::kHandshakeFailed));
  }
  if (message.size() > kNoiseMaxMessageBytes) {
    return Fail(Malformed("handshake message longer than 65535 bytes"));
  }
  auto read_e = [&]() -> absl::Status {
    if (message.size() < kDhLen) return Malformed("message too short for an ephemeral key");
    re_ = std::string(message.substr(0, kDhLen));
    message.remove_prefix(kDhLen);
    MixHash(re_);
    return absl::OkStatus();
  };
  auto read_s = [&]() -> absl::Status {
    size_t len = kDhLen + (k_.has_key() ? kTagLen : 0);
    if (message.size() < len) return Malformed("message too short for a static key");
    std::string rs;
    absl::Status s = DecryptAndHash(message.substr(0, len), rs);
    if (!s.ok()) return s;
    rs_ = std::move(rs);
    message.remove_prefix(len);
    return absl::OkStatus();
  };
  absl::Status s;
  switch (message_) {
    case 0:  // -> e
      s = read_e();
      break;
    case 1:  // <- e, ee, s, es
      s = read_e();
      if (s.ok()) s = MixKey(vault::X25519(e_->secret, re_));
      if (s.ok()) s = read_s();
      if (s.ok()) s = MixKey(vault::X25519(e_->secret, rs_));  // es, initiator: DH(e, rs)
      break;
    case 2:  // -> s, se
      s = read_s();
      if (s.ok()) s = MixKey(vault::X25519(e_->secret, rs_));  // se, responder: DH(e, rs)
      break;
  }
  if (!s.ok()) return Fail(s);
  if (k_.has_key() && message.size() < kTagLen) {
    return Fail(Malformed("message too short for its payload tag"));
  }
  std::string payload;
  s = DecryptAndHash(message, payload);
  if (!s.ok()) return Fail(s);
  ++message_;
  return payload;
}

absl::StatusOr<HandshakeState::Transport> HandshakeState::Split() {
  if (next() != Next::kDone || split_) {
    return absl::FailedPreconditionError(split_ ? "the handshake was already split"
                                                : "Split() before the handshake finished");
  }
  split_ = true;
  vault::SecretBytes k1, k2;
  vault::NoiseHkdf(ck_, {}, &k1, &k2);
  ck_ = vault::SecretBytes();  // no longer needed: wiped
  CipherState initiator_sends(std::move(k1)), responder_sends(std::move(k2));
  if (role_ == Role::kInitiator)
    return Transport{std::move(initiator_sends), std::move(responder_sends)};
  return Transport{std::move(responder_sends), std::move(initiator_sends)};
}

}  // namespace veil::channel
