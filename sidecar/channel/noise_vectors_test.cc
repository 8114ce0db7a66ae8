// Runs every published vector of Noise_XX_25519_ChaChaPoly_SHA256 that ../shared/vectors/ holds
// — cacophony.json, snow-xx.json, noise-c-xx.json, flynn-xx.json (each named in that folder's
// README) — read when the test runs, not when it is built: both sides, every handshake and
// transport message, and the handshake hash where the vector has one. It says how many it ran.
// A missing file is a visible skip on a developer's machine and a failure under CI (CI=true).
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/escaping.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "sidecar/channel/noise.h"

namespace veil::channel {
namespace {

using google::protobuf::Struct;

// The vector files of our suite, and how many vectors of it each holds (shared/vectors/README).
struct VectorFile {
  const char* name;
  int expected;
};
constexpr VectorFile kFiles[] = {
    {"cacophony.json", 1}, {"snow-xx.json", 2}, {"noise-c-xx.json", 1}, {"flynn-xx.json", 4}};

std::string VectorsDir() {
  const char* root = std::getenv("VEIL_SOURCE_DIR");
  std::string base = root && *root ? root : VEIL_DEFAULT_SOURCE_DIR;
  return base + "/../shared/vectors/";
}

bool UnderCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// The vectors of our suite in `path`; an error for a file that is not the vectors format.
absl::StatusOr<std::vector<Struct>> LoadVectors(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot read " + path);
  std::string json((std::istreambuf_iterator<char>(in)), {});
  Struct file;
  if (!google::protobuf::util::JsonStringToMessage(json, &file).ok() ||
      !file.fields().contains("vectors")) {
    return absl::InvalidArgumentError(path + " is not a vectors file");
  }
  std::vector<Struct> out;
  for (const auto& v : file.fields().at("vectors").list_value().values()) {
    const Struct& vector = v.struct_value();
    auto name = vector.fields().find("protocol_name");
    if (name != vector.fields().end() && name->second.string_value() == kNoiseProtocolName) {
      out.push_back(vector);
    }
  }
  return out;
}

bool Has(const Struct& s, const std::string& key) { return s.fields().contains(key); }

std::string Field(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  return it == s.fields().end() ? "" : absl::HexStringToBytes(it->second.string_value());
}

vault::X25519KeyPair Key(const std::string& secret) {
  return *vault::X25519FromSecret(vault::SecretBytes::CopyOf(secret));
}

// One vector, both sides; failures name the message.
void RunVector(const Struct& v) {
  RawStaticKey init_s(Key(Field(v, "init_static")));
  RawStaticKey resp_s(Key(Field(v, "resp_static")));
  HandshakeState initiator(HandshakeState::Role::kInitiator, Field(v, "init_prologue"), init_s,
                           Key(Field(v, "init_ephemeral")));
  HandshakeState responder(
      HandshakeState::Role::kResponder,
      Has(v, "resp_prologue") ? Field(v, "resp_prologue") : Field(v, "init_prologue"), resp_s,
      Key(Field(v, "resp_ephemeral")));
  const auto& messages = v.fields().at("messages").list_value().values();
  int i = 0;
  for (; i < messages.size() && initiator.next() != HandshakeState::Next::kDone; ++i) {
    const Struct& m = messages[i].struct_value();
    bool from_initiator = i % 2 == 0;
    HandshakeState& writer = from_initiator ? initiator : responder;
    HandshakeState& reader = from_initiator ? responder : initiator;
    ASSERT_EQ(writer.next(), HandshakeState::Next::kWrite) << i;
    auto written = writer.WriteMessage(Field(m, "payload"));
    ASSERT_TRUE(written.ok()) << written.status();
    EXPECT_EQ(absl::BytesToHexString(*written), absl::BytesToHexString(Field(m, "ciphertext")))
        << "message " << i;
    auto payload = reader.ReadMessage(*written);
    ASSERT_TRUE(payload.ok()) << payload.status();
    EXPECT_EQ(*payload, Field(m, "payload"));
  }
  ASSERT_EQ(i, 3);
  ASSERT_EQ(responder.next(), HandshakeState::Next::kDone);
  if (Has(v, "handshake_hash")) {
    EXPECT_EQ(absl::BytesToHexString(initiator.handshake_hash()),
              absl::BytesToHexString(Field(v, "handshake_hash")));
  }
  EXPECT_EQ(initiator.handshake_hash(), responder.handshake_hash());
  EXPECT_EQ(initiator.remote_static(), resp_s.public_key());
  EXPECT_EQ(responder.remote_static(), init_s.public_key());

  auto i_keys = initiator.Split();
  auto r_keys = responder.Split();
  ASSERT_TRUE(i_keys.ok() && r_keys.ok());
  uint64_t n_init = 0, n_resp = 0;
  // Transport messages alternate, starting with the responder (message 3).
  for (; i < messages.size(); ++i) {
    const Struct& m = messages[i].struct_value();
    bool from_initiator = i % 2 == 0;
    std::string ct;
    uint64_t n = from_initiator ? n_init++ : n_resp++;
    (from_initiator ? i_keys->send : r_keys->send).Encrypt(n, "", Field(m, "payload"), ct);
    EXPECT_EQ(absl::BytesToHexString(ct), absl::BytesToHexString(Field(m, "ciphertext")))
        << "transport message " << i;
    std::string pt;
    ASSERT_TRUE((from_initiator ? r_keys->receive : i_keys->receive).Decrypt(n, "", ct, pt).ok());
    EXPECT_EQ(pt, Field(m, "payload"));
  }
}

TEST(NoiseVectorsTest, EveryPublishedVectorOfOurSuite) {
  int ran = 0, files = 0;
  std::vector<std::string> missing;
  for (const VectorFile& file : kFiles) {
    const std::string path = VectorsDir() + file.name;
    if (!std::filesystem::exists(path)) {
      missing.push_back(path);
      continue;
    }
    auto vectors = LoadVectors(path);
    ASSERT_TRUE(vectors.ok()) << vectors.status();
    EXPECT_EQ(static_cast<int>(vectors->size()), file.expected)
        << file.name << " should hold " << file.expected << " vectors of " << kNoiseProtocolName;
    for (size_t k = 0; k < vectors->size(); ++k) {
      SCOPED_TRACE(std::string(file.name) + " vector " + std::to_string(k));
      RunVector((*vectors)[k]);
      ++ran;
    }
    ++files;
  }
  std::printf("ran %d %s vectors from %d files in %s\n", ran, kNoiseProtocolName, files,
              VectorsDir().c_str());
  RecordProperty("vectors_run", ran);
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += " " + m;
    if (UnderCi()) FAIL() << "Noise vector files missing under CI:" << list;
    GTEST_SKIP() << "Noise vector files missing (ran " << ran << " vectors):" << list;
  }
  EXPECT_EQ(ran, 8);
}

// Split is refused before the handshake is done and after it was split once; the halves
// come out the right way round for each role (what one side sends the other receives).
TEST(NoiseSplitTest, OnlyOnceAndOnlyWhenDone) {
  RawStaticKey a(vault::GenerateX25519()), b(vault::GenerateX25519());
  HandshakeState initiator(HandshakeState::Role::kInitiator, "p", a);
  HandshakeState responder(HandshakeState::Role::kResponder, "p", b);
  EXPECT_EQ(initiator.Split().status().code(), absl::StatusCode::kFailedPrecondition);
  auto m1 = initiator.WriteMessage("");
  ASSERT_TRUE(responder.ReadMessage(*m1).ok());
  auto m2 = responder.WriteMessage("");
  ASSERT_TRUE(initiator.ReadMessage(*m2).ok());
  EXPECT_EQ(responder.Split().status().code(), absl::StatusCode::kFailedPrecondition);
  auto m3 = initiator.WriteMessage("");
  ASSERT_TRUE(responder.ReadMessage(*m3).ok());
  auto i_keys = initiator.Split();
  auto r_keys = responder.Split();
  ASSERT_TRUE(i_keys.ok() && r_keys.ok());
  std::string ct, pt;
  i_keys->send.Encrypt(0, "", "to the responder", ct);
  ASSERT_TRUE(r_keys->receive.Decrypt(0, "", ct, pt).ok());
  EXPECT_EQ(pt, "to the responder");
  ct.clear();
  pt.clear();
  r_keys->send.Encrypt(0, "", "to the initiator", ct);
  ASSERT_TRUE(i_keys->receive.Decrypt(0, "", ct, pt).ok());
  EXPECT_EQ(pt, "to the initiator");
  EXPECT_EQ(initiator.Split().status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace veil::channel
