// Runs every published vector of Noise_XX_25519_ChaChaPoly_SHA256 from
// ../shared/vectors/cacophony.json (read at test time): both sides, every handshake message and
// transport message, and the handshake hash. Skips, visibly, when the file is absent.
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

std::string VectorsPath() {
  const char* root = std::getenv("VEIL_SOURCE_DIR");
  std::string base = root && *root ? root : VEIL_DEFAULT_SOURCE_DIR;
  return base + "/../shared/vectors/cacophony.json";
}

std::vector<Struct> LoadVectors() {
  std::vector<Struct> out;
  std::ifstream in(VectorsPath());
  if (!in) return out;
  std::string json((std::istreambuf_iterator<char>(in)), {});
  Struct file;
  if (!google::protobuf::util::JsonStringToMessage(json, &file).ok()) return out;
  for (const auto& v : file.fields().at("vectors").list_value().values()) {
    const Struct& vector = v.struct_value();
    auto name = vector.fields().find("protocol_name");
    if (name != vector.fields().end() && name->second.string_value() == kNoiseProtocolName) {
      out.push_back(vector);
    }
  }
  return out;
}

std::string Field(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  return it == s.fields().end() ? "" : absl::HexStringToBytes(it->second.string_value());
}

vault::X25519KeyPair Key(const std::string& secret) {
  return *vault::X25519FromSecret(vault::SecretBytes::CopyOf(secret));
}

class NoiseVectorsTest : public ::testing::TestWithParam<Struct> {};

TEST_P(NoiseVectorsTest, HandshakeAndTransportMatch) {
  const Struct& v = GetParam();
  if (v.fields().empty()) GTEST_SKIP() << "Noise vectors not found at " << VectorsPath();
  RawStaticKey init_s(Key(Field(v, "init_static")));
  RawStaticKey resp_s(Key(Field(v, "resp_static")));
  HandshakeState initiator(HandshakeState::Role::kInitiator, Field(v, "init_prologue"), init_s,
                           Key(Field(v, "init_ephemeral")));
  HandshakeState responder(HandshakeState::Role::kResponder, Field(v, "resp_prologue"), resp_s,
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
  EXPECT_EQ(absl::BytesToHexString(initiator.handshake_hash()),
            absl::BytesToHexString(Field(v, "handshake_hash")));
  EXPECT_EQ(initiator.handshake_hash(), responder.handshake_hash());
  EXPECT_EQ(initiator.remote_static(), resp_s.public_key());
  EXPECT_EQ(responder.remote_static(), init_s.public_key());

  auto [i_send, i_recv] = initiator.Split();
  auto [r_recv, r_send] = responder.Split();
  uint64_t n_init = 0, n_resp = 0;
  // Transport messages alternate, starting with the responder (message 3).
  for (; i < messages.size(); ++i) {
    const Struct& m = messages[i].struct_value();
    bool from_initiator = i % 2 == 0;
    std::string ct;
    uint64_t n = from_initiator ? n_init++ : n_resp++;
    (from_initiator ? i_send : r_send).Encrypt(n, "", Field(m, "payload"), ct);
    EXPECT_EQ(absl::BytesToHexString(ct), absl::BytesToHexString(Field(m, "ciphertext")))
        << "transport message " << i;
    std::string pt;
    ASSERT_TRUE((from_initiator ? r_recv : i_recv).Decrypt(n, "", ct, pt).ok());
    EXPECT_EQ(pt, Field(m, "payload"));
  }
}

std::vector<Struct> Vectors() {
  std::vector<Struct> v = LoadVectors();
  if (v.empty()) v.emplace_back();  // one empty entry, reported as skipped
  return v;
}

INSTANTIATE_TEST_SUITE_P(Cacophony, NoiseVectorsTest, ::testing::ValuesIn(Vectors()),
                         [](const auto& info) { return "vector" + std::to_string(info.index); });

// Runs first: marks the suite skipped, loudly, when the vector file is missing.
class NoiseVectorsPresence : public ::testing::Test {};
TEST_F(NoiseVectorsPresence, VectorFileIsPresent) {
  if (!std::filesystem::exists(VectorsPath())) {
    GTEST_SKIP() << "Noise vectors not found at " << VectorsPath() << ": vector tests skipped";
  }
  EXPECT_FALSE(LoadVectors().empty()) << "no " << kNoiseProtocolName << " vector in the file";
}

}  // namespace
}  // namespace veil::channel
