#include "sidecar/channel/policy_expression.h"

#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"

namespace veil::channel {
namespace {

constexpr absl::string_view kAlice = "I0123456789abcdef0123456789abcdef";

bool Admits(absl::string_view text, const identity::Attributes& attributes,
            absl::string_view identifier = kAlice) {
  auto expression = PolicyExpression::Parse(text);
  EXPECT_TRUE(expression.ok()) << text << ": " << expression.status();
  if (!expression.ok()) return false;
  return expression->Evaluate({.identifier = identifier, .attributes = &attributes});
}

std::string ParseError(absl::string_view text) {
  auto expression = PolicyExpression::Parse(text);
  EXPECT_FALSE(expression.ok()) << text;
  if (expression.ok()) return "";
  EXPECT_EQ(ReasonOf(expression.status()), reason::kInvalidTrustPolicy);
  EXPECT_EQ(expression.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(expression.status().message());
}

TEST(PolicyExpressionTest, TheIssueExample) {
  constexpr absl::string_view kPolicy =
      R"(subject.role == "db-client" and subject.env in ["prod", "staging"])";
  EXPECT_TRUE(Admits(kPolicy, {{"role", "db-client"}, {"env", "prod"}}));
  EXPECT_TRUE(Admits(kPolicy, {{"role", "db-client"}, {"env", "staging"}, {"x", "y"}}));
  EXPECT_FALSE(Admits(kPolicy, {{"role", "db-client"}, {"env", "dev"}}));
  EXPECT_FALSE(Admits(kPolicy, {{"role", "web"}, {"env", "prod"}}));
  EXPECT_FALSE(Admits(kPolicy, {{"role", "db-client"}}));
  EXPECT_FALSE(Admits(kPolicy, {}));
  auto parsed = PolicyExpression::Parse(kPolicy);
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->uses_attributes());
  EXPECT_FALSE(parsed->Evaluate({.identifier = kAlice, .attributes = nullptr}));
}

TEST(PolicyExpressionTest, MissingAttributesNeverAdmit) {
  EXPECT_FALSE(Admits(R"(subject.role != "admin")", {}));
  EXPECT_TRUE(Admits(R"(subject.role != "admin")", {{"role", "web"}}));
  EXPECT_FALSE(Admits(R"(subject.role not in ["admin"])", {}));
  EXPECT_TRUE(Admits(R"(subject.role not in ["admin"])", {{"role", "web"}}));
  EXPECT_FALSE(Admits(R"(subject.role == subject.team)", {{"role", "a"}}));
  EXPECT_TRUE(Admits(R"(subject.role == subject.team)", {{"role", "a"}, {"team", "a"}}));
  EXPECT_TRUE(Admits("not has(subject.role)", {}));
  EXPECT_FALSE(Admits("has(subject.role)", {}));
  EXPECT_TRUE(Admits("has(subject.role)", {{"role", ""}}));
}

TEST(PolicyExpressionTest, IdentifierPrecedenceAndSpelling) {
  std::string by_id = absl::StrCat("subject.identifier == \"", kAlice, "\"");
  EXPECT_TRUE(Admits(by_id, {}));
  EXPECT_FALSE(Admits(by_id, {}, "I00000000000000000000000000000000"));
  EXPECT_FALSE(PolicyExpression::Parse(by_id)->uses_attributes());
  // and binds tighter than or; not tighter than and.
  EXPECT_TRUE(Admits(R"(subject.a == "1" or subject.b == "1" and subject.c == "1")", {{"a", "1"}}));
  EXPECT_FALSE(
      Admits(R"((subject.a == "1" or subject.b == "1") and subject.c == "1")", {{"a", "1"}}));
  EXPECT_TRUE(Admits(R"(not subject.a == "2" and subject.b == "1")", {{"a", "1"}, {"b", "1"}}));
  EXPECT_TRUE(
      Admits(R"(subject.a == "1" && !(subject.b == "2") || false)", {{"a", "1"}, {"b", "1"}}));
  EXPECT_TRUE(Admits("true", {}));
  EXPECT_FALSE(Admits("false", {}));
  EXPECT_TRUE(Admits(R"("prod" == subject.env)", {{"env", "prod"}}));
  EXPECT_TRUE(Admits(R"(subject.k8s.namespace == "a\"b\\c")", {{"k8s.namespace", "a\"b\\c"}}));
  EXPECT_TRUE(Admits(R"(subject.city == "Zürich")", {{"city", "Zürich"}}));
  EXPECT_TRUE(Admits(R"(subject.env in [])", {{"env", "x"}}) == false);
  // Canonical text: the same for the same meaning.
  auto a = PolicyExpression::Parse(R"(subject.a=="1"&&subject.b in ["y","x","x"])");
  auto b = PolicyExpression::Parse(R"(  subject.a == "1"   and subject.b in ["x", "y"] )");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->canonical(), b->canonical());
  EXPECT_EQ(a->canonical(), R"((subject.a == "1" and subject.b in ["x", "y"]))");
  // The canonical text parses to itself.
  EXPECT_EQ(PolicyExpression::Parse(a->canonical())->canonical(), a->canonical());
}

TEST(PolicyExpressionTest, RelayNameIsKnownOnlyToRelayPolicies) {
  auto p = PolicyExpression::Parse(R"(relay.name == subject.service or relay.name in ["x"])");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->canonical(), R"((relay.name == subject.service or relay.name in ["x"]))");
  const identity::Attributes a = {{"service", "db"}};
  const std::string db = "db", x = "x", other = "other";
  EXPECT_TRUE(p->Evaluate({.identifier = kAlice, .attributes = &a, .relay_name = &db}));
  EXPECT_TRUE(p->Evaluate({.identifier = kAlice, .attributes = &a, .relay_name = &x}));
  EXPECT_FALSE(p->Evaluate({.identifier = kAlice, .attributes = &a, .relay_name = &other}));
  EXPECT_FALSE(p->Evaluate({.identifier = kAlice, .attributes = &a, .relay_name = nullptr}));
  EXPECT_FALSE(PolicyExpression::Parse("relay.owner == \"x\"").ok());
}

TEST(PolicyExpressionTest, ErrorsSayWhereAndWhat) {
  EXPECT_NE(ParseError("").find("expected subject.<attribute> or a string, found the end"),
            std::string::npos);
  EXPECT_NE(ParseError(R"(subject.role = "x")").find("column 14"), std::string::npos);
  EXPECT_NE(ParseError(R"(subject.role == "x" and)").find("found the end"), std::string::npos);
  EXPECT_NE(ParseError(R"(subject.role == "x)").find("does not end"), std::string::npos);
  EXPECT_NE(ParseError(R"(subject.role == "a\n")").find("escape"), std::string::npos);
  EXPECT_NE(ParseError(R"(role == "x")").find("expected subject.<attribute>"), std::string::npos);
  EXPECT_NE(ParseError(R"(subject.Role == "x")").find("attribute key"), std::string::npos);
  EXPECT_NE(ParseError(R"("a" == "b")").find("two strings"), std::string::npos);
  EXPECT_NE(ParseError(R"("a" in ["b"])").find("left of in"), std::string::npos);
  EXPECT_NE(ParseError(R"(subject.a in "b")").find("'['"), std::string::npos);
  EXPECT_NE(ParseError(R"(subject.a in ["b" "c"])").find("',' or ']'"), std::string::npos);
  EXPECT_NE(ParseError(R"(subject.a in [subject.b])").find("a string"), std::string::npos);
  EXPECT_NE(ParseError(R"((subject.a == "b")").find("')'"), std::string::npos);
  EXPECT_NE(ParseError(R"(subject.a == "b")) )").find("the end of the expression"),
            std::string::npos);
  EXPECT_NE(ParseError(R"(has("x"))").find("has()"), std::string::npos);
  EXPECT_NE(ParseError(R"(subject.a == "b" ; true)").find("unexpected character"),
            std::string::npos);
  EXPECT_NE(ParseError("subject.a == \"\xC0\xAF\"").find("UTF-8"), std::string::npos);
  ParseError(R"(subject.a not == "b")");
}

TEST(PolicyExpressionTest, LimitsHold) {
  std::string deep(kMaxExpressionDepth, '(');
  deep += R"(subject.a == "b")" + std::string(kMaxExpressionDepth, ')');
  EXPECT_NE(ParseError(deep).find("nested"), std::string::npos);
  std::string nots;
  for (int i = 0; i < 1000; ++i) nots += "not ";
  EXPECT_NE(ParseError(nots + "true").find("nested"), std::string::npos);
  std::string shallow(kMaxExpressionDepth - 1, '(');
  shallow += R"(subject.a == "b")" + std::string(kMaxExpressionDepth - 1, ')');
  EXPECT_TRUE(Admits(shallow, {{"a", "b"}}));
  EXPECT_NE(ParseError(std::string(kMaxExpressionBytes + 1, ' ')).find("bytes"), std::string::npos);
  std::string many = "true";
  for (size_t i = 0; i < kMaxExpressionTerms; ++i) many += " or true";
  EXPECT_NE(ParseError(many).find("terms"), std::string::npos);
  std::string list = "subject.a in [";
  for (size_t i = 0; i <= kMaxExpressionList; ++i)
    list += absl::StrCat(i ? "," : "", "\"", i, "\"");
  EXPECT_NE(ParseError(list + "]").find("list"), std::string::npos);
}

// The canonical form spells `!` as `not ` and writes precedence as parentheses, so it can be
// longer and deeper than the text: an expression is refused unless that form is within the
// limits too (the fuzzer found 31 nested `!` beside an `||`, whose canonical form would not
// parse back).
TEST(PolicyExpressionTest, LimitsHoldForTheCanonicalFormToo) {
  const std::string nots(kMaxExpressionDepth - 1, '!');
  const std::string deep_in_or = nots + "true || true";
  std::string message = ParseError(deep_in_or);
  EXPECT_NE(message.find("written out in full"), std::string::npos) << message;
  EXPECT_NE(message.find("nested"), std::string::npos) << message;
  EXPECT_TRUE(PolicyExpression::Parse(nots + "true").ok());  // no group: no parentheses
  EXPECT_TRUE(PolicyExpression::Parse(nots.substr(1) + "true || true").ok());
  // About 3,800 bytes as written and 222 terms; each `!` is three bytes longer in canonical
  // form, which takes it past 4 KiB.
  std::string longer = "subject.a == \"" + std::string(3400, 'x') + "\"";
  for (int i = 0; i < 20; ++i) longer += " && !!!!!!!!!!true";
  ASSERT_LT(longer.size(), kMaxExpressionBytes);
  message = ParseError(longer);
  EXPECT_NE(message.find("written out in full"), std::string::npos) << message;
  EXPECT_NE(message.find("bytes"), std::string::npos) << message;
}

}  // namespace
}  // namespace veil::channel
