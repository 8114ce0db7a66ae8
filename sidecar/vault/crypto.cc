#include "sidecar/vault/crypto.h"

#include <sodium.h>

#include <cstring>

#include "sidecar/common/error_reason.h"

namespace veil::vault {
namespace {

const uint8_t* U8(absl::string_view s) { return reinterpret_cast<const uint8_t*>(s.data()); }

absl::Status AuthFailed(absl::string_view what) {
  return ErrorWithReason(absl::StatusCode::kDataLoss, what, reason::kAuthenticationFailed);
}

void NoiseNonce(uint64_t counter, uint8_t nonce[12]) {
  std::memset(nonce, 0, 4);
  for (int i = 0; i < 8; ++i) nonce[4 + i] = static_cast<uint8_t>(counter >> (8 * i));
}

}  // namespace

bool InitCrypto() {
  static const bool ok = sodium_init() >= 0;
  return ok;
}

void RandomBytes(std::span<uint8_t> out) {
  InitCrypto();
  randombytes_buf(out.data(), out.size());
}

std::string RandomString(size_t n) {
  std::string out(n, '\0');
  RandomBytes({reinterpret_cast<uint8_t*>(out.data()), n});
  return out;
}

std::array<uint8_t, kSha256Bytes> Sha256(absl::string_view data) {
  InitCrypto();
  std::array<uint8_t, kSha256Bytes> out;
  crypto_hash_sha256(out.data(), U8(data), data.size());
  return out;
}

SecretBytes HmacSha256(std::span<const uint8_t> key, absl::string_view data) {
  InitCrypto();
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, key.data(), key.size());
  crypto_auth_hmacsha256_update(&state, U8(data), data.size());
  SecretBytes out(crypto_auth_hmacsha256_BYTES);
  crypto_auth_hmacsha256_final(&state, out.data());
  sodium_memzero(&state, sizeof(state));
  return out;
}

void NoiseHkdf(const SecretBytes& chaining_key, std::span<const uint8_t> input_key_material,
               SecretBytes* out1, SecretBytes* out2, SecretBytes* out3) {
  // Noise spec 4.3: temp_key = HMAC(ck, ikm); out1 = HMAC(temp_key, 0x01);
  // out2 = HMAC(temp_key, out1 || 0x02); out3 = HMAC(temp_key, out2 || 0x03).
  SecretBytes temp_key =
      HmacSha256(chaining_key.span(),
                 absl::string_view(reinterpret_cast<const char*>(input_key_material.data()),
                                   input_key_material.size()));
  const uint8_t one = 0x01;
  *out1 = HmacSha256(temp_key.span(), absl::string_view(reinterpret_cast<const char*>(&one), 1));
  SecretBytes buffer(kSha256Bytes + 1);
  std::memcpy(buffer.data(), out1->data(), kSha256Bytes);
  buffer.data()[kSha256Bytes] = 0x02;
  *out2 =
      HmacSha256(temp_key.span(),
                 absl::string_view(reinterpret_cast<const char*>(buffer.data()), buffer.size()));
  if (out3 != nullptr) {
    std::memcpy(buffer.data(), out2->data(), kSha256Bytes);
    buffer.data()[kSha256Bytes] = 0x03;
    *out3 =
        HmacSha256(temp_key.span(),
                   absl::string_view(reinterpret_cast<const char*>(buffer.data()), buffer.size()));
  }
}

void ChaChaPolyEncrypt(const SecretBytes& key, uint64_t counter, absl::string_view ad,
                       absl::string_view plaintext, std::string& out) {
  InitCrypto();
  uint8_t nonce[12];
  NoiseNonce(counter, nonce);
  size_t start = out.size();
  out.resize(start + plaintext.size() + kAeadTagBytes);
  unsigned long long written = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(reinterpret_cast<uint8_t*>(out.data() + start),
                                            &written, U8(plaintext), plaintext.size(), U8(ad),
                                            ad.size(), nullptr, nonce, key.data());
  out.resize(start + written);
}

void ChaChaPolyEncryptInPlace(const SecretBytes& key, uint64_t counter, absl::string_view ad,
                              std::string& buf, size_t offset) {
  InitCrypto();
  uint8_t nonce[12];
  NoiseNonce(counter, nonce);
  const size_t length = buf.size() - offset;
  buf.resize(buf.size() + kAeadTagBytes);
  auto* p = reinterpret_cast<uint8_t*>(buf.data() + offset);
  // libsodium's detached encryption streams over the message and authenticates the result: the
  // message and ciphertext may be the same bytes.
  crypto_aead_chacha20poly1305_ietf_encrypt_detached(p, p + length, nullptr, p, length, U8(ad),
                                                     ad.size(), nullptr, nonce, key.data());
}

absl::Status ChaChaPolyDecrypt(const SecretBytes& key, uint64_t counter, absl::string_view ad,
                               absl::string_view ciphertext, std::string& out) {
  InitCrypto();
  if (ciphertext.size() < kAeadTagBytes) return AuthFailed("ciphertext shorter than its tag");
  uint8_t nonce[12];
  NoiseNonce(counter, nonce);
  size_t start = out.size();
  out.resize(start + ciphertext.size() - kAeadTagBytes);
  unsigned long long written = 0;
  if (crypto_aead_chacha20poly1305_ietf_decrypt(
          reinterpret_cast<uint8_t*>(out.data() + start), &written, nullptr, U8(ciphertext),
          ciphertext.size(), U8(ad), ad.size(), nonce, key.data()) != 0) {
    out.resize(start);
    return AuthFailed("decryption failed: wrong key or tampered message");
  }
  out.resize(start + written);
  return absl::OkStatus();
}

absl::Status ChaChaPolyDecryptInPlace(const SecretBytes& key, uint64_t counter,
                                      absl::string_view ad, std::string& buf, size_t offset) {
  InitCrypto();
  if (offset > buf.size() || buf.size() - offset < kAeadTagBytes) {
    return AuthFailed("ciphertext shorter than its tag");
  }
  uint8_t nonce[12];
  NoiseNonce(counter, nonce);
  const size_t length = buf.size() - offset - kAeadTagBytes;
  auto* p = reinterpret_cast<uint8_t*>(buf.data() + offset);
  // libsodium verifies the tag over the ciphertext first and decrypts only then, streaming: the
  // ciphertext and the plaintext may be the same bytes.
  if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(p, nullptr, p, length, p + length, U8(ad),
                                                         ad.size(), nonce, key.data()) != 0) {
    return AuthFailed("decryption failed: wrong key or tampered message");
  }
  buf.resize(offset + length);
  return absl::OkStatus();
}

std::string XChaChaSeal(const SecretBytes& key, absl::string_view ad,
                        const SecretBytes& plaintext) {
  InitCrypto();
  std::string out(kXNonceBytes + plaintext.size() + kAeadTagBytes, '\0');
  auto* nonce = reinterpret_cast<uint8_t*>(out.data());
  randombytes_buf(nonce, kXNonceBytes);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(nonce + kXNonceBytes, &written, plaintext.data(),
                                             plaintext.size(), U8(ad), ad.size(), nullptr, nonce,
                                             key.data());
  out.resize(kXNonceBytes + written);
  return out;
}

absl::StatusOr<SecretBytes> XChaChaOpen(const SecretBytes& key, absl::string_view ad,
                                        absl::string_view sealed) {
  InitCrypto();
  if (sealed.size() < kXNonceBytes + kAeadTagBytes) return AuthFailed("sealed secret is too short");
  SecretBytes out(sealed.size() - kXNonceBytes - kAeadTagBytes);
  unsigned long long written = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          out.data(), &written, nullptr, U8(sealed) + kXNonceBytes, sealed.size() - kXNonceBytes,
          U8(ad), ad.size(), U8(sealed), key.data()) != 0) {
    return AuthFailed("cannot open sealed secret: wrong key or tampered data");
  }
  return out;
}

X25519KeyPair GenerateX25519() {
  SecretBytes secret(kX25519Bytes);
  RandomBytes(secret.mutable_span());
  return *X25519FromSecret(std::move(secret));
}

absl::StatusOr<X25519KeyPair> X25519FromSecret(SecretBytes secret) {
  InitCrypto();
  if (secret.size() != kX25519Bytes) {
    return absl::InvalidArgumentError("an X25519 secret key is 32 bytes");
  }
  X25519KeyPair pair;
  pair.public_key.resize(kX25519Bytes);
  crypto_scalarmult_base(reinterpret_cast<uint8_t*>(pair.public_key.data()), secret.data());
  pair.secret = std::move(secret);
  return pair;
}

absl::StatusOr<SecretBytes> X25519(const SecretBytes& secret, absl::string_view peer_public) {
  InitCrypto();
  if (peer_public.size() != kX25519Bytes) {
    return absl::InvalidArgumentError("an X25519 public key is 32 bytes");
  }
  SecretBytes shared(kX25519Bytes);
  if (crypto_scalarmult(shared.data(), secret.data(), U8(peer_public)) != 0) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument, "X25519 with a low-order public key",
                           reason::kAuthenticationFailed);
  }
  return shared;
}

Ed25519KeyPair GenerateEd25519() {
  SecretBytes seed(kEd25519SeedBytes);
  RandomBytes(seed.mutable_span());
  return *Ed25519FromSeed(seed);
}

absl::StatusOr<Ed25519KeyPair> Ed25519FromSeed(const SecretBytes& seed) {
  InitCrypto();
  if (seed.size() != kEd25519SeedBytes) {
    return absl::InvalidArgumentError("an Ed25519 seed is 32 bytes");
  }
  Ed25519KeyPair pair;
  pair.secret = SecretBytes(crypto_sign_SECRETKEYBYTES);
  pair.public_key.resize(kEd25519PublicBytes);
  crypto_sign_seed_keypair(reinterpret_cast<uint8_t*>(pair.public_key.data()), pair.secret.data(),
                           seed.data());
  return pair;
}

SecretBytes Ed25519Seed(const Ed25519KeyPair& key) {
  SecretBytes seed(kEd25519SeedBytes);
  crypto_sign_ed25519_sk_to_seed(seed.data(), key.secret.data());
  return seed;
}

std::string Ed25519Sign(const Ed25519KeyPair& key, absl::string_view message) {
  InitCrypto();
  std::string signature(kEd25519SignatureBytes, '\0');
  crypto_sign_detached(reinterpret_cast<uint8_t*>(signature.data()), nullptr, U8(message),
                       message.size(), key.secret.data());
  return signature;
}

absl::Status Ed25519Verify(absl::string_view public_key, absl::string_view message,
                           absl::string_view signature) {
  InitCrypto();
  if (public_key.size() != kEd25519PublicBytes || signature.size() != kEd25519SignatureBytes ||
      crypto_sign_verify_detached(U8(signature), U8(message), message.size(), U8(public_key)) !=
          0) {
    return ErrorWithReason(absl::StatusCode::kUnauthenticated, "invalid Ed25519 signature",
                           reason::kAuthenticationFailed);
  }
  return absl::OkStatus();
}

Argon2Params DefaultArgon2Params() {
  return {crypto_pwhash_OPSLIMIT_MODERATE, crypto_pwhash_MEMLIMIT_MODERATE};
}

absl::StatusOr<SecretBytes> Argon2id(const SecretBytes& passphrase, absl::string_view salt,
                                     const Argon2Params& params) {
  InitCrypto();
  if (salt.size() != crypto_pwhash_SALTBYTES) {
    return absl::InvalidArgumentError("an Argon2id salt is 16 bytes");
  }
  if (params.ops_limit < crypto_pwhash_OPSLIMIT_MIN ||
      params.mem_limit < crypto_pwhash_MEMLIMIT_MIN ||
      params.ops_limit > crypto_pwhash_OPSLIMIT_MAX || params.mem_limit > (1ull << 32)) {
    return absl::InvalidArgumentError("Argon2id limits out of range");
  }
  SecretBytes key(kAeadKeyBytes);
  if (crypto_pwhash(key.data(), key.size(), reinterpret_cast<const char*>(passphrase.data()),
                    passphrase.size(), U8(salt), params.ops_limit, params.mem_limit,
                    crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return absl::ResourceExhaustedError("Argon2id ran out of memory");
  }
  return key;
}

}  // namespace veil::vault
