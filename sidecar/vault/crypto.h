// The cryptographic primitives veil uses, all from libsodium (none written by hand):
// SHA-256, HMAC-SHA256 and the Noise HKDF over it, ChaCha20-Poly1305 (IETF, for Noise) and
// XChaCha20-Poly1305 (for secrets at rest), X25519, Ed25519, Argon2id and random bytes.
//
// Secret inputs and outputs are SecretBytes; public values are plain byte strings. Errors are
// INVALID_ARGUMENT (wrong sizes) or, for decryption and verification, a status that says only
// that authentication failed — never anything about the key.
//
// Thread-safety: pure functions; libsodium is initialised once, on first use.
#ifndef VEIL_SIDECAR_VAULT_CRYPTO_H_
#define VEIL_SIDECAR_VAULT_CRYPTO_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sidecar/vault/secret_bytes.h"

namespace veil::vault {

inline constexpr size_t kSha256Bytes = 32;
inline constexpr size_t kAeadKeyBytes = 32;
inline constexpr size_t kAeadTagBytes = 16;
inline constexpr size_t kXNonceBytes = 24;
inline constexpr size_t kX25519Bytes = 32;
inline constexpr size_t kEd25519PublicBytes = 32;
inline constexpr size_t kEd25519SeedBytes = 32;
inline constexpr size_t kEd25519SignatureBytes = 64;

// Initialises libsodium (idempotent, thread-safe). Returns false only if it cannot start.
bool InitCrypto();

// Fills `out` with random bytes from the OS.
void RandomBytes(std::span<uint8_t> out);
std::string RandomString(size_t n);

std::array<uint8_t, kSha256Bytes> Sha256(absl::string_view data);

// HMAC-SHA256 of `data` under `key` (any length).
SecretBytes HmacSha256(std::span<const uint8_t> key, absl::string_view data);

// The HKDF of the Noise specification (section 4.3) with HMAC-SHA256: two or three 32-byte
// outputs from `chaining_key` and `input_key_material`.
void NoiseHkdf(const SecretBytes& chaining_key, std::span<const uint8_t> input_key_material,
               SecretBytes* out1, SecretBytes* out2, SecretBytes* out3 = nullptr);

// ChaCha20-Poly1305 (IETF) with Noise's nonce: 4 zero bytes then `counter` little-endian.
// Appends ciphertext+tag to `out`.
void ChaChaPolyEncrypt(const SecretBytes& key, uint64_t counter, absl::string_view ad,
                       absl::string_view plaintext, std::string& out);
// The same, in place: encrypts `buf` from `offset` to its end and appends the tag, so that
// `buf` ends as if ChaChaPolyEncrypt had appended to its first `offset` bytes. Saves the copy
// and the zero-filling of a separate output when the plaintext was just written into `buf`.
void ChaChaPolyEncryptInPlace(const SecretBytes& key, uint64_t counter, absl::string_view ad,
                              std::string& buf, size_t offset);
// Appends the plaintext to `out`. On a wrong key, nonce, AD or any tampering, appends nothing
// and returns DATA_LOSS with reason AUTHENTICATION_FAILED.
absl::Status ChaChaPolyDecrypt(const SecretBytes& key, uint64_t counter, absl::string_view ad,
                               absl::string_view ciphertext, std::string& out);

// The same for the ciphertext (with its tag) at the end of `buf` from `offset`, opened where it
// is: on success `buf` ends with the plaintext (the tag cut off). The tag is checked before
// anything is decrypted; on failure `buf` keeps its length, the ciphertext is zeroed (libsodium
// clears its output) and the status is as above.
absl::Status ChaChaPolyDecryptInPlace(const SecretBytes& key, uint64_t counter,
                                      absl::string_view ad, std::string& buf, size_t offset);

// XChaCha20-Poly1305 with a random nonce: returns nonce || ciphertext || tag.
std::string XChaChaSeal(const SecretBytes& key, absl::string_view ad, const SecretBytes& plaintext);
// Opens XChaChaSeal's output. DATA_LOSS (AUTHENTICATION_FAILED) on a wrong key or tampering.
absl::StatusOr<SecretBytes> XChaChaOpen(const SecretBytes& key, absl::string_view ad,
                                        absl::string_view sealed);

// X25519.
struct X25519KeyPair {
  SecretBytes secret;      // 32 bytes
  std::string public_key;  // 32 bytes
};
X25519KeyPair GenerateX25519();
// The key pair for a given secret scalar (for loading and for test vectors).
absl::StatusOr<X25519KeyPair> X25519FromSecret(SecretBytes secret);
// DH(secret, peer_public). INVALID_ARGUMENT for a wrong-size or low-order peer key.
absl::StatusOr<SecretBytes> X25519(const SecretBytes& secret, absl::string_view peer_public);

// Ed25519, from a 32-byte seed.
struct Ed25519KeyPair {
  SecretBytes secret;      // libsodium's 64-byte secret key (seed || public)
  std::string public_key;  // 32 bytes
};
Ed25519KeyPair GenerateEd25519();
absl::StatusOr<Ed25519KeyPair> Ed25519FromSeed(const SecretBytes& seed);
// The 32-byte seed of a key pair, for storage.
SecretBytes Ed25519Seed(const Ed25519KeyPair& key);
std::string Ed25519Sign(const Ed25519KeyPair& key, absl::string_view message);
// OK when `signature` is `public_key`'s over `message`; else UNAUTHENTICATED
// (AUTHENTICATION_FAILED).
absl::Status Ed25519Verify(absl::string_view public_key, absl::string_view message,
                           absl::string_view signature);

// Argon2id (libsodium's MODERATE limits by default) of `passphrase` with a 16-byte `salt`.
struct Argon2Params {
  uint64_t ops_limit;
  uint64_t mem_limit;
};
Argon2Params DefaultArgon2Params();
absl::StatusOr<SecretBytes> Argon2id(const SecretBytes& passphrase, absl::string_view salt,
                                     const Argon2Params& params);

}  // namespace veil::vault

#endif  // VEIL_SIDECAR_VAULT_CRYPTO_H_
