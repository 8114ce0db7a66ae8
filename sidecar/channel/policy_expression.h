// Attribute policy expressions: which peers a listener, outlet, inlet or relay admits, written
// over the peer's identifier and the attributes its verified credentials give. The grammar
// (docs/credentials.md, "Policy expressions"):
//
//   expr       := or
//   or         := and { ("or" | "||") and }
//   and        := unary { ("and" | "&&") unary }
//   unary      := ("not" | "!") unary | primary
//   primary    := "(" expr ")" | "true" | "false" | "has" "(" attribute ")"
//               | operand ("==" | "!=") operand | operand ["not"] "in" list
//   operand    := attribute | string
//   attribute  := "subject." key            (key as in credentials, or "identifier")
//               | "relay.name"              (on a hub's relay policy: the name asked for)
//   list       := "[" [ string { "," string } ] "]"
//   string     := '"' { char | '\"' | '\\' } '"'   (UTF-8)
//
// e.g. `subject.role == "db-client" and subject.env in ["prod", "staging"]`. A comparison with
// an attribute the peer does not have is false, whatever the operator (so `!=` and `not in`
// never admit a peer without the attribute); `has(...)` tests for one. Limits: 4 KiB of text,
// 32 levels of nesting, 256 strings in a list, 256 terms.
//
// Thread-safety: a parsed expression is immutable; Evaluate may run on any thread.
#ifndef VEIL_SIDECAR_CHANNEL_POLICY_EXPRESSION_H_
#define VEIL_SIDECAR_CHANNEL_POLICY_EXPRESSION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sidecar/identity/credential.h"

namespace veil::channel {

inline constexpr size_t kMaxExpressionBytes = 4096;
inline constexpr int kMaxExpressionDepth = 32;
inline constexpr size_t kMaxExpressionList = 256;
inline constexpr size_t kMaxExpressionTerms = 256;

// Who is asking: an authenticated identifier, and the attributes its credentials gave (null
// or empty when it presented none).
struct PeerView {
  absl::string_view identifier;
  const identity::Attributes* attributes = nullptr;
  // The relay name a registration asks for (a hub's relay policy); null elsewhere.
  const std::string* relay_name = nullptr;
};

class PolicyExpression {
 public:
  // INVALID_ARGUMENT (INVALID_TRUST_POLICY) naming the column and what was expected.
  static absl::StatusOr<PolicyExpression> Parse(absl::string_view text);

  bool Evaluate(const PeerView& peer) const;
  // Whether any term reads an attribute other than the identifier (the policy needs
  // credentials).
  bool uses_attributes() const { return uses_attributes_; }
  // The expression as parsed, normalised (one space between tokens, words for operators):
  // equal for expressions that differ only in spelling.
  const std::string& canonical() const { return canonical_; }

  struct Node;

 private:
  PolicyExpression() = default;
  std::vector<Node> nodes_;
  size_t root_ = 0;
  bool uses_attributes_ = false;
  std::string canonical_;
  friend class ExpressionParser;
};

struct PolicyExpression::Node {
  enum class Kind { kTrue, kFalse, kAnd, kOr, kNot, kEqual, kNotEqual, kIn, kNotIn, kHas };
  Kind kind;
  // kAnd/kOr/kNot: child node indexes. Comparisons: the operands.
  std::vector<size_t> children;
  struct Operand {
    bool is_attribute = false;
    bool is_relay_name = false;  // relay.name (is_attribute too)
    std::string text;            // the attribute key ("identifier" for the subject) or the string
  };
  Operand left, right;            // kEqual, kNotEqual; kHas uses left
  std::vector<std::string> list;  // kIn, kNotIn (sorted)
};

}  // namespace veil::channel

#endif  // VEIL_SIDECAR_CHANNEL_POLICY_EXPRESSION_H_
