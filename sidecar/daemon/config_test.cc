#include "sidecar/daemon/config.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"

namespace veil::daemon {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<config::v1::Config> Parse(const std::string& yaml) {
  config::v1::Config config;
  absl::Status s = YamlToMessage(yaml, "c.yaml", config);
  if (!s.ok()) return s;
  return config;
}

TEST(ConfigTest, ReadsEverySection) {
  auto config = Parse(R"(
# Bob's sidecar
identities:
  - name: bob
trusted_identities:
  - public_identity:
      identifier: I00112233445566778899aabbccddeeff
      public_key: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
    label: "Alice's laptop"
listeners:
  - address: listener
    identity: bob
    trust_policy:
      any_of:
        policies:
          - trust_identifier: I00112233445566778899aabbccddeeff
          - trust_imported: true
relays:
  - hubRoute: /tcp/hub.example:4000
    name: bob
    identity: bob
    hub_trust_policy: { trust_identifiers: { identifiers: [I0, I1] } }
)");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->identities_size(), 1);
  EXPECT_EQ(config->identities(0).name(), "bob");
  ASSERT_EQ(config->trusted_identities_size(), 1);
  EXPECT_EQ(config->trusted_identities(0).public_identity().public_key().size(), 32u);
  EXPECT_EQ(config->trusted_identities(0).public_identity().public_key()[31], '\x1f');
  EXPECT_EQ(config->trusted_identities(0).label(), "Alice's laptop");
  ASSERT_EQ(config->listeners_size(), 1);
  EXPECT_EQ(config->listeners(0).trust_policy().any_of().policies_size(), 2);
  EXPECT_TRUE(config->listeners(0).trust_policy().any_of().policies(1).trust_imported());
  ASSERT_EQ(config->relays_size(), 1);
  EXPECT_EQ(config->relays(0).hub_route(), "/tcp/hub.example:4000");  // camelCase accepted
  EXPECT_THAT(config->relays(0).hub_trust_policy().trust_identifiers().identifiers(),
              ::testing::ElementsAre("I0", "I1"));
}

TEST(ConfigTest, EmptyDocumentsAreEmptyConfigs) {
  for (const char* text : {"", "# nothing\n", "---\n", "identities:\n"}) {
    auto config = Parse(text);
    ASSERT_TRUE(config.ok()) << text << ": " << config.status();
    EXPECT_EQ(config->ByteSizeLong(), 0u) << text;
  }
}

struct BadCase {
  const char* name;
  const char* yaml;
  const char* error;  // a part of the message
};

class ConfigErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrorTest, IsAClearErrorWithThePlace) {
  auto config = Parse(GetParam().yaml);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(config.status()), "INVALID_CONFIG");
  EXPECT_THAT(config.status().message(), HasSubstr(GetParam().error));
  EXPECT_THAT(config.status().message(), HasSubstr("c.yaml:"));
}

INSTANTIATE_TEST_SUITE_P(
    Bad, ConfigErrorTest,
    ::testing::Values(
        BadCase{"Syntax", "identities: [name: bob\n", "c.yaml:2:1: not valid YAML"},
        BadCase{"UnknownTopLevel", "listener:\n  - address: x\n",
                "c.yaml:1:1: unknown field \"listener\" (Config has: identities, "
                "trusted_identities, listeners, relays, outlets, inlets, trusted_authorities, "
                "enrollments)"},

        BadCase{"UnknownNested",
                "listeners:\n  - address: x\n    trust_policy: {trust_everybody: true}\n",
                "c.yaml:3:20: listeners[0].trust_policy: unknown field \"trust_everybody\""},
        BadCase{"ScalarForList", "identities: bob\n", "identities: expected a list, found \"bob\""},
        BadCase{"ScalarForMessage", "identities: [bob]\n",
                "identities[0]: expected a map of CreateIdentityRequest fields"},
        BadCase{"ListForScalar", "identities:\n  - name: [a, b]\n",
                "identities[0].name: expected a single value, found a list"},
        BadCase{"BadBool", "listeners:\n  - trust_policy: {trust_everyone: yes please}\n",
                "expected true or false, found \"yes please\""},
        BadCase{"BadBase64", "trusted_identities:\n  - public_identity: {public_key: \"***\"}\n",
                "public_key: expected base64"},
        BadCase{"OneofTwice",
                "listeners:\n  - trust_policy: {trust_everyone: true, trust_imported: true}\n",
                "\"trust_imported\" and \"trust_everyone\" exclude each other"},
        BadCase{"FieldTwice", "identities: []\nidentities: []\n", "given twice"},
        BadCase{"TopLevelList", "- a\n- b\n", "expected a map of Config fields, found a list"},
        BadCase{"TopLevelScalar", "hello\n", "expected a map of Config fields"},
        BadCase{"ComplexKey", "? [a]\n: b\n", "a key must be a plain name"}),
    [](const auto& info) { return std::string(info.param.name); });

std::string NestedPolicies(int depth) {
  std::string yaml = "listeners:\n  - trust_policy: ";
  for (int i = 0; i < depth; ++i) yaml += "{any_of: {policies: [";
  yaml += "{trust_everyone: true}";
  for (int i = 0; i < depth; ++i) yaml += "]}}";
  return yaml + "\n";
}

TEST(ConfigTest, DeepNestingIsRefusedNotACrash) {
  auto config = Parse(NestedPolicies(40));
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("nested too deeply"));
  // Deeper still: the YAML parser's own limit answers first.
  auto deeper = Parse(NestedPolicies(5000));
  ASSERT_FALSE(deeper.ok());
  EXPECT_THAT(deeper.status().message(), HasSubstr("c.yaml"));
}

TEST(ConfigTest, FileErrors) {
  auto missing = LoadConfigFile("/nonexistent/veil.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/veil.yaml"));

  std::string big = ::testing::TempDir() + "/big.yaml";
  {
    std::ofstream out(big);
    out << "# " << std::string(kMaxConfigBytes, 'x') << "\n";
  }
  auto too_big = LoadConfigFile(big);
  ASSERT_FALSE(too_big.ok());
  EXPECT_THAT(too_big.status().message(), HasSubstr("larger than 1 MiB"));
}

}  // namespace
}  // namespace veil::daemon
