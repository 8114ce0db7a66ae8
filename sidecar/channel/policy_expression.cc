#include "sidecar/channel/policy_expression.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/utf8.h"

namespace veil::channel {

using Node = PolicyExpression::Node;

class ExpressionParser {
 public:
  // `canonical`: `text` is another expression's canonical form, and errors say so.
  explicit ExpressionParser(absl::string_view text, bool canonical = false)
      : text_(text), canonical_(canonical) {}

  absl::StatusOr<PolicyExpression> Run() {
    if (text_.size() > kMaxExpressionBytes) {
      return Bad(absl::StrCat("the expression is ", text_.size(), " bytes; the most is ",
                              kMaxExpressionBytes));
    }
    if (!IsValidUtf8(text_)) return Bad("the expression is not valid UTF-8");
    Next();
    auto root = Or(0);
    if (!root.ok()) return root.status();
    if (token_.kind != Tok::kEnd) return Expected("the end of the expression");
    out_.root_ = root->node;
    out_.canonical_ = std::move(root->canonical);
    return std::move(out_);
  }

 private:
  enum class Tok {
    kEnd,
    kLParen,
    kRParen,
    kLBracket,
    kRBracket,
    kComma,
    kEq,
    kNe,
    kNot,
    kAnd,
    kOr,
    kString,
    kWord,
    kBad
  };
  struct Token {
    Tok kind = Tok::kEnd;
    std::string text;  // a word, or a string's value
    size_t at = 0;     // byte offset, for errors
  };
  struct Parsed {
    size_t node;
    std::string canonical;
  };

  absl::Status Bad(absl::string_view why) const {
    return ErrorWithReason(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("invalid policy expression: ", canonical_ ? "written out in full, " : "", why),
        reason::kInvalidTrustPolicy);
  }
  absl::Status Expected(absl::string_view what) const {
    std::string found;
    switch (token_.kind) {
      case Tok::kEnd:
        found = "the end";
        break;
      case Tok::kString:
        found = "a string";
        break;
      case Tok::kWord:
        found = QuoteInput(token_.text, 40);
        break;
      case Tok::kBad:
        found = token_.text;
        break;
      default:
        found = QuoteInput(text_.substr(token_.at, token_.text.size()), 40);
        break;
    }
    return Bad(absl::StrCat("at column ", token_.at + 1, ": expected ", what, ", found ", found));
  }

  static bool WordChar(char c) {
    return absl::ascii_isalnum(c) || c == '_' || c == '.' || c == '-';
  }

  void Next() {
    while (pos_ < text_.size() && absl::ascii_isspace(text_[pos_])) ++pos_;
    token_ = Token{.kind = Tok::kEnd, .text = "", .at = pos_};
    if (pos_ >= text_.size()) return;
    char c = text_[pos_];
    auto two = [&](char second) { return pos_ + 1 < text_.size() && text_[pos_ + 1] == second; };
    auto symbol = [&](Tok kind, size_t n) {
      token_.kind = kind;
      token_.text = std::string(text_.substr(pos_, n));
      pos_ += n;
    };
    switch (c) {
      case '(':
        return symbol(Tok::kLParen, 1);
      case ')':
        return symbol(Tok::kRParen, 1);
      case '[':
        return symbol(Tok::kLBracket, 1);
      case ']':
        return symbol(Tok::kRBracket, 1);
      case ',':
        return symbol(Tok::kComma, 1);
      case '=':
        if (two('=')) return symbol(Tok::kEq, 2);
        break;
      case '!':
        return two('=') ? symbol(Tok::kNe, 2) : symbol(Tok::kNot, 1);
      case '&':
        if (two('&')) return symbol(Tok::kAnd, 2);
        break;
      case '|':
        if (two('|')) return symbol(Tok::kOr, 2);
        break;
      case '"':
        return String();
      default:
        if (WordChar(c)) {
          size_t start = pos_;
          while (pos_ < text_.size() && WordChar(text_[pos_])) ++pos_;
          token_.kind = Tok::kWord;
          token_.text = std::string(text_.substr(start, pos_ - start));
          if (token_.text == "and") token_.kind = Tok::kAnd;
          if (token_.text == "or") token_.kind = Tok::kOr;
          if (token_.text == "not") token_.kind = Tok::kNot;
          return;
        }
    }
    token_.kind = Tok::kBad;
    token_.text = absl::StrCat("an unexpected character ", QuoteInput(text_.substr(pos_, 1)));
    pos_ = text_.size();
  }

  void String() {
    size_t start = pos_++;
    std::string value;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      if (text_[pos_] == '\\') {
        if (pos_ + 1 >= text_.size() || (text_[pos_ + 1] != '"' && text_[pos_ + 1] != '\\')) {
          token_ = {.kind = Tok::kBad, .text = "an escape other than \\\" or \\\\", .at = pos_};
          pos_ = text_.size();
          return;
        }
        ++pos_;
      }
      value.push_back(text_[pos_++]);
    }
    if (pos_ >= text_.size()) {
      token_ = {.kind = Tok::kBad, .text = "a string that does not end", .at = start};
      return;
    }
    ++pos_;  // the closing quote
    token_ = {.kind = Tok::kString, .text = std::move(value), .at = start};
  }

  absl::StatusOr<size_t> Add(Node node) {
    if (out_.nodes_.size() >= kMaxExpressionTerms) {
      return Bad(absl::StrCat("more than ", kMaxExpressionTerms, " terms"));
    }
    out_.nodes_.push_back(std::move(node));
    return out_.nodes_.size() - 1;
  }

  absl::StatusOr<Parsed> Group(Node::Kind kind, Tok op, absl::string_view word, int depth) {
    auto first = kind == Node::Kind::kOr ? And(depth) : Unary(depth);
    if (!first.ok() || token_.kind != op) return first;
    Node node{.kind = kind, .children = {first->node}, .left = {}, .right = {}, .list = {}};
    std::string canonical = "(" + first->canonical;
    while (token_.kind == op) {
      Next();
      auto next = kind == Node::Kind::kOr ? And(depth) : Unary(depth);
      if (!next.ok()) return next.status();
      node.children.push_back(next->node);
      absl::StrAppend(&canonical, " ", word, " ", next->canonical);
    }
    auto index = Add(std::move(node));
    if (!index.ok()) return index.status();
    return Parsed{*index, canonical + ")"};
  }
  absl::StatusOr<Parsed> Or(int depth) { return Group(Node::Kind::kOr, Tok::kOr, "or", depth); }
  absl::StatusOr<Parsed> And(int depth) { return Group(Node::Kind::kAnd, Tok::kAnd, "and", depth); }

  absl::StatusOr<Parsed> Unary(int depth) {
    if (depth >= kMaxExpressionDepth) {
      return Bad(absl::StrCat("nested more than ", kMaxExpressionDepth, " levels deep"));
    }
    if (token_.kind == Tok::kNot) {
      Next();
      auto inner = Unary(depth + 1);
      if (!inner.ok()) return inner.status();
      auto index = Add(Node{.kind = Node::Kind::kNot,
                            .children = {inner->node},
                            .left = {},
                            .right = {},
                            .list = {}});
      if (!index.ok()) return index.status();
      return Parsed{*index, "not " + inner->canonical};
    }
    return Primary(depth);
  }

  absl::StatusOr<Node::Operand> Operand() {
    Node::Operand operand;
    if (token_.kind == Tok::kString) {
      operand.text = token_.text;
    } else if (token_.kind == Tok::kWord && absl::StartsWith(token_.text, "subject.")) {
      operand.is_attribute = true;
      operand.text = token_.text.substr(8);
      if (operand.text != "identifier") {
        if (absl::Status s = identity::ValidateAttributeKey(operand.text); !s.ok()) {
          return Bad(absl::StrCat("at column ", token_.at + 1, ": ", s.message()));
        }
        out_.uses_attributes_ = true;
      }
    } else if (token_.kind == Tok::kWord && token_.text == "relay.name") {
      operand.is_attribute = operand.is_relay_name = true;
      operand.text = "name";
    } else {
      return Expected("subject.<attribute> or a string");
    }
    Next();
    return operand;
  }

  static std::string Show(const Node::Operand& operand) {
    if (operand.is_relay_name) return "relay.name";
    if (operand.is_attribute) return "subject." + operand.text;
    return Quoted(operand.text);
  }
  static std::string Quoted(absl::string_view text) {
    std::string out = "\"";
    for (char c : text) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    return out + "\"";
  }

  absl::StatusOr<Parsed> Primary(int depth) {
    if (token_.kind == Tok::kLParen) {
      Next();
      auto inner = Or(depth + 1);
      if (!inner.ok()) return inner.status();
      if (token_.kind != Tok::kRParen) return Expected("')'");
      Next();
      return inner;
    }
    if (token_.kind == Tok::kWord && (token_.text == "true" || token_.text == "false")) {
      bool value = token_.text == "true";
      Next();
      auto index = Add(Node{.kind = value ? Node::Kind::kTrue : Node::Kind::kFalse,
                            .children = {},
                            .left = {},
                            .right = {},
                            .list = {}});
      if (!index.ok()) return index.status();
      return Parsed{*index, value ? "true" : "false"};
    }
    if (token_.kind == Tok::kWord && token_.text == "has") {
      Next();
      if (token_.kind != Tok::kLParen) return Expected("'(' after has");
      Next();
      auto attribute = Operand();
      if (!attribute.ok()) return attribute.status();
      if (!attribute->is_attribute) return Bad("has() takes subject.<attribute>, not a string");
      if (token_.kind != Tok::kRParen) return Expected("')'");
      Next();
      std::string canonical = "has(" + Show(*attribute) + ")";
      auto index = Add(Node{.kind = Node::Kind::kHas,
                            .children = {},
                            .left = *std::move(attribute),
                            .right = {},
                            .list = {}});
      if (!index.ok()) return index.status();
      return Parsed{*index, canonical};
    }
    auto left = Operand();
    if (!left.ok()) return left.status();
    Node node{.kind = Node::Kind::kEqual,
              .children = {},
              .left = *std::move(left),
              .right = {},
              .list = {}};
    if (token_.kind == Tok::kEq || token_.kind == Tok::kNe) {
      node.kind = token_.kind == Tok::kEq ? Node::Kind::kEqual : Node::Kind::kNotEqual;
      Next();
      auto right = Operand();
      if (!right.ok()) return right.status();
      node.right = *std::move(right);
      if (!node.left.is_attribute && !node.right.is_attribute) {
        return Bad("a comparison of two strings: one side must be subject.<attribute>");
      }
      std::string canonical = absl::StrCat(
          Show(node.left), node.kind == Node::Kind::kEqual ? " == " : " != ", Show(node.right));
      auto index = Add(std::move(node));
      if (!index.ok()) return index.status();
      return Parsed{*index, canonical};
    }
    bool negated = false;
    if (token_.kind == Tok::kNot) {
      negated = true;
      Next();
    }
    if (token_.kind != Tok::kWord || token_.text != "in") {
      return Expected(negated ? "in" : "==, !=, in or not in");
    }
    if (!node.left.is_attribute) return Bad("the left of in must be subject.<attribute>");
    Next();
    if (token_.kind != Tok::kLBracket) return Expected("'[' to start a list");
    Next();
    while (token_.kind != Tok::kRBracket) {
      if (!node.list.empty()) {
        if (token_.kind != Tok::kComma) return Expected("',' or ']'");
        Next();
      }
      if (token_.kind != Tok::kString) return Expected("a string");
      if (node.list.size() >= kMaxExpressionList) {
        return Bad(absl::StrCat("a list of more than ", kMaxExpressionList, " strings"));
      }
      node.list.push_back(token_.text);
      Next();
    }
    Next();
    std::sort(node.list.begin(), node.list.end());
    node.list.erase(std::unique(node.list.begin(), node.list.end()), node.list.end());
    node.kind = negated ? Node::Kind::kNotIn : Node::Kind::kIn;
    std::vector<std::string> shown;
    for (const std::string& s : node.list) shown.push_back(Quoted(s));
    std::string canonical = absl::StrCat(Show(node.left), negated ? " not in [" : " in [",
                                         absl::StrJoin(shown, ", "), "]");
    auto index = Add(std::move(node));
    if (!index.ok()) return index.status();
    return Parsed{*index, canonical};
  }

  absl::string_view text_;
  const bool canonical_;
  size_t pos_ = 0;
  Token token_;
  PolicyExpression out_;
};

absl::StatusOr<PolicyExpression> PolicyExpression::Parse(absl::string_view text) {
  absl::StatusOr<PolicyExpression> parsed = ExpressionParser(text).Run();
  if (!parsed.ok() || parsed->canonical() == text) return parsed;
  // The canonical form is what listings show (and what a user copies from them), so it
  // must parse too; it spells `!` as `not ` and precedence as parentheses, so it can be longer
  // and deeper than the text.
  absl::StatusOr<PolicyExpression> again =
      ExpressionParser(parsed->canonical(), /*canonical=*/true).Run();
  if (!again.ok()) return again.status();
  return parsed;
}

namespace {

// The operand's value for `peer`, or null when it is an attribute the peer does not have.
const std::string* ValueOf(const Node::Operand& operand, const PeerView& peer,
                           std::string& identifier) {
  if (!operand.is_attribute) return &operand.text;
  if (operand.is_relay_name) return peer.relay_name;
  if (operand.text == "identifier") {
    identifier.assign(peer.identifier.data(), peer.identifier.size());
    return &identifier;
  }
  if (peer.attributes == nullptr) return nullptr;
  auto it = peer.attributes->find(operand.text);
  return it == peer.attributes->end() ? nullptr : &it->second;
}

bool EvaluateNode(const std::vector<Node>& nodes, size_t index, const PeerView& peer) {
  const Node& node = nodes[index];
  std::string left_id, right_id;
  switch (node.kind) {
    case Node::Kind::kTrue:
      return true;
    case Node::Kind::kFalse:
      return false;
    case Node::Kind::kNot:
      return !EvaluateNode(nodes, node.children[0], peer);
    case Node::Kind::kAnd:
      return std::all_of(node.children.begin(), node.children.end(),
                         [&](size_t child) { return EvaluateNode(nodes, child, peer); });
    case Node::Kind::kOr:
      return std::any_of(node.children.begin(), node.children.end(),
                         [&](size_t child) { return EvaluateNode(nodes, child, peer); });
    case Node::Kind::kHas:
      return ValueOf(node.left, peer, left_id) != nullptr;
    case Node::Kind::kEqual:
    case Node::Kind::kNotEqual: {
      const std::string* a = ValueOf(node.left, peer, left_id);
      const std::string* b = ValueOf(node.right, peer, right_id);
      if (a == nullptr || b == nullptr) return false;
      return (*a == *b) == (node.kind == Node::Kind::kEqual);
    }
    case Node::Kind::kIn:
    case Node::Kind::kNotIn: {
      const std::string* a = ValueOf(node.left, peer, left_id);
      if (a == nullptr) return false;
      bool found = std::binary_search(node.list.begin(), node.list.end(), *a);
      return found == (node.kind == Node::Kind::kIn);
    }
  }
  return false;
}

}  // namespace

bool PolicyExpression::Evaluate(const PeerView& peer) const {
  return EvaluateNode(nodes_, root_, peer);
}

}  // namespace veil::channel
