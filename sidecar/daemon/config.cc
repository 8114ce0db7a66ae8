#include "sidecar/daemon/config.h"

#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "sidecar/api/portal_service.h"
#include "sidecar/api/relay_service.h"
#include "sidecar/api/secure_channel_service.h"
#include "sidecar/authority/memberships.h"
#include "sidecar/channel/policy_expression.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/identity/identifier.h"
#include "sidecar/identity/identity.h"
#include "sidecar/relay/relay_registry.h"
#include "spdlog/spdlog.h"
#include "yaml-cpp/yaml.h"

namespace veil::daemon {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr int kMaxDepth = 64;

// Turns YAML nodes into fields of a message, remembering where it is for errors.
class YamlReader {
 public:
  // `marks`, when given, gets where each field was written ("file:line:col" by field path).
  explicit YamlReader(absl::string_view source, ConfigMarks* marks = nullptr)
      : source_(source), marks_(marks) {}

  absl::Status ReadMessage(const YAML::Node& node, const std::string& path, Message& out,
                           int depth) {
    Remember(node, path);
    if (depth > kMaxDepth) return Error(node, path, "nested too deeply");
    if (node.IsNull()) return absl::OkStatus();  // "key:" with nothing: an empty message
    if (!node.IsMap()) {
      return Error(node, path,
                   absl::StrCat("expected a map of ", out.GetDescriptor()->name(),
                                " fields, found ", KindOf(node)));
    }
    const auto* descriptor = out.GetDescriptor();
    const Reflection* reflection = out.GetReflection();
    std::set<const FieldDescriptor*> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (!it->first.IsScalar()) return Error(it->first, path, "a key must be a plain name");
      const std::string& key = it->first.Scalar();
      const FieldDescriptor* field = descriptor->FindFieldByName(key);
      if (field == nullptr) field = descriptor->FindFieldByCamelcaseName(key);
      std::string field_path = path.empty() ? key : absl::StrCat(path, ".", key);
      if (field == nullptr) {
        std::vector<std::string> known;
        for (int i = 0; i < descriptor->field_count(); ++i) {
          known.push_back(descriptor->field(i)->name());
        }
        return Error(it->first, path,
                     absl::StrCat("unknown field \"", key, "\" (", descriptor->name(),
                                  " has: ", absl::StrJoin(known, ", "), ")"));
      }
      if (!seen.insert(field).second) {
        return Error(it->first, path, absl::StrCat("field \"", key, "\" is given twice"));
      }
      if (const auto* oneof = field->containing_oneof();
          oneof != nullptr && reflection->HasOneof(out, oneof)) {
        return Error(it->first, path,
                     absl::StrCat("\"", key, "\" and \"",
                                  reflection->GetOneofFieldDescriptor(out, oneof)->name(),
                                  "\" exclude each other: set only one of ", oneof->name()));
      }
      RETURN_IF_ERROR(ReadField(it->second, field_path, out, field, depth));
    }
    return absl::OkStatus();
  }

  absl::Status Error(const YAML::Node& node, const std::string& path, absl::string_view what) {
    return Error(node.Mark(), path, what);
  }
  absl::Status Error(const YAML::Mark& mark, const std::string& path, absl::string_view what) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           absl::StrCat(Where(mark), ": ", path.empty() ? "" : path + ": ", what),
                           reason::kInvalidConfig);
  }

 private:
  std::string Where(const YAML::Mark& mark) const {
    std::string where(source_);
    if (mark.line >= 0) absl::StrAppend(&where, ":", mark.line + 1, ":", mark.column + 1);
    return where;
  }
  void Remember(const YAML::Node& node, const std::string& path) {
    if (marks_ != nullptr && !path.empty()) (*marks_)[path] = Where(node.Mark());
  }
  static std::string KindOf(const YAML::Node& node) {
    if (node.IsMap()) return "a map";
    if (node.IsSequence()) return "a list";
    if (node.IsScalar()) return absl::StrCat("\"", node.Scalar(), "\"");
    return "nothing";
  }

  absl::Status ReadField(const YAML::Node& node, const std::string& path, Message& out,
                         const FieldDescriptor* field, int depth) {
    if (!field->is_repeated()) return ReadValue(node, path, out, field, depth);
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsSequence()) {
      return Error(node, path, absl::StrCat("expected a list, found ", KindOf(node)));
    }
    for (size_t i = 0; i < node.size(); ++i) {
      RETURN_IF_ERROR(ReadValue(node[i], absl::StrCat(path, "[", i, "]"), out, field, depth));
    }
    return absl::OkStatus();
  }

  // One value of `field` (appended when repeated).
  absl::Status ReadValue(const YAML::Node& node, const std::string& path, Message& out,
                         const FieldDescriptor* field, int depth) {
    Remember(node, path);
    const Reflection* r = out.GetReflection();
    const bool rep = field->is_repeated();
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      Message* sub = rep ? r->AddMessage(&out, field) : r->MutableMessage(&out, field);
      return ReadMessage(node, path, *sub, depth + 1);
    }
    if (!node.IsScalar()) {
      return Error(node, path, absl::StrCat("expected a single value, found ", KindOf(node)));
    }
    const std::string& text = node.Scalar();
    auto integer = [&](auto min, auto max, auto& value) -> absl::Status {
      using T = std::decay_t<decltype(value)>;
      bool ok;
      if constexpr (std::is_signed_v<T>) {
        int64_t v;
        ok = absl::SimpleAtoi(text, &v) && v >= static_cast<int64_t>(min) &&
             v <= static_cast<int64_t>(max);
        value = static_cast<T>(v);
      } else {
        uint64_t v;
        ok = absl::SimpleAtoi(text, &v) && v <= static_cast<uint64_t>(max);
        value = static_cast<T>(v);
      }
      if (!ok) {
        return Error(
            node, path,
            absl::StrCat("\"", text, "\" is not a whole number from ", +min, " to ", +max));
      }
      return absl::OkStatus();
    };
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING: {
        std::string value = text;
        if (field->type() == FieldDescriptor::TYPE_BYTES && !absl::Base64Unescape(text, &value) &&
            !absl::WebSafeBase64Unescape(text, &value)) {
          return Error(node, path, "expected base64");
        }
        rep ? r->AddString(&out, field, std::move(value))
            : r->SetString(&out, field, std::move(value));
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_BOOL: {
        bool value;
        if (text == "true" || text == "True" || text == "TRUE") {
          value = true;
        } else if (text == "false" || text == "False" || text == "FALSE") {
          value = false;
        } else {
          return Error(node, path, absl::StrCat("expected true or false, found \"", text, "\""));
        }
        rep ? r->AddBool(&out, field, value) : r->SetBool(&out, field, value);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_INT32: {
        int32_t v;
        RETURN_IF_ERROR(
            integer(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), v));
        rep ? r->AddInt32(&out, field, v) : r->SetInt32(&out, field, v);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_INT64: {
        int64_t v;
        RETURN_IF_ERROR(
            integer(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), v));
        rep ? r->AddInt64(&out, field, v) : r->SetInt64(&out, field, v);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_UINT32: {
        uint32_t v;
        RETURN_IF_ERROR(integer(0u, std::numeric_limits<uint32_t>::max(), v));
        rep ? r->AddUInt32(&out, field, v) : r->SetUInt32(&out, field, v);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_UINT64: {
        uint64_t v;
        RETURN_IF_ERROR(integer(uint64_t{0}, std::numeric_limits<uint64_t>::max(), v));
        rep ? r->AddUInt64(&out, field, v) : r->SetUInt64(&out, field, v);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_DOUBLE:
      case FieldDescriptor::CPPTYPE_FLOAT: {
        double v;
        if (!absl::SimpleAtod(text, &v)) {
          return Error(node, path, absl::StrCat("\"", text, "\" is not a number"));
        }
        if (field->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT) {
          rep ? r->AddFloat(&out, field, static_cast<float>(v))
              : r->SetFloat(&out, field, static_cast<float>(v));
        } else {
          rep ? r->AddDouble(&out, field, v) : r->SetDouble(&out, field, v);
        }
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_ENUM: {
        const auto* value = field->enum_type()->FindValueByName(text);
        if (value == nullptr) {
          return Error(node, path,
                       absl::StrCat("\"", text, "\" is not a ", field->enum_type()->name()));
        }
        rep ? r->AddEnum(&out, field, value) : r->SetEnum(&out, field, value);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
    return Error(node, path, "unsupported field type");
  }

  const absl::string_view source_;
  ConfigMarks* const marks_;
};

}  // namespace

absl::Status YamlToMessage(absl::string_view text, absl::string_view source, Message& out,
                           ConfigMarks* marks) {
  YamlReader reader(source, marks);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return reader.Error(e.mark, "", absl::StrCat("not valid YAML: ", e.msg));
  }
  try {
    return reader.ReadMessage(root, "", out, 0);
  } catch (const YAML::Exception& e) {  // e.g. an alias cycle or a malformed node
    return reader.Error(e.mark, "", e.msg);
  }
}

namespace {

// "file:line:col: field: message": the field's place in the file (its nearest written
// ancestor's, for one the file leaves out).
absl::Status Annotate(const absl::Status& status, const ConfigMarks& marks,
                      const std::string& field) {
  if (status.ok()) return status;
  std::string place;
  for (std::string path = field; !path.empty();) {
    if (auto it = marks.find(path); it != marks.end()) {
      place = it->second;
      break;
    }
    size_t cut = path.find_last_of(".[");
    path = cut == std::string::npos ? "" : path.substr(0, cut);
  }
  return ErrorWithReason(
      status.code(),
      absl::StrCat(place.empty() ? "config" : place, ": ", field, ": ", status.message()),
      ReasonOf(status));
}

}  // namespace

namespace {

absl::Status Invalid(absl::string_view what, absl::string_view reason = reason::kInvalidConfig) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument, what, reason);
}

// The shape of a trust policy; what it refers to (files, imported identities) is checked when
// it is applied.
absl::Status ValidateTrustPolicy(const v1::TrustPolicy& policy, int depth) {
  if (depth > 8) return Invalid("trust policies nest at most 8 deep", reason::kInvalidTrustPolicy);
  auto all = [&](const v1::TrustPolicy::Policies& parts) -> absl::Status {
    if (parts.policies().empty()) {
      return Invalid("any_of and all_of need at least one policy", reason::kInvalidTrustPolicy);
    }
    for (const auto& part : parts.policies()) RETURN_IF_ERROR(ValidateTrustPolicy(part, depth + 1));
    return absl::OkStatus();
  };
  switch (policy.policy_case()) {
    case v1::TrustPolicy::kTrustEveryone:
      if (!policy.trust_everyone()) return Invalid("trust_everyone must be true when set");
      return absl::OkStatus();
    case v1::TrustPolicy::kTrustIdentifier:
      return identity::ValidateIdentifier(policy.trust_identifier());
    case v1::TrustPolicy::kTrustIdentifiers:
      for (const auto& id : policy.trust_identifiers().identifiers()) {
        RETURN_IF_ERROR(identity::ValidateIdentifier(id));
      }
      return absl::OkStatus();
    case v1::TrustPolicy::kTrustIdentifiersFile:
      if (policy.trust_identifiers_file().empty())
        return Invalid("trust_identifiers_file is empty");
      return absl::OkStatus();
    case v1::TrustPolicy::kTrustImported:
      if (!policy.trust_imported()) return Invalid("trust_imported must be true when set");
      return absl::OkStatus();
    case v1::TrustPolicy::kAnyOf:
      return all(policy.any_of());
    case v1::TrustPolicy::kAllOf:
      return all(policy.all_of());
    case v1::TrustPolicy::kExpression:
      return channel::PolicyExpression::Parse(policy.expression()).status();
    case v1::TrustPolicy::POLICY_NOT_SET:
      break;
  }
  return Invalid(
      "a trust policy is required: set one of trust_everyone, trust_identifier, "
      "trust_identifiers, trust_identifiers_file, trust_imported, any_of, all_of, expression",
      reason::kInvalidTrustPolicy);
}

absl::Status ValidateEntries(const config::v1::Config& config, const ConfigMarks& marks) {
  auto at = [&marks](const absl::Status& status, const std::string& field) {
    return Annotate(status, marks, field);
  };
  std::set<std::string> names;
  for (int i = 0; i < config.identities_size(); ++i) {
    const std::string& name = config.identities(i).name();
    std::string where = absl::StrCat("identities[", i, "].name");
    RETURN_IF_ERROR(at(identity::ValidateIdentityName(name), where));
    if (!names.insert(name).second) {
      return at(Invalid(absl::StrCat("identity \"", name, "\" is listed twice")), where);
    }
  }
  for (int i = 0; i < config.trusted_identities_size(); ++i) {
    const auto& id = config.trusted_identities(i).public_identity();
    std::string where = absl::StrCat("trusted_identities[", i, "].public_identity");
    RETURN_IF_ERROR(at(identity::ValidateIdentifier(id.identifier()), where + ".identifier"));
    if (id.public_key().size() != 32) {
      return at(Invalid(absl::StrCat("a public key is 32 bytes, not ", id.public_key().size()),
                        reason::kInvalidPublicKey),
                where + ".public_key");
    }
    if (identity::IdentifierOf(id.public_key()) != id.identifier()) {
      return at(Invalid(absl::StrCat("identifier ", id.identifier(),
                                     " is not the one derived from the public key (",
                                     identity::IdentifierOf(id.public_key()), ")"),
                        reason::kIdentifierMismatch),
                where + ".identifier");
    }
  }
  for (int i = 0; i < config.trusted_authorities_size(); ++i) {
    RETURN_IF_ERROR(at(authority::ParseAuthorityEntry(config.trusted_authorities(i)).status(),
                       absl::StrCat("trusted_authorities[", i, "]")));
  }
  for (int i = 0; i < config.enrollments_size(); ++i) {
    const auto& entry = config.enrollments(i);
    std::string where = absl::StrCat("enrollments[", i, "]");
    if (entry.token_file().empty()) {
      return at(Invalid("an enrollment needs token_file: the file holding the ticket's token"),
                where + ".token_file");
    }
    if (!entry.identity().empty()) {
      RETURN_IF_ERROR(at(identity::ValidateIdentityName(entry.identity()), where + ".identity"));
    }
  }
  std::set<std::string> addresses;
  for (int i = 0; i < config.listeners_size(); ++i) {
    const auto& entry = config.listeners(i);
    std::string where = absl::StrCat("listeners[", i, "]");
    RETURN_IF_ERROR(at(core::ValidateAppAddress(entry.address()), where + ".address"));
    if (!addresses.insert(entry.address()).second) {
      return at(Invalid(absl::StrCat("listener \"", entry.address(), "\" is listed twice")),
                where + ".address");
    }
    if (!entry.identity().empty()) {
      RETURN_IF_ERROR(at(identity::ValidateIdentityName(entry.identity()), where + ".identity"));
    }
    RETURN_IF_ERROR(at(ValidateTrustPolicy(entry.trust_policy(), 0), where + ".trust_policy"));
  }
  std::set<std::string> relay_names;
  for (int i = 0; i < config.relays_size(); ++i) {
    const auto& entry = config.relays(i);
    std::string where = absl::StrCat("relays[", i, "]");
    if (entry.hub_route().empty()) {
      return at(Invalid("hub_route is required", reason::kInvalidRoute), where + ".hub_route");
    }
    RETURN_IF_ERROR(at(core::Route::Parse(entry.hub_route()).status(), where + ".hub_route"));
    if (!entry.name().empty()) {
      RETURN_IF_ERROR(at(relay::ValidateRelayName(entry.name()), where + ".name"));
      if (!relay_names.insert(entry.name()).second) {
        return at(Invalid(absl::StrCat("relay \"", entry.name(), "\" is listed twice")),
                  where + ".name");
      }
    }
    if (!entry.identity().empty()) {
      RETURN_IF_ERROR(at(identity::ValidateIdentityName(entry.identity()), where + ".identity"));
    }
    if (entry.has_hub_trust_policy()) {
      RETURN_IF_ERROR(
          at(ValidateTrustPolicy(entry.hub_trust_policy(), 0), where + ".hub_trust_policy"));
    }
  }
  // Outlets share the address space of listeners (both are workers of this node).
  for (int i = 0; i < config.outlets_size(); ++i) {
    const auto& entry = config.outlets(i);
    std::string where = absl::StrCat("outlets[", i, "]");
    RETURN_IF_ERROR(at(core::ValidateAppAddress(entry.name()), where + ".name"));
    if (!addresses.insert(entry.name()).second) {
      return at(Invalid(absl::StrCat("the address \"", entry.name(), "\" is listed twice")),
                where + ".name");
    }
    RETURN_IF_ERROR(at(portal::ParseOutletTarget(entry.target()).status(), where + ".target"));
    RETURN_IF_ERROR(at(ValidateTrustPolicy(entry.trust_policy(), 0), where + ".trust_policy"));
  }
  std::set<std::string> inlet_addresses;
  for (int i = 0; i < config.inlets_size(); ++i) {
    const auto& entry = config.inlets(i);
    std::string where = absl::StrCat("inlets[", i, "]");
    auto listen = portal::ParseInletAddress(entry.listen_address(), entry.allow_public());
    RETURN_IF_ERROR(at(listen.status(), where + ".listen_address"));
    if (listen->port() != 0 && !inlet_addresses.insert(entry.listen_address()).second) {
      return at(Invalid(absl::StrCat("inlet \"", entry.listen_address(), "\" is listed twice")),
                where + ".listen_address");
    }
    if (entry.route().empty()) {
      return at(Invalid("route is required", reason::kInvalidRoute), where + ".route");
    }
    RETURN_IF_ERROR(at(core::Route::Parse(entry.route()).status(), where + ".route"));
    RETURN_IF_ERROR(at(core::ValidateAppAddress(entry.outlet()), where + ".outlet"));
    if (!entry.identity().empty()) {
      RETURN_IF_ERROR(at(identity::ValidateIdentityName(entry.identity()), where + ".identity"));
    }
    if (entry.has_trust_policy()) {
      RETURN_IF_ERROR(at(ValidateTrustPolicy(entry.trust_policy(), 0), where + ".trust_policy"));
    }
  }
  return absl::OkStatus();
}

// The field of a listener or relay entry that a failure to apply it is about.
std::string FieldOf(const absl::Status& status, const std::string& entry) {
  const std::string why = ReasonOf(status);
  if (why == reason::kIdentityNotFound) return entry + ".identity";
  if (why == reason::kInvalidTrustPolicy || why == reason::kUntrustedIdentity ||
      status.code() == absl::StatusCode::kFailedPrecondition) {
    return entry + (absl::StartsWith(entry, "relays") ? ".hub_trust_policy" : ".trust_policy");
  }
  const bool relay = absl::StartsWith(entry, "relays"), outlet = absl::StartsWith(entry, "outlets"),
             inlet = absl::StartsWith(entry, "inlets");
  if (why == reason::kInvalidRoute) return entry + (inlet ? ".route" : ".hub_route");
  if (why == reason::kInvalidTarget) return entry + ".target";
  if (inlet) return entry + ".listen_address";
  return entry + (relay || outlet ? ".name" : ".address");
}

}  // namespace

absl::StatusOr<LoadedConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return ErrorWithReason(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat("cannot read the config file ", path, ": ", std::strerror(errno)),
        reason::kInvalidConfig);
  }
  std::string text(kMaxConfigBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxConfigBytes) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                           absl::StrCat("the config file ", path, " is larger than 1 MiB"),
                           reason::kInvalidConfig);
  }
  LoadedConfig loaded;
  RETURN_IF_ERROR(YamlToMessage(text, path, loaded.config, &loaded.marks));
  RETURN_IF_ERROR(ValidateEntries(loaded.config, loaded.marks));
  return loaded;
}

absl::Status CheckIdentitiesKnown(const LoadedConfig& loaded, const std::set<std::string>& known,
                                  absl::string_view elsewhere) {
  std::set<std::string> names = known;
  names.insert(identity::kDefaultIdentity);
  for (const auto& entry : loaded.config.identities()) names.insert(entry.name());
  auto check = [&](const std::string& name, const std::string& field) -> absl::Status {
    if (name.empty() || names.count(name)) return absl::OkStatus();
    return Annotate(ErrorWithReason(absl::StatusCode::kNotFound,
                                    absl::StrCat("no identity named \"", name,
                                                 "\" (not in this file, ", elsewhere, ")"),
                                    reason::kIdentityNotFound),
                    loaded.marks, field);
  };
  for (int i = 0; i < loaded.config.listeners_size(); ++i) {
    RETURN_IF_ERROR(
        check(loaded.config.listeners(i).identity(), absl::StrCat("listeners[", i, "].identity")));
  }
  for (int i = 0; i < loaded.config.relays_size(); ++i) {
    RETURN_IF_ERROR(
        check(loaded.config.relays(i).identity(), absl::StrCat("relays[", i, "].identity")));
  }
  for (int i = 0; i < loaded.config.inlets_size(); ++i) {
    RETURN_IF_ERROR(
        check(loaded.config.inlets(i).identity(), absl::StrCat("inlets[", i, "].identity")));
  }
  for (int i = 0; i < loaded.config.enrollments_size(); ++i) {
    RETURN_IF_ERROR(check(loaded.config.enrollments(i).identity(),
                          absl::StrCat("enrollments[", i, "].identity")));
  }
  return absl::OkStatus();
}

absl::Status ApplyConfig(const LoadedConfig& loaded, identity::IdentityStore& identities,
                         channel::SecureChannelManager& channels, relay::RelayClients& relays,
                         portal::PortalManager& portals) {
  const config::v1::Config& config = loaded.config;
  const ConfigMarks& marks = loaded.marks;
  RETURN_IF_ERROR(ValidateEntries(config, marks));
  for (int i = 0; i < config.identities_size(); ++i) {
    const auto& entry = config.identities(i);
    auto id = identities.Ensure(entry.name());
    RETURN_IF_ERROR(Annotate(id.status(), marks, absl::StrCat("identities[", i, "].name")));
    spdlog::info("identity {}: {}", entry.name(), (*id)->identifier());
  }
  for (int i = 0; i < config.trusted_identities_size(); ++i) {
    const auto& entry = config.trusted_identities(i);
    auto trusted = identities.ImportTrusted(entry.public_identity().identifier(),
                                            entry.public_identity().public_key(), entry.label());
    RETURN_IF_ERROR(Annotate(trusted.status(), marks,
                             absl::StrCat("trusted_identities[", i, "].public_identity")));
  }
  for (int i = 0; i < config.listeners_size(); ++i) {
    std::string where = absl::StrCat("listeners[", i, "]");
    absl::Status created =
        api::CreateListenerFrom(config.listeners(i), identities, channels).status();
    RETURN_IF_ERROR(Annotate(created, marks, FieldOf(created, where)));
  }
  for (int i = 0; i < config.relays_size(); ++i) {
    const auto& entry = config.relays(i);
    std::string where = absl::StrCat("relays[", i, "]");
    auto args = api::ReadRelayRequest(entry, identities);
    RETURN_IF_ERROR(Annotate(args.status(), marks, FieldOf(args.status(), where)));
    absl::Status started =
        relays.Start(args->hub_route, args->name, args->identity, std::move(args->hub_policy));
    RETURN_IF_ERROR(Annotate(started, marks, FieldOf(started, where)));
    spdlog::info("relay {} on hub {}: registering",
                 entry.name().empty() ? "(hub-assigned)" : entry.name(), entry.hub_route());
  }
  for (int i = 0; i < config.outlets_size(); ++i) {
    std::string where = absl::StrCat("outlets[", i, "]");
    absl::Status created = api::CreateOutletFrom(config.outlets(i), identities, portals).status();
    RETURN_IF_ERROR(Annotate(created, marks, FieldOf(created, where)));
  }
  for (int i = 0; i < config.inlets_size(); ++i) {
    std::string where = absl::StrCat("inlets[", i, "]");
    absl::Status created = api::CreateInletFrom(config.inlets(i), identities, portals).status();
    RETURN_IF_ERROR(Annotate(created, marks, FieldOf(created, where)));
  }
  return absl::OkStatus();
}

}  // namespace veil::daemon
