// Identities end to end: real veild processes, the IdentityService over gRPC, the state dir on
// disk.
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "sidecar/vault/crypto.h"
#include "sidecar/vault/state_file.h"
#include "tests/support/api_client.h"
#include "tests/support/veild_process.h"
#include "veil/state/v1/state.pb.h"
#include "veil/v1/identity.grpc.pb.h"

namespace veil::testing {
namespace {

using std::chrono::seconds;

class Identities {
 public:
  explicit Identities(const std::string& target)
      : stub_(v1::IdentityService::NewStub(Connect(target))) {}

  grpc::Status Create(const std::string& name, v1::Identity* out = nullptr) {
    v1::CreateIdentityRequest request;
    request.set_name(name);
    v1::Identity ignored;
    return stub_->CreateIdentity(Ctx().get(), request, out ? out : &ignored);
  }
  grpc::Status Get(const std::string& name, v1::Identity* out) {
    v1::GetIdentityRequest request;
    request.set_name(name);
    return stub_->GetIdentity(Ctx().get(), request, out);
  }
  grpc::Status Delete(const std::string& name) {
    v1::DeleteIdentityRequest request;
    request.set_name(name);
    v1::DeleteIdentityResponse response;
    return stub_->DeleteIdentity(Ctx().get(), request, &response);
  }
  v1::ListIdentitiesResponse List() {
    v1::ListIdentitiesResponse response;
    EXPECT_TRUE(stub_->ListIdentities(Ctx().get(), {}, &response).ok());
    return response;
  }
  v1::IdentityService::Stub& stub() { return *stub_; }
  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return c;
  }

 private:
  std::unique_ptr<v1::IdentityService::Stub> stub_;
};

std::string Identifier(Identities& ids, const std::string& name) {
  v1::Identity id;
  EXPECT_TRUE(ids.Get(name, &id).ok());
  return id.public_identity().identifier();
}

TEST(IdentityIntegrationTest, IdentitiesSurviveRestart) {
  TempDir dir;
  std::string state = dir.path() + "/state";
  std::string default_id, bob_id;
  {
    VeildProcess node(state, {"--identity", "ops"});
    ASSERT_TRUE(node.Start()) << node.log();
    Identities ids(node.api_target());
    v1::Identity bob;
    ASSERT_TRUE(ids.Create("bob", &bob).ok());
    bob_id = bob.public_identity().identifier();
    default_id = Identifier(ids, "default");
    EXPECT_EQ(ids.List().identities_size(), 3);  // default, ops, bob
    EXPECT_EQ(bob.public_identity().public_key().size(), 32u);
  }
  VeildProcess again(state, {});
  ASSERT_TRUE(again.Start()) << again.log();
  Identities ids(again.api_target());
  EXPECT_EQ(Identifier(ids, "default"), default_id);
  EXPECT_EQ(Identifier(ids, "bob"), bob_id);
  EXPECT_EQ(Identifier(ids, "ops").size(), 33u);
}

TEST(IdentityIntegrationTest, ApiErrors) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  Identities ids(node.api_target());
  grpc::Status s = ids.Create("Bad Name");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ReasonOf(s), "INVALID_IDENTITY_NAME");
  EXPECT_NE(s.error_message().find("a-z, 0-9, '_' and '-'"), std::string::npos);
  EXPECT_EQ(ids.Create("../etc").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(ids.Create("bob").ok());
  s = ids.Create("bob");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ReasonOf(s), "IDENTITY_EXISTS");
  v1::Identity out;
  s = ids.Get("carol", &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ReasonOf(s), "IDENTITY_NOT_FOUND");
  EXPECT_TRUE(ids.Delete("bob").ok());
  EXPECT_EQ(ids.Delete("bob").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_FALSE(std::filesystem::exists(node.state_dir() + "/identities/bob.identity"));
}

TEST(IdentityIntegrationTest, ManyConcurrentCreates) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  constexpr int kThreads = 8, kEach = 10;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Identities ids(node.api_target());
      for (int i = 0; i < kEach; ++i) {
        if (ids.Create("id-" + std::to_string(t) + "-" + std::to_string(i)).ok()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kEach);
  Identities ids(node.api_target());
  EXPECT_EQ(ids.List().identities_size(), kThreads * kEach + 1);
}

TEST(IdentityIntegrationTest, ExportOnOneNodeImportOnAnother) {
  VeildProcess a, b;
  ASSERT_TRUE(a.Start()) << a.log();
  ASSERT_TRUE(b.Start()) << b.log();
  Identities on_a(a.api_target()), on_b(b.api_target());
  v1::Identity alice;
  ASSERT_TRUE(on_a.Get("default", &alice).ok());
  v1::ImportTrustedIdentityRequest import;
  *import.mutable_public_identity() = alice.public_identity();
  import.set_label("Alice");
  v1::TrustedIdentity trusted;
  ASSERT_TRUE(on_b.stub().ImportTrustedIdentity(Identities::Ctx().get(), import, &trusted).ok());
  EXPECT_EQ(trusted.public_identity().identifier(), alice.public_identity().identifier());
  // A forged pairing of identifier and key is refused.
  v1::Identity bob;
  ASSERT_TRUE(on_b.Get("default", &bob).ok());
  import.mutable_public_identity()->set_public_key(bob.public_identity().public_key());
  grpc::Status s = on_b.stub().ImportTrustedIdentity(Identities::Ctx().get(), import, &trusted);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ReasonOf(s), "IDENTIFIER_MISMATCH");
  v1::ListTrustedIdentitiesResponse list;
  ASSERT_TRUE(on_b.stub().ListTrustedIdentities(Identities::Ctx().get(), {}, &list).ok());
  ASSERT_EQ(list.trusted_identities_size(), 1);
  EXPECT_EQ(list.trusted_identities(0).label(), "Alice");
}

const char kHexKey[] = "8f2a6c1d0e9b7a6f5e4d3c2b1a0998877665544332211000ffeeddccbbaa9988";

TEST(IdentityIntegrationTest, AtRestEncryptionRoundTripAndKeyRefusals) {
  TempDir dir;
  std::string state = dir.path() + "/state";
  std::string key_file = dir.path() + "/vault.key";
  std::ofstream(key_file) << kHexKey << "\n";
  ASSERT_EQ(::chmod(key_file.c_str(), 0600), 0);
  std::string bob_id;
  {
    VeildProcess node(state, {});
    node.SetEnv("VEIL_VAULT_KEY", kHexKey);  // as from a Kubernetes Secret
    ASSERT_TRUE(node.Start()) << node.log();
    // Read, then wiped from the environment where it was: /proc/PID/environ no longer has it.
    std::ifstream environ_file("/proc/" + std::to_string(node.pid()) + "/environ");
    std::string environ_text((std::istreambuf_iterator<char>(environ_file)), {});
    EXPECT_FALSE(environ_text.empty());
    EXPECT_EQ(environ_text.find(kHexKey), std::string::npos);
    Identities ids(node.api_target());
    v1::Identity bob;
    ASSERT_TRUE(ids.Create("bob", &bob).ok());
    bob_id = bob.public_identity().identifier();
  }
  {  // Same key from a file.
    VeildProcess node(state, {"--vault-key-file", key_file});
    ASSERT_TRUE(node.Start()) << node.log();
    Identities ids(node.api_target());
    EXPECT_EQ(Identifier(ids, "bob"), bob_id);
  }
  {  // Wrong key: refused, never a new vault.
    std::string wrong = kHexKey;
    wrong[5] = wrong[5] == '0' ? '1' : '0';
    VeildProcess node(state, {});
    node.SetEnv("VEIL_VAULT_KEY", wrong);
    EXPECT_FALSE(node.Start());
    EXPECT_EQ(node.exit_code(), 1);
    EXPECT_NE(node.log().find("is wrong for the vault"), std::string::npos) << node.log();
  }
  {  // No key.
    VeildProcess node(state, {});
    EXPECT_FALSE(node.Start());
    EXPECT_NE(node.log().find("is encrypted"), std::string::npos) << node.log();
  }
  {  // Both ways at once.
    VeildProcess node(state, {"--vault-key-file", key_file});
    node.SetEnv("VEIL_VAULT_KEY", kHexKey);
    EXPECT_FALSE(node.Start());
    EXPECT_NE(node.log().find("give the vault key one way"), std::string::npos) << node.log();
  }
  {  // A key file every user may read: refused, naming the file and its mode.
    ASSERT_EQ(::chmod(key_file.c_str(), 0644), 0);
    VeildProcess node(state, {"--vault-key-file", key_file});
    EXPECT_FALSE(node.Start());
    EXPECT_EQ(node.exit_code(), 1);
    EXPECT_NE(node.log().find(key_file + " is readable by every user (mode 0644)"),
              std::string::npos)
        << node.log();
    EXPECT_EQ(node.log().find(kHexKey), std::string::npos);
  }
  {  // Readable by its group (a Kubernetes Secret for the pod's fsGroup): taken, with a warning.
    ASSERT_EQ(::chmod(key_file.c_str(), 0640), 0);
    VeildProcess node(state, {"--vault-key-file", key_file});
    ASSERT_TRUE(node.Start()) << node.log();
    EXPECT_NE(node.log().find("is readable by its group"), std::string::npos) << node.log();
    ASSERT_EQ(::chmod(key_file.c_str(), 0400), 0);
  }
  // Still the same identity afterwards.
  VeildProcess node(state, {"--vault-key-file", key_file});
  ASSERT_TRUE(node.Start()) << node.log();
  Identities ids(node.api_target());
  EXPECT_EQ(Identifier(ids, "bob"), bob_id);
}

TEST(IdentityIntegrationTest, PassphraseVault) {
  TempDir dir;
  std::string state = dir.path() + "/state";
  std::string id;
  {
    VeildProcess node(state, {});
    node.SetEnv("VEIL_VAULT_KEY", "correct horse battery staple");
    ASSERT_TRUE(node.Start(seconds(60))) << node.log();
    Identities ids(node.api_target());
    id = Identifier(ids, "default");
  }
  VeildProcess node(state, {});
  node.SetEnv("VEIL_VAULT_KEY", "correct horse battery staple");
  ASSERT_TRUE(node.Start(seconds(60))) << node.log();
  Identities ids(node.api_target());
  EXPECT_EQ(Identifier(ids, "default"), id);
}

class DamagedStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    VeildProcess node(state_, {});
    ASSERT_TRUE(node.Start()) << node.log();
    Identities ids(node.api_target());
    ASSERT_TRUE(ids.Create("bob").ok());
    std::ifstream in(path_, std::ios::binary);
    good_.assign(std::istreambuf_iterator<char>(in), {});
    ASSERT_FALSE(good_.empty());
  }
  void Write(const std::string& bytes, mode_t mode) {
    std::ofstream(path_, std::ios::binary | std::ios::trunc) << bytes;
    ::chmod(path_.c_str(), mode);
  }
  std::string ReadBack() {
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // Starting fails with exit code 1 and a log that names the file and says `why`.
  void ExpectRefused(const std::string& why) {
    VeildProcess node(state_, {});
    EXPECT_FALSE(node.Start());
    EXPECT_EQ(node.exit_code(), 1);
    EXPECT_NE(node.log().find(path_), std::string::npos) << node.log();
    EXPECT_NE(node.log().find(why), std::string::npos) << node.log();
  }

  TempDir dir_;
  std::string state_ = dir_.path() + "/state";
  std::string path_ = state_ + "/identities/bob.identity";
  std::string good_;
};

TEST_F(DamagedStateTest, TruncatedFile) {
  std::string truncated = good_.substr(0, good_.size() - 7);
  Write(truncated, 0600);
  ExpectRefused("truncated");
  EXPECT_EQ(ReadBack(), truncated);  // never overwritten
}

TEST_F(DamagedStateTest, CorruptedFile) {
  std::string bad = good_;
  bad[bad.size() / 2] ^= 0x20;
  Write(bad, 0600);
  ExpectRefused("checksum mismatch");
  EXPECT_EQ(ReadBack(), bad);
}

TEST_F(DamagedStateTest, EmptyFile) {
  Write("", 0600);
  ExpectRefused("truncated");
}

TEST_F(DamagedStateTest, WrongPermissions) {
  Write(good_, 0644);
  ExpectRefused("mode 0644");
  Write(good_, 0600);
  VeildProcess node(state_, {});
  EXPECT_TRUE(node.Start()) << node.log();
}

TEST(IdentityIntegrationTest, FileModesOfEverythingCreated) {
  VeildProcess node({"--identity", "bob"});
  ASSERT_TRUE(node.Start()) << node.log();
  size_t files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(node.state_dir())) {
    struct stat st;
    ASSERT_EQ(::lstat(entry.path().c_str(), &st), 0);
    if (S_ISDIR(st.st_mode)) {
      EXPECT_EQ(st.st_mode & 0777, 0700u) << entry.path();
    } else {
      EXPECT_EQ(st.st_mode & 0777, 0600u) << entry.path();
      ++files;
    }
  }
  struct stat st;
  ASSERT_EQ(::stat(node.state_dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_GE(files, 4u);  // lock, vault.meta, default and bob
}

// Every form in which a secret could leak into text or bytes.
std::vector<std::string> Encodings(const std::string& secret) {
  std::string hex = absl::BytesToHexString(secret);
  std::string b64, b64url;
  absl::Base64Escape(secret, &b64);
  absl::WebSafeBase64Escape(secret, &b64url);
  std::string b64_bare = b64.substr(0, b64.find('='));
  return {secret, hex, absl::AsciiStrToUpper(hex), b64_bare, b64url};
}

TEST(IdentityIntegrationTest, NoPrivateKeyInAnyApiResponseOrLogLine) {
  VeildProcess node({"--log-level", "trace", "--identity", "bob"});
  ASSERT_TRUE(node.Start()) << node.log();
  Identities ids(node.api_target());
  std::string responses;
  for (const char* name : {"carol", "dave"}) {
    v1::Identity id;
    ASSERT_TRUE(ids.Create(name, &id).ok());
    responses += id.SerializeAsString();
  }
  for (const char* name : {"default", "bob", "carol"}) {
    v1::Identity id;
    ASSERT_TRUE(ids.Get(name, &id).ok());
    responses += id.SerializeAsString();
  }
  responses += ids.List().SerializeAsString();
  grpc::Status err = ids.Create("bob");  // errors too
  responses += err.error_message() + err.error_details();
  responses += GetNode(Connect(node.api_target())).SerializeAsString();
  ASSERT_TRUE(ids.Delete("dave").ok());
  node.Signal(SIGTERM);
  ASSERT_EQ(node.Wait(), 0);
  std::string log = node.log();

  // The secrets, read from the (unencrypted) state files.
  std::vector<std::string> secrets;
  for (const char* name : {"default", "bob", "carol"}) {
    std::string path = node.state_dir() + "/identities/" + name + ".identity";
    auto payload = vault::ReadStateFile(path, "IDNT");
    ASSERT_TRUE(payload.ok()) << payload.status();
    state::v1::IdentityRecord record;
    ASSERT_TRUE(record.ParseFromString(*payload));
    std::string seed = record.sealed_signing_seed().substr(1);  // unprotected: tag + bytes
    std::string static_secret = record.sealed_static_secret().substr(1);
    ASSERT_EQ(seed.size(), 32u);
    ASSERT_EQ(static_secret.size(), 32u);
    secrets.push_back(seed);
    secrets.push_back(static_secret);
    secrets.push_back(seed + record.signing_public_key());  // libsodium's 64-byte secret key
  }
  for (const std::string& secret : secrets) {
    for (const std::string& form : Encodings(secret)) {
      EXPECT_EQ(log.find(form), std::string::npos) << "a private key appears in the log";
      EXPECT_EQ(responses.find(form), std::string::npos) << "a private key appears in a response";
    }
  }
  EXPECT_GT(log.size(), 200u);  // the log was really captured
}

}  // namespace
}  // namespace veil::testing
