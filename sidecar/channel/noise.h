// Noise_XX_25519_ChaChaPoly_SHA256 (The Noise Protocol Framework, revision 34), as a pure state
// machine: no sockets, no clock, and no randomness but the ephemeral key, which a test may fix.
//
//   XX:  -> e
//        <- e, ee, s, es
//        -> s, se
//
// HandshakeState is driven by next(): kWrite (call WriteMessage), kRead (ReadMessage), kDone
// (Split), kFailed. Any error is terminal. Primitives come from vault/crypto.h (libsodium).
//
// Thread-safety: not synchronised; one owner at a time.
#ifndef VEIL_SIDECAR_CHANNEL_NOISE_H_
#define VEIL_SIDECAR_CHANNEL_NOISE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "sidecar/vault/crypto.h"
#include "sidecar/vault/secret_bytes.h"

namespace veil::channel {

inline constexpr char kNoiseProtocolName[] = "Noise_XX_25519_ChaChaPoly_SHA256";
inline constexpr size_t kNoiseMaxMessageBytes = 65535;

// A node's static X25519 key as the handshake needs it: the public half, and DH with it.
class StaticKey {
 public:
  virtual ~StaticKey() = default;
  virtual const std::string& public_key() const = 0;
  virtual absl::StatusOr<vault::SecretBytes> Dh(absl::string_view peer_public) const = 0;
};

// A static key held directly (tests, vectors).
class RawStaticKey final : public StaticKey {
 public:
  explicit RawStaticKey(vault::X25519KeyPair key) : key_(std::move(key)) {}
  const std::string& public_key() const override { return key_.public_key; }
  absl::StatusOr<vault::SecretBytes> Dh(absl::string_view peer_public) const override {
    return vault::X25519(key_.secret, peer_public);
  }

 private:
  vault::X25519KeyPair key_;
};

// A ChaChaPoly key, with Noise's nonce handling left to the caller (explicit counters).
class CipherState {
 public:
  CipherState() = default;
  explicit CipherState(vault::SecretBytes key) : key_(std::move(key)) {}
  CipherState(CipherState&&) = default;
  CipherState& operator=(CipherState&&) = default;

  bool has_key() const { return !key_.empty(); }
  // ENCRYPT(k, n, ad, plaintext), appended to `out`.
  void Encrypt(uint64_t n, absl::string_view ad, absl::string_view plaintext,
               std::string& out) const {
    vault::ChaChaPolyEncrypt(key_, n, ad, plaintext, out);
  }
  // The same, for the plaintext at the end of `buf` from `offset`, encrypted where it is.
  void EncryptInPlace(uint64_t n, absl::string_view ad, std::string& buf, size_t offset) const {
    vault::ChaChaPolyEncryptInPlace(key_, n, ad, buf, offset);
  }
  // DECRYPT(k, n, ad, ciphertext), appended to `out`; DATA_LOSS on failure, nothing appended.
  absl::Status Decrypt(uint64_t n, absl::string_view ad, absl::string_view ciphertext,
                       std::string& out) const {
    return vault::ChaChaPolyDecrypt(key_, n, ad, ciphertext, out);
  }
  // The same for the ciphertext at the end of `buf` from `offset`, opened where it is (see
  // vault::ChaChaPolyDecryptInPlace: on failure the ciphertext is zeroed, the length kept).
  absl::Status DecryptInPlace(uint64_t n, absl::string_view ad, std::string& buf,
                              size_t offset) const {
    return vault::ChaChaPolyDecryptInPlace(key_, n, ad, buf, offset);
  }
  // REKEY (spec 4.2): k = first 32 bytes of ENCRYPT(k, 2^64-1, "", 32 zero bytes).
  void Rekey();
  // A copy of this cipher (same key), e.g. to keep the previous epoch's key.
  CipherState Clone() const { return CipherState(key_.Clone()); }

 private:
  vault::SecretBytes key_;
};

class HandshakeState {
 public:
  enum class Role { kInitiator, kResponder };
  enum class Next { kWrite, kRead, kDone, kFailed };

  // `s` must outlive the handshake. `fixed_ephemeral_for_testing_only` is the test hook that
  // the published vectors need (noise-c's ..._for_testing_only); production code leaves it
  // empty and a fresh ephemeral key is generated.
  HandshakeState(
      Role role, absl::string_view prologue, const StaticKey& s,
      std::optional<vault::X25519KeyPair> fixed_ephemeral_for_testing_only = std::nullopt);

  Next next() const;

  // Writes the next handshake message carrying `payload` (encrypted once a key exists).
  // FAILED_PRECONDITION when it is not our turn; INVALID_ARGUMENT when too long.
  absl::StatusOr<std::string> WriteMessage(absl::string_view payload);
  // Reads the peer's next handshake message and returns its payload. INVALID_ARGUMENT
  // (reason HANDSHAKE_FAILED) for a truncated, garbled or tampered message; FAILED_PRECONDITION
  // when it is not the peer's turn. Any error is terminal.
  absl::StatusOr<std::string> ReadMessage(absl::string_view message);

  // The remote static public key: known after message 2 (initiator) or 3 (responder).
  const std::string& remote_static() const { return rs_; }
  // h: after kDone, a unique, public identifier of this handshake (channel binding).
  const std::string& handshake_hash() const { return h_; }
  // The finished handshake's cipher states for this side (Noise §5.2 Split: the first key is
  // the initiator's to send with, the second the responder's), so a caller cannot swap them.
  struct Transport {
    CipherState send, receive;
  };
  // FAILED_PRECONDITION unless next() is kDone, and after the first call: the handshake's
  // secrets are wiped once split.
  absl::StatusOr<Transport> Split();

 private:
  void MixHash(absl::string_view data);
  absl::Status MixKey(absl::StatusOr<vault::SecretBytes> dh);
  void EncryptAndHash(absl::string_view plaintext, std::string& out);
  absl::Status DecryptAndHash(absl::string_view ciphertext, std::string& out);
  absl::Status Fail(absl::Status why);

  const Role role_;
  const StaticKey& s_;
  std::optional<vault::X25519KeyPair> e_;
  std::optional<vault::X25519KeyPair> fixed_e_;
  std::string re_, rs_;
  vault::SecretBytes ck_;
  std::string h_;
  CipherState k_;
  uint64_t n_ = 0;
  int message_ = 0;  // messages processed, 0..3
  bool failed_ = false;
  bool split_ = false;
};

}  // namespace veil::channel

#endif  // VEIL_SIDECAR_CHANNEL_NOISE_H_
