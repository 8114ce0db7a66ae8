// Known-answer tests against published vectors (FIPS 180-2, RFC 4231, RFC 7748, RFC 8032),
// plus negative tests: tampered ciphertexts, wrong keys, bad signatures.
#include "sidecar/vault/crypto.h"

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"

namespace veil::vault {
namespace {

std::string Hex(absl::string_view bytes) { return absl::BytesToHexString(bytes); }
std::string Hex(std::span<const uint8_t> bytes) {
  return Hex(absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}
std::string Unhex(absl::string_view hex) { return absl::HexStringToBytes(hex); }

TEST(CryptoTest, Sha256KnownAnswer) {
  auto d = Sha256("abc");
  EXPECT_EQ(Hex(d), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(CryptoTest, HmacSha256Rfc4231Case2) {
  std::string key = "Jefe";
  SecretBytes mac = HmacSha256({reinterpret_cast<const uint8_t*>(key.data()), key.size()},
                               "what do ya want for nothing?");
  EXPECT_EQ(Hex(mac.span()), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(CryptoTest, X25519Rfc7748) {
  auto alice = X25519FromSecret(SecretBytes::CopyOf(
      Unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")));
  ASSERT_TRUE(alice.ok());
  EXPECT_EQ(Hex(alice->public_key),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  auto shared = X25519(alice->secret,
                       Unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
  ASSERT_TRUE(shared.ok());
  EXPECT_EQ(Hex(shared->span()),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  EXPECT_FALSE(X25519(alice->secret, "short").ok());
  EXPECT_FALSE(X25519(alice->secret, std::string(32, '\0')).ok());  // low order
}

TEST(CryptoTest, Ed25519Rfc8032Test1) {
  auto key = Ed25519FromSeed(SecretBytes::CopyOf(
      Unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")));
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(Hex(key->public_key),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  std::string sig = Ed25519Sign(*key, "");
  EXPECT_EQ(
      Hex(sig),
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e3970"
      "1cf9b46bd25bf5f0595bbe24655141438e7a100b");
  EXPECT_TRUE(Ed25519Verify(key->public_key, "", sig).ok());
  EXPECT_TRUE(Ed25519Seed(*key).Equals(SecretBytes::CopyOf(
      Unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))));
}

TEST(CryptoTest, Ed25519RejectsTamperedSignatureMessageAndKey) {
  Ed25519KeyPair key = GenerateEd25519();
  std::string sig = Ed25519Sign(key, "message");
  ASSERT_TRUE(Ed25519Verify(key.public_key, "message", sig).ok());
  EXPECT_FALSE(Ed25519Verify(key.public_key, "messagE", sig).ok());
  for (size_t i = 0; i < sig.size(); ++i) {
    std::string bad = sig;
    bad[i] ^= 0x01;
    absl::Status s = Ed25519Verify(key.public_key, "message", bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << i;
  }
  EXPECT_FALSE(Ed25519Verify(GenerateEd25519().public_key, "message", sig).ok());
  EXPECT_FALSE(Ed25519Verify(key.public_key, "message", sig.substr(1)).ok());
}

// In place, the result is byte for byte what the appending form gives, for any plaintext size.
TEST(CryptoTest, ChaChaPolyInPlaceMatchesAppending) {
  SecretBytes key(kAeadKeyBytes);
  RandomBytes(key.mutable_span());
  for (size_t size : {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{1000}, size_t{70000}}) {
    const std::string plaintext(size, 'p');
    std::string appended = "head";
    ChaChaPolyEncrypt(key, 42, "ad", plaintext, appended);
    std::string in_place = "head" + plaintext;
    ChaChaPolyEncryptInPlace(key, 42, "ad", in_place, 4);
    EXPECT_EQ(in_place, appended) << size;
    std::string opened;
    ASSERT_TRUE(
        ChaChaPolyDecrypt(key, 42, "ad", absl::string_view(in_place).substr(4), opened).ok());
    EXPECT_EQ(opened, plaintext);
    // Opened where it is: the same plaintext, after the untouched head.
    ASSERT_TRUE(ChaChaPolyDecryptInPlace(key, 42, "ad", in_place, 4).ok());
    EXPECT_EQ(in_place, "head" + plaintext) << size;
  }
}

// In-place opening refuses what the appending form refuses; the head stays, nothing of the
// plaintext is left behind (libsodium zeroes its output on failure).
TEST(CryptoTest, ChaChaPolyInPlaceRejectsTamperingAndLeavesTheBuffer) {
  SecretBytes key(kAeadKeyBytes);
  RandomBytes(key.mutable_span());
  std::string sealed = "hd";
  ChaChaPolyEncrypt(key, 9, "ad", std::string(100, 'x'), sealed);
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::string bad = sealed;
    bad[i] ^= 0x01;
    const std::string before = bad;
    absl::Status s = ChaChaPolyDecryptInPlace(key, 9, "ad", bad, 2);
    if (i < 2) {  // the head is not part of the message
      EXPECT_TRUE(s.ok()) << i;
      continue;
    }
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << i;
    ASSERT_EQ(bad.size(), before.size()) << i;
    EXPECT_EQ(bad.substr(0, 2), "hd") << i;
    EXPECT_EQ(bad.find(std::string(16, 'x')), std::string::npos) << i;  // no plaintext left
  }
  std::string copy = sealed;
  EXPECT_EQ(ChaChaPolyDecryptInPlace(key, 10, "ad", copy, 2).code(), absl::StatusCode::kDataLoss);
  copy = sealed;
  EXPECT_EQ(ChaChaPolyDecryptInPlace(key, 9, "xx", copy, 2).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(copy.size(), sealed.size());
  std::string short_one = "hd" + std::string(kAeadTagBytes - 1, 't');
  EXPECT_EQ(ChaChaPolyDecryptInPlace(key, 9, "ad", short_one, 2).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ChaChaPolyDecryptInPlace(key, 9, "ad", short_one, 100).code(),
            absl::StatusCode::kDataLoss);
}

TEST(CryptoTest, ChaChaPolyRoundTripAndEveryTamperedByteRejected) {
  SecretBytes key(kAeadKeyBytes);
  RandomBytes(key.mutable_span());
  std::string ct;
  ChaChaPolyEncrypt(key, 7, "ad", "plaintext", ct);
  ASSERT_EQ(ct.size(), 9 + kAeadTagBytes);
  std::string pt;
  ASSERT_TRUE(ChaChaPolyDecrypt(key, 7, "ad", ct, pt).ok());
  EXPECT_EQ(pt, "plaintext");
  for (size_t i = 0; i < ct.size(); ++i) {
    std::string bad = ct;
    bad[i] ^= 0x80;
    std::string out = "keep";
    absl::Status s = ChaChaPolyDecrypt(key, 7, "ad", bad, out);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << i;
    EXPECT_EQ(ReasonOf(s), "AUTHENTICATION_FAILED");
    EXPECT_EQ(out, "keep");  // nothing appended on failure
  }
  std::string out;
  EXPECT_FALSE(ChaChaPolyDecrypt(key, 8, "ad", ct, out).ok());  // wrong nonce
  EXPECT_FALSE(ChaChaPolyDecrypt(key, 7, "AD", ct, out).ok());  // wrong AD
  EXPECT_FALSE(ChaChaPolyDecrypt(key, 7, "ad", "short", out).ok());
}

TEST(CryptoTest, XChaChaSealOpen) {
  SecretBytes key(kAeadKeyBytes), other(kAeadKeyBytes);
  RandomBytes(key.mutable_span());
  RandomBytes(other.mutable_span());
  std::string sealed = XChaChaSeal(key, "context", SecretBytes::CopyOf("secret"));
  auto opened = XChaChaOpen(key, "context", sealed);
  ASSERT_TRUE(opened.ok());
  EXPECT_TRUE(opened->Equals(SecretBytes::CopyOf("secret")));
  EXPECT_FALSE(XChaChaOpen(other, "context", sealed).ok());
  EXPECT_FALSE(XChaChaOpen(key, "other context", sealed).ok());
  EXPECT_FALSE(XChaChaOpen(key, "context", sealed.substr(0, 10)).ok());
  // A fresh nonce each time.
  EXPECT_NE(sealed, XChaChaSeal(key, "context", SecretBytes::CopyOf("secret")));
}

TEST(CryptoTest, NoiseHkdfMatchesItsDefinition) {
  SecretBytes ck = SecretBytes::CopyOf(std::string(32, 'c'));
  std::string ikm(32, 'i');
  SecretBytes o1, o2, o3;
  NoiseHkdf(ck, {reinterpret_cast<const uint8_t*>(ikm.data()), ikm.size()}, &o1, &o2, &o3);
  SecretBytes temp = HmacSha256(ck.span(), ikm);
  EXPECT_TRUE(o1.Equals(HmacSha256(temp.span(), std::string(1, '\x01'))));
  std::string o1x2(reinterpret_cast<const char*>(o1.data()), 32);
  o1x2.push_back('\x02');
  EXPECT_TRUE(o2.Equals(HmacSha256(temp.span(), o1x2)));
  std::string o2x3(reinterpret_cast<const char*>(o2.data()), 32);
  o2x3.push_back('\x03');
  EXPECT_TRUE(o3.Equals(HmacSha256(temp.span(), o2x3)));
}

TEST(SecretBytesTest, MoveLeavesSourceEmptyAndCloneIsEqual) {
  SecretBytes a = SecretBytes::CopyOf("abc");
  SecretBytes b = std::move(a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(b.size(), 3u);
  SecretBytes c = b.Clone();
  EXPECT_TRUE(c.Equals(b));
  EXPECT_FALSE(c.Equals(SecretBytes::CopyOf("abd")));
}

}  // namespace
}  // namespace veil::vault
