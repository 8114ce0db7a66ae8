// veil: the command-line client of a veil sidecar's API, for people and scripts.
// `veil --help` and `veil COMMAND --help` document everything; docs/cli.md too.
//
// Exit codes (also in --help): 0 done; 1 failed (other); 2 bad usage or invalid argument;
// 3 not found; 4 already exists; 5 refused (permission / trust); 6 failed precondition;
// 7 the sidecar (or a peer) is unreachable; 8 deadline exceeded; 9 resource exhausted.
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/escaping.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "sidecar/common/version.h"
#include "veil/v1/authority.grpc.pb.h"
#include "veil/v1/identity.grpc.pb.h"
#include "veil/v1/messaging.grpc.pb.h"
#include "veil/v1/node.grpc.pb.h"
#include "veil/v1/portal.grpc.pb.h"
#include "veil/v1/relay.grpc.pb.h"
#include "veil/v1/secure_channel.grpc.pb.h"
#include "veil_sdk.h"

namespace veil::cli {
namespace {

using google::protobuf::Message;

enum ExitCode {
  kOk = 0,
  kFailed = 1,
  kUsage = 2,
  kNotFound = 3,
  kExists = 4,
  kRefused = 5,
  kPrecondition = 6,
  kUnavailable = 7,
  kDeadline = 8,
  kExhausted = 9,
};

constexpr char kExitCodesHelp[] =
    "Exit codes: 0 done, 1 failed, 2 bad usage or invalid argument, 3 not found, 4 already "
    "exists, 5 refused (permission or trust), 6 failed precondition, 7 sidecar or peer "
    "unreachable, 8 deadline exceeded, 9 resource exhausted.";

struct Globals {
  std::string api;
  bool json = false;
  double timeout_seconds = 30;
};

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK:
      return "OK";
    case grpc::CANCELLED:
      return "CANCELLED";
    case grpc::UNKNOWN:
      return "UNKNOWN";
    case grpc::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::ABORTED:
      return "ABORTED";
    case grpc::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::INTERNAL:
      return "INTERNAL";
    case grpc::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

int ExitCodeOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK:
      return kOk;
    case grpc::INVALID_ARGUMENT:
    case grpc::OUT_OF_RANGE:
      return kUsage;
    case grpc::NOT_FOUND:
      return kNotFound;
    case grpc::ALREADY_EXISTS:
      return kExists;
    case grpc::PERMISSION_DENIED:
    case grpc::UNAUTHENTICATED:
      return kRefused;
    case grpc::FAILED_PRECONDITION:
      return kPrecondition;
    case grpc::UNAVAILABLE:
      return kUnavailable;
    case grpc::DEADLINE_EXCEEDED:
      return kDeadline;
    case grpc::RESOURCE_EXHAUSTED:
      return kExhausted;
    default:
      return kFailed;
  }
}

std::string JsonEscape(absl::string_view text) {
  std::string out;
  for (unsigned char ch : text) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
      out += buf;
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out;
}

std::string ToJson(const Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

// A table for people: a header row and aligned columns.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print() const {
    if (rows_.size() == 1) {
      std::cout << "(none)\n";
      return;
    }
    std::vector<size_t> width(rows_[0].size(), 0);
    for (const auto& row : rows_) {
      for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    }
    for (const auto& row : rows_) {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
      }
      std::cout << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// Key: value lines for one resource.
void PrintFields(const std::vector<std::pair<std::string, std::string>>& fields) {
  size_t width = 0;
  for (const auto& [k, v] : fields) width = std::max(width, k.size());
  for (const auto& [k, v] : fields) {
    std::cout << k << ":" << std::string(width - k.size() + 1, ' ') << (v.empty() ? "-" : v)
              << "\n";
  }
}

class Client {
 public:
  explicit Client(const Globals& g) : g_(g) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
    channel_ = grpc::CreateCustomChannel(g.api, grpc::InsecureChannelCredentials(), args);
  }
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::milliseconds(static_cast<int64_t>(g_.timeout_seconds * 1000)));
    return context;
  }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const Globals& globals() const { return g_; }

  // Prints the failure (to stderr; as JSON with --json) and returns the exit code.
  int Fail(const grpc::Status& status, const std::string& what) const {
    std::string reason = sdk::ReasonOf(status);
    std::string message = status.error_message();
    if (status.error_code() == grpc::UNAVAILABLE && reason.empty()) {
      message = "cannot reach the veil sidecar at " + g_.api + " (" + message +
                "); is veild running? Set --api or $VEIL_API";
    }
    if (g_.json) {
      std::cerr << "{\"error\": {\"code\": \"" << CodeName(status.error_code())
                << "\", \"reason\": \"" << JsonEscape(reason) << "\", \"message\": \""
                << JsonEscape(message) << "\"}}\n";
    } else {
      std::cerr << "veil: " << what << ": " << message;
      if (!reason.empty())
        std::cerr << " [" << CodeName(status.error_code()) << ", " << reason << "]";
      else
        std::cerr << " [" << CodeName(status.error_code()) << "]";
      std::cerr << "\n";
    }
    return ExitCodeOf(status.error_code());
  }

  // Prints `message` as JSON (with --json) or runs `human`.
  int Show(const Message& message, const std::function<void()>& human) const {
    if (g_.json) {
      std::cout << ToJson(message);
    } else {
      human();
    }
    return kOk;
  }

 private:
  const Globals& g_;
  std::shared_ptr<grpc::Channel> channel_;
};

std::string Time(const google::protobuf::Timestamp& t) {
  return t.seconds() == 0 ? "" : google::protobuf::util::TimeUtil::ToString(t).substr(0, 19) + "Z";
}

// Trust policy flags shared by several commands.
struct TrustFlags {
  bool everyone = false;
  std::vector<std::string> identifiers;
  std::string file;
  bool imported = false;
  std::string allow;

  void Add(CLI::App* app, const std::string& what) {
    auto* group = app->add_option_group("trust", "Who " + what + " (pick one or combine)");
    group->add_flag("--trust-everyone", everyone, "Any identity (each message still says who)");
    group->add_option("--trust", identifiers, "This identifier (repeatable: any of them)")
        ->allow_extra_args(false);  // one identifier each: `--trust ID NAME` leaves NAME alone
    group->add_option("--trust-file", file, "Identifiers listed in this file, one per line");
    group->add_flag("--trust-imported", imported, "Identities imported with `veil identity trust`");
    group->add_option("--allow", allow,
                      "Identities this attribute policy admits, e.g. "
                      "'subject.role == \"db-client\"' (docs/credentials.md)");
  }
  bool Empty() const {
    return !everyone && identifiers.empty() && file.empty() && !imported && allow.empty();
  }
  v1::TrustPolicy Policy() const {
    std::vector<v1::TrustPolicy> parts;
    if (everyone) parts.emplace_back().set_trust_everyone(true);
    if (identifiers.size() == 1) parts.emplace_back().set_trust_identifier(identifiers[0]);
    if (identifiers.size() > 1) {
      auto* ids = parts.emplace_back().mutable_trust_identifiers();
      for (const auto& id : identifiers) ids->add_identifiers(id);
    }
    if (!file.empty()) parts.emplace_back().set_trust_identifiers_file(file);
    if (imported) parts.emplace_back().set_trust_imported(true);
    if (!allow.empty()) parts.emplace_back().set_expression(allow);
    if (parts.size() == 1) return parts[0];
    v1::TrustPolicy any;
    for (auto& p : parts) *any.mutable_any_of()->add_policies() = p;
    return any;
  }
};

const char* StateName(v1::SecureChannel::State s) {
  switch (s) {
    case v1::SecureChannel::HANDSHAKING:
      return "handshaking";
    case v1::SecureChannel::ESTABLISHED:
      return "established";
    case v1::SecureChannel::CLOSED:
      return "closed";
    default:
      return "unknown";
  }
}

const char* StateName(v1::Relay::State s) {
  switch (s) {
    case v1::Relay::CONNECTING:
      return "connecting";
    case v1::Relay::UP:
      return "up";
    case v1::Relay::RECONNECTING:
      return "reconnecting";
    case v1::Relay::FAILED:
      return "failed";
    default:
      return "unknown";
  }
}

void PrintChannel(const v1::SecureChannel& c) {
  PrintFields({{"address", c.address()},
               {"route", c.route()},
               {"role", c.role() == v1::SecureChannel::INITIATOR ? "initiator" : "responder"},
               {"state", StateName(c.state())},
               {"identity", c.identity()},
               {"local identifier", c.local_identifier()},
               {"remote identifier", c.remote_identifier()},
               {"remote route", c.remote_route()},
               {"listener", c.listener()},
               {"trust policy", c.trust_policy()},
               {"messages sent", std::to_string(c.messages_sent())},
               {"messages received", std::to_string(c.messages_received())},
               {"decrypt failures", std::to_string(c.decrypt_failures())},
               {"replays rejected", std::to_string(c.replays_rejected())}});
}

void PrintRelay(const v1::Relay& r) {
  PrintFields({{"name", r.name()},
               {"state", StateName(r.state())},
               {"route", r.route()},
               {"hub route", r.hub_route()},
               {"hub identifier", r.hub_identifier()},
               {"identity", r.identity()},
               {"registrations", std::to_string(r.registrations())},
               {"last error", r.last_error()}});
}

void PrintIdentity(const v1::Identity& id) {
  std::vector<std::pair<std::string, std::string>> fields = {
      {"name", id.name()},
      {"identifier", id.public_identity().identifier()},
      {"public key", absl::Base64Escape(id.public_identity().public_key())},
      {"created", Time(id.create_time())}};
  if (id.key_changes() > 0) {
    fields.push_back({"current key", absl::Base64Escape(id.current_public_key())});
    fields.push_back({"key changes", absl::StrCat(id.key_changes())});
    fields.push_back({"rotated", Time(id.rotate_time())});
  }
  PrintFields(fields);
}

// Reads all of stdin.
std::string ReadStdin() {
  std::ostringstream out;
  out << std::cin.rdbuf();
  return out.str();
}

// What the parsed command line asks for, run once parsing is done; each subcommand's Add*
// below sets it from its callback. Flag values live in a struct of the subcommand's own, shared
// by the options that fill it and the action that reads it.
using Action = std::function<int(Client&)>;

class Commands {
 public:
  explicit Commands(CLI::App& app) : app_(app) {}
  CLI::App& app() { return app_; }
  // Runs `f` when `cmd` is the subcommand given.
  void On(CLI::App* cmd, Action f) {
    cmd->callback([this, f = std::move(f)] { action_ = f; });
  }
  int Run(Client& client) const { return action_ ? action_(client) : static_cast<int>(kUsage); }

 private:
  CLI::App& app_;
  Action action_;
};

void AddStatus(Commands& commands) {
  auto* status = commands.app().add_subcommand(
      "status", "The node: version, API, health port, transports, counts");
  commands.On(status, [](Client& c) {
    auto node_stub = v1::NodeService::NewStub(c.channel());
    v1::Node node;
    grpc::Status s = node_stub->GetNode(c.Context().get(), {}, &node);
    if (!s.ok()) return c.Fail(s, "cannot get the node's status");
    v1::ListSecureChannelsResponse channels;
    v1::ListRelaysResponse relays;
    v1::ListSecureChannelListenersResponse listeners;
    (void)v1::SecureChannelService::NewStub(c.channel())
        ->ListSecureChannels(c.Context().get(), {}, &channels);
    (void)v1::SecureChannelService::NewStub(c.channel())
        ->ListSecureChannelListeners(c.Context().get(), {}, &listeners);
    (void)v1::RelayService::NewStub(c.channel())->ListRelays(c.Context().get(), {}, &relays);
    v1::ListHostedRelaysResponse hosted;  // a hub's: the relays others keep on it
    if (node.hub()) {
      (void)v1::RelayService::NewStub(c.channel())
          ->ListHostedRelays(c.Context().get(), {}, &hosted);
    }
    return c.Show(node, [&] {
      // Every transport's listeners, as the route hops other nodes use.
      std::string transports;
      for (const auto& l : node.listeners()) {
        transports += (transports.empty() ? "" : ", ") + l.route();
      }
      std::map<std::string, int> by_transport;
      for (const auto& c : node.connections()) ++by_transport[c.transport()];
      std::string connections = std::to_string(node.connections_size());
      if (!by_transport.empty()) {
        std::string parts;
        for (const auto& [transport, n] : by_transport) {
          parts += (parts.empty() ? "" : ", ") + std::to_string(n) + " " + transport;
        }
        connections += " (" + parts + ")";
      }
      size_t up = 0;
      for (const auto& r : relays.relays()) up += r.state() == v1::Relay::UP;
      PrintFields(
          {{"version", node.version()},
           {"api", node.api_endpoint()},
           {"health", node.health_endpoint()},
           {"role", node.hub() ? "hub" : "sidecar"},
           {"node listeners", transports.empty() ? "- (reachable only through a hub)" : transports},
           {"node connections", connections},
           {"listeners", std::to_string(listeners.listeners_size())},
           {"secure channels", std::to_string(channels.channels_size())},
           {"relays", std::to_string(relays.relays_size()) + " (" + std::to_string(up) + " up)"},
           {"hosted relays", node.hub() ? std::to_string(hosted.relays_size()) : "- (not a hub)"},
           {"plaintext egress",
            node.insecure_plaintext() ? "ALLOWED (--insecure-plaintext)" : "refused"}});
    });
  });
}

void AddHealth(Commands& commands) {
  auto targets = std::make_shared<std::vector<std::string>>();
  auto* health = commands.app().add_subcommand(
      "health", "Check grpc.health.v1 on the API or on health ports; exit 0 when all are SERVING");
  health->add_option("targets", *targets, "HOST:PORT or unix:PATH to check (default: --api)");
  commands.On(health, [targets](Client& c) {
    std::vector<std::string> to = *targets;
    if (to.empty()) to.push_back(c.globals().api);
    int worst = kOk;
    for (const auto& target : to) {
      auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
      auto stub = grpc::health::v1::Health::NewStub(channel);
      grpc::health::v1::HealthCheckResponse response;
      grpc::Status s = stub->Check(c.Context().get(), {}, &response);
      std::string state =
          s.ok() ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
                 : std::string("unreachable: ") + s.error_message();
      if (c.globals().json) {
        std::cout << "{\"target\": \"" << JsonEscape(target) << "\", \"status\": \""
                  << JsonEscape(state) << "\"}\n";
      } else {
        std::cout << target << ": " << state << "\n";
      }
      if (!s.ok()) {
        worst = std::max(worst, static_cast<int>(ExitCodeOf(s.error_code())));
      } else if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
        worst = std::max(worst, static_cast<int>(kFailed));
      }
    }
    return worst;
  });
}

void AddIdentity(Commands& commands) {
  struct Flags {
    std::string name, identifier, key, label;
  };
  auto f = std::make_shared<Flags>();
  auto* identity = commands.app().add_subcommand(
      "identity", "This node's identities and the identities it trusts");
  identity->require_subcommand(1);
  commands.On(identity->add_subcommand("list", "List identities"), [](Client& c) {
    v1::ListIdentitiesResponse r;
    grpc::Status s =
        v1::IdentityService::NewStub(c.channel())->ListIdentities(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list identities");
    return c.Show(r, [&] {
      Table t({"NAME", "IDENTIFIER", "CREATED"});
      for (const auto& id : r.identities()) {
        t.Add({id.name(), id.public_identity().identifier(), Time(id.create_time())});
      }
      t.Print();
    });
  });
  auto* show = identity->add_subcommand("show", "Show an identity (its public part: share it)");
  show->add_option("name", f->name, "Identity name")->default_val("default");
  commands.On(show, [f](Client& c) {
    v1::GetIdentityRequest req;
    req.set_name(f->name);
    v1::Identity r;
    grpc::Status s =
        v1::IdentityService::NewStub(c.channel())->GetIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot show identity \"" + f->name + "\"");
    return c.Show(r, [&] { PrintIdentity(r); });
  });
  auto* create = identity->add_subcommand("create", "Create an identity");
  create->add_option("name", f->name, "1-64 of a-z 0-9 _ -")->required();
  commands.On(create, [f](Client& c) {
    v1::CreateIdentityRequest req;
    req.set_name(f->name);
    v1::Identity r;
    grpc::Status s =
        v1::IdentityService::NewStub(c.channel())->CreateIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot create identity \"" + f->name + "\"");
    return c.Show(r, [&] { PrintIdentity(r); });
  });
  auto* del = identity->add_subcommand("delete", "Delete an identity and its secret key, for good");
  del->add_option("name", f->name, "Identity name")->required();
  commands.On(del, [f](Client& c) {
    v1::DeleteIdentityRequest req;
    req.set_name(f->name);
    v1::DeleteIdentityResponse r;
    grpc::Status s =
        v1::IdentityService::NewStub(c.channel())->DeleteIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot delete identity \"" + f->name + "\"");
    return c.Show(r, [&] { std::cout << "deleted identity " << f->name << "\n"; });
  });
  auto* rotate = identity->add_subcommand(
      "rotate", "Give an identity fresh keys; its identifier (and who trusts it) stays the same");
  rotate->add_option("name", f->name, "Identity name")->required();
  commands.On(rotate, [f](Client& c) {
    v1::RotateIdentityRequest req;
    req.set_name(f->name);
    v1::Identity r;
    grpc::Status s =
        v1::IdentityService::NewStub(c.channel())->RotateIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot rotate identity \"" + f->name + "\"");
    return c.Show(r, [&] { PrintIdentity(r); });
  });
  auto* trust = identity->add_subcommand(
      "trust", "Trust a public identity (as `veil identity show` prints it elsewhere)");
  trust->add_option("identifier", f->identifier, "Its identifier, I + 32 hex digits")->required();
  trust->add_option("public-key", f->key, "Its Ed25519 public key, base64")->required();
  trust->add_option("--label", f->label, "A note for people");
  commands.On(trust, [f](Client& c) {
    v1::ImportTrustedIdentityRequest req;
    req.mutable_public_identity()->set_identifier(f->identifier);
    std::string key;
    if (!absl::Base64Unescape(f->key, &key) && !absl::WebSafeBase64Unescape(f->key, &key)) {
      std::cerr << "veil: the public key is not base64\n";
      return static_cast<int>(kUsage);
    }
    req.mutable_public_identity()->set_public_key(key);
    req.set_label(f->label);
    v1::TrustedIdentity r;
    grpc::Status s = v1::IdentityService::NewStub(c.channel())
                         ->ImportTrustedIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot trust " + f->identifier);
    return c.Show(r, [&] { std::cout << "trusting " << f->identifier << "\n"; });
  });
  commands.On(identity->add_subcommand("trusted", "List trusted identities"), [](Client& c) {
    v1::ListTrustedIdentitiesResponse r;
    grpc::Status s =
        v1::IdentityService::NewStub(c.channel())->ListTrustedIdentities(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list trusted identities");
    return c.Show(r, [&] {
      Table t({"IDENTIFIER", "LABEL", "ADDED"});
      for (const auto& id : r.trusted_identities()) {
        t.Add({id.public_identity().identifier(), id.label(), Time(id.add_time())});
      }
      t.Print();
    });
  });
  auto* untrust = identity->add_subcommand("untrust", "Stop trusting an identity");
  untrust->add_option("identifier", f->identifier, "Its identifier")->required();
  commands.On(untrust, [f](Client& c) {
    v1::DeleteTrustedIdentityRequest req;
    req.set_identifier(f->identifier);
    v1::DeleteTrustedIdentityResponse r;
    grpc::Status s = v1::IdentityService::NewStub(c.channel())
                         ->DeleteTrustedIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot untrust " + f->identifier);
    return c.Show(r, [&] { std::cout << "no longer trusting " << f->identifier << "\n"; });
  });
}

void AddListener(Commands& commands) {
  struct Flags {
    std::string address, identity;
    TrustFlags trust;
    bool exist_ok = false;
  };
  auto f = std::make_shared<Flags>();
  auto* listener =
      commands.app().add_subcommand("listener", "Secure channel listeners on this node");
  listener->require_subcommand(1);
  commands.On(listener->add_subcommand("list", "List listeners"), [](Client& c) {
    v1::ListSecureChannelListenersResponse r;
    grpc::Status s = v1::SecureChannelService::NewStub(c.channel())
                         ->ListSecureChannelListeners(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list listeners");
    return c.Show(r, [&] {
      Table t({"ADDRESS", "IDENTITY", "IDENTIFIER", "TRUST"});
      for (const auto& l : r.listeners())
        t.Add({l.address(), l.identity(), l.identifier(), l.trust_policy()});
      t.Print();
    });
  });
  auto* create = listener->add_subcommand("create", "Create a listener others open channels to");
  create->add_option("address", f->address, "Its address on this node, e.g. listener")->required();
  create->add_option("--identity", f->identity, "The identity it answers as")
      ->default_val("default");
  create->add_flag("--exist-ok", f->exist_ok,
                   "Succeed when the same listener (identity and trust) is already there");
  f->trust.Add(create, "may open channels");
  commands.On(create, [f](Client& c) {
    if (f->trust.Empty()) {
      std::cerr << "veil: say who may open channels: --trust-everyone, --trust ID, --trust-file F, "
                   "--trust-imported or --allow EXPR\n";
      return static_cast<int>(kUsage);
    }
    v1::CreateSecureChannelListenerRequest req;
    req.set_address(f->address);
    req.set_identity(f->identity);
    *req.mutable_trust_policy() = f->trust.Policy();
    req.set_exist_ok(f->exist_ok);
    v1::SecureChannelListener r;
    grpc::Status s = v1::SecureChannelService::NewStub(c.channel())
                         ->CreateSecureChannelListener(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot create listener \"" + f->address + "\"");
    return c.Show(r, [&] {
      std::cout << "listening at /service/" << r.address() << " as " << r.identifier() << " ("
                << r.trust_policy() << ")\n";
    });
  });
  auto* del = listener->add_subcommand("delete", "Delete a listener");
  del->add_option("address", f->address, "Its address")->required();
  commands.On(del, [f](Client& c) {
    v1::DeleteSecureChannelListenerRequest req;
    req.set_address(f->address);
    v1::DeleteSecureChannelListenerResponse r;
    grpc::Status s = v1::SecureChannelService::NewStub(c.channel())
                         ->DeleteSecureChannelListener(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot delete listener \"" + f->address + "\"");
    return c.Show(r, [&] { std::cout << "deleted listener " << f->address << "\n"; });
  });
}

void AddChannel(Commands& commands) {
  struct Flags {
    std::string address, route, identity;
    TrustFlags trust;
    double handshake_timeout = 10;
  };
  auto f = std::make_shared<Flags>();
  auto* channel = commands.app().add_subcommand("channel", "Secure channels");
  channel->require_subcommand(1);
  commands.On(channel->add_subcommand("list", "List secure channels"), [](Client& c) {
    v1::ListSecureChannelsResponse r;
    grpc::Status s = v1::SecureChannelService::NewStub(c.channel())
                         ->ListSecureChannels(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list channels");
    return c.Show(r, [&] {
      Table t(
          {"ADDRESS", "ROLE", "STATE", "REMOTE IDENTIFIER", "SENT", "RECEIVED", "REMOTE ROUTE"});
      for (const auto& ch : r.channels()) {
        t.Add({ch.address(), ch.role() == v1::SecureChannel::INITIATOR ? "initiator" : "responder",
               StateName(ch.state()), ch.remote_identifier(), std::to_string(ch.messages_sent()),
               std::to_string(ch.messages_received()), ch.remote_route()});
      }
      t.Print();
    });
  });
  auto* show = channel->add_subcommand("show", "Show a secure channel");
  show->add_option("address", f->address, "Its local address")->required();
  commands.On(show, [f](Client& c) {
    v1::GetSecureChannelRequest req;
    req.set_address(f->address);
    v1::SecureChannel r;
    grpc::Status s = v1::SecureChannelService::NewStub(c.channel())
                         ->GetSecureChannel(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot show channel \"" + f->address + "\"");
    return c.Show(r, [&] { PrintChannel(r); });
  });
  auto* create = channel->add_subcommand(
      "create", "Open a mutually authenticated, end-to-end encrypted channel to a listener");
  create
      ->add_option(
          "route", f->route,
          "The listener's route, e.g. /tcp/hub:4000/service/forward_to_bob/service/listener")
      ->required();
  create->add_option("--identity", f->identity, "The identity to present")->default_val("default");
  create->add_option("--handshake-timeout", f->handshake_timeout, "Seconds the handshake may take")
      ->check(CLI::Range(0.1, 120.0))
      ->capture_default_str();
  f->trust.Add(create, "the listener may be (default: everyone; the channel still says who)");
  commands.On(create, [f](Client& c) {
    v1::CreateSecureChannelRequest req;
    req.set_route(f->route);
    req.set_identity(f->identity);
    if (f->trust.Empty()) {
      req.mutable_trust_policy()->set_trust_everyone(true);
    } else {
      *req.mutable_trust_policy() = f->trust.Policy();
    }
    req.set_timeout_ms(static_cast<uint32_t>(f->handshake_timeout * 1000));
    v1::SecureChannel r;
    grpc::Status s = v1::SecureChannelService::NewStub(c.channel())
                         ->CreateSecureChannel(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot open a secure channel to " + f->route);
    return c.Show(r, [&] {
      std::cout << "[✓] secure channel established with " << r.remote_identifier() << "\n"
                << "send through it with routes starting " << r.route() << "\n";
    });
  });
  auto* del = channel->add_subcommand("delete", "Close a secure channel (the other end is told)");
  del->add_option("address", f->address, "Its local address")->required();
  commands.On(del, [f](Client& c) {
    v1::DeleteSecureChannelRequest req;
    req.set_address(f->address);
    v1::DeleteSecureChannelResponse r;
    grpc::Status s = v1::SecureChannelService::NewStub(c.channel())
                         ->DeleteSecureChannel(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot close channel \"" + f->address + "\"");
    return c.Show(r, [&] { std::cout << "closed channel " << f->address << "\n"; });
  });
}

void AddRelay(Commands& commands) {
  struct Flags {
    std::string name, hub, identity;
    TrustFlags hub_trust;
    bool exist_ok = false;
  };
  auto f = std::make_shared<Flags>();
  auto* relay =
      commands.app().add_subcommand("relay", "Relays on hubs (and, on a hub, the relays it hosts)");
  relay->require_subcommand(1);
  commands.On(relay->add_subcommand("list", "List this node's relays"), [](Client& c) {
    v1::ListRelaysResponse r;
    grpc::Status s = v1::RelayService::NewStub(c.channel())->ListRelays(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list relays");
    return c.Show(r, [&] {
      Table t({"NAME", "STATE", "ROUTE", "IDENTITY", "LAST ERROR"});
      for (const auto& x : r.relays()) {
        t.Add({x.name(), StateName(x.state()), x.route(), x.identity(), x.last_error()});
      }
      t.Print();
    });
  });
  auto* show = relay->add_subcommand("show", "Show a relay");
  show->add_option("name", f->name, "Its name")->required();
  commands.On(show, [f](Client& c) {
    v1::GetRelayRequest req;
    req.set_name(f->name);
    v1::Relay r;
    grpc::Status s = v1::RelayService::NewStub(c.channel())->GetRelay(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot show relay \"" + f->name + "\"");
    return c.Show(r, [&] { PrintRelay(r); });
  });
  auto* create = relay->add_subcommand(
      "create", "Register a relay on a hub, so others reach this node through it");
  create->add_option("hub-route", f->hub, "The hub's route, e.g. /tcp/hub.example:4000")
      ->required();
  create->add_option("--name", f->name, "Its name on the hub (default: the hub picks one)");
  create->add_option("--identity", f->identity, "The identity that owns it")
      ->default_val("default");
  create->add_flag(
      "--exist-ok", f->exist_ok,
      "Succeed with the relay this node already keeps on that hub (of that name, if given)");
  f->hub_trust.Add(create, "the hub may be (default: everyone)");
  commands.On(create, [f](Client& c) {
    v1::CreateRelayRequest req;
    req.set_hub_route(f->hub);
    req.set_name(f->name);
    req.set_identity(f->identity);
    req.set_exist_ok(f->exist_ok);
    if (!f->hub_trust.Empty()) *req.mutable_hub_trust_policy() = f->hub_trust.Policy();
    v1::Relay r;
    grpc::Status s =
        v1::RelayService::NewStub(c.channel())->CreateRelay(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot create a relay on " + f->hub);
    return c.Show(r, [&] {
      std::cout << "[✓] relay " << r.name() << " is up on " << r.hub_route() << "\n"
                << "others reach this node's workers at " << r.route() << "/service/<worker>\n";
    });
  });
  auto* del = relay->add_subcommand("delete", "Unregister and forget a relay");
  del->add_option("name", f->name, "Its name")->required();
  commands.On(del, [f](Client& c) {
    v1::DeleteRelayRequest req;
    req.set_name(f->name);
    v1::DeleteRelayResponse r;
    grpc::Status s =
        v1::RelayService::NewStub(c.channel())->DeleteRelay(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot delete relay \"" + f->name + "\"");
    return c.Show(r, [&] { std::cout << "deleted relay " << f->name << "\n"; });
  });
  commands.On(relay->add_subcommand("hosted", "On a hub: the relays it hosts"), [](Client& c) {
    v1::ListHostedRelaysResponse r;
    grpc::Status s =
        v1::RelayService::NewStub(c.channel())->ListHostedRelays(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list hosted relays");
    return c.Show(r, [&] {
      Table t({"NAME", "ADDRESS", "OWNER", "CONNECTION"});
      for (const auto& x : r.relays()) t.Add({x.name(), x.address(), x.owner(), x.connection()});
      t.Print();
    });
  });
  auto* release = relay->add_subcommand(
      "release",
      "On a hub: free a relay name whatever its owner (one that lost its key), on every replica "
      "sharing the hub directory");
  release->add_option("name", f->name, "The name")->required();
  commands.On(release, [f](Client& c) {
    v1::ReleaseRelayNameRequest req;
    req.set_name(f->name);
    v1::ReleaseRelayNameResponse r;
    grpc::Status s =
        v1::RelayService::NewStub(c.channel())->ReleaseRelayName(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot release relay name \"" + f->name + "\"");
    return c.Show(r, [&] { std::cout << "released relay name " << f->name << "\n"; });
  });
}

void AddOutlet(Commands& commands) {
  struct Flags {
    std::string name, target;
    TrustFlags trust;
    double idle_timeout = 0;
    bool exist_ok = false;
  };
  auto f = std::make_shared<Flags>();
  auto* outlet = commands.app().add_subcommand(
      "outlet", "Portal outlets: TCP services on this node that admitted channels reach");
  outlet->require_subcommand(1);
  commands.On(outlet->add_subcommand("list", "List outlets"), [](Client& c) {
    v1::ListOutletsResponse r;
    grpc::Status s =
        v1::PortalService::NewStub(c.channel())->ListOutlets(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list outlets");
    return c.Show(r, [&] {
      Table t({"NAME", "TARGET", "TRUST", "SESSIONS", "RESET", "BYTES IN", "BYTES OUT"});
      for (const auto& o : r.outlets()) {
        t.Add({o.name(), o.target(), o.trust_policy(),
               std::to_string(o.counters().sessions_active()),
               std::to_string(o.counters().sessions_reset()),
               std::to_string(o.counters().bytes_in()), std::to_string(o.counters().bytes_out())});
      }
      t.Print();
    });
  });
  auto* create = outlet->add_subcommand(
      "create", "Create an outlet: each session through an admitted channel connects to --to");
  create->add_option("name", f->name, "Its address on this node, e.g. postgres")->required();
  create->add_option("--to", f->target, "HOST:PORT each session connects to (fixed)")->required();
  create
      ->add_option("--idle-timeout", f->idle_timeout,
                   "Reset a session with no byte either way for this many seconds (0: never)")
      ->check(CLI::Range(0.0, 86400.0));
  create->add_flag("--exist-ok", f->exist_ok,
                   "Succeed when the same outlet (target and trust) is already there");
  f->trust.Add(create, "may open sessions");
  commands.On(create, [f](Client& c) {
    if (f->trust.Empty()) {
      std::cerr << "veil: say who may open sessions: --trust-everyone, --trust ID, --trust-file F, "
                   "--trust-imported or --allow EXPR\n";
      return static_cast<int>(kUsage);
    }
    v1::CreateOutletRequest req;
    req.set_name(f->name);
    req.set_target(f->target);
    *req.mutable_trust_policy() = f->trust.Policy();
    req.set_idle_timeout_ms(static_cast<uint32_t>(f->idle_timeout * 1000));
    req.set_exist_ok(f->exist_ok);
    v1::Outlet r;
    grpc::Status s =
        v1::PortalService::NewStub(c.channel())->CreateOutlet(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot create outlet \"" + f->name + "\"");
    return c.Show(r, [&] {
      std::cout << "outlet at /service/" << r.name() << " to " << r.target() << " ("
                << r.trust_policy() << ")\n";
    });
  });
  auto* del = outlet->add_subcommand("delete", "Delete an outlet (its sessions are reset)");
  del->add_option("name", f->name, "Its name")->required();
  commands.On(del, [f](Client& c) {
    v1::DeleteOutletRequest req;
    req.set_name(f->name);
    v1::DeleteOutletResponse r;
    grpc::Status s =
        v1::PortalService::NewStub(c.channel())->DeleteOutlet(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot delete outlet \"" + f->name + "\"");
    return c.Show(r, [&] { std::cout << "deleted outlet " << f->name << "\n"; });
  });
}

// "k=v" pairs of --attr into a map; false (after saying why) on a malformed one.
bool ParseAttributes(const std::vector<std::string>& pairs,
                     google::protobuf::Map<std::string, std::string>& out) {
  for (const std::string& pair : pairs) {
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "veil: --attr takes KEY=VALUE, e.g. --attr role=db-client\n";
      return false;
    }
    out[pair.substr(0, eq)] = pair.substr(eq + 1);
  }
  return true;
}

std::string Attributes(const google::protobuf::Map<std::string, std::string>& map) {
  std::vector<std::string> sorted;
  for (const auto& [k, v] : map) sorted.push_back(k + "=" + v);
  std::sort(sorted.begin(), sorted.end());
  return absl::StrJoin(sorted, ",");
}

std::string UnixTime(int64_t seconds) {
  if (seconds == 0) return "";
  google::protobuf::Timestamp t;
  t.set_seconds(seconds);
  return Time(t);
}

void AddAuthority(Commands& commands) {
  struct Flags {
    std::string identifier, id, route, token, identity;
    std::vector<std::string> attrs;
    std::string ttl = "10m";
  };
  auto f = std::make_shared<Flags>();
  auto* authority = commands.app().add_subcommand(
      "authority", "On a credential authority (veild --authority): members and tickets");
  authority->require_subcommand(1);
  commands.On(
      authority->add_subcommand("show", "This authority: identifier, credential life"),
      [](Client& c) {
        v1::Authority r;
        grpc::Status s =
            v1::AuthorityService::NewStub(c.channel())->GetAuthority(c.Context().get(), {}, &r);
        if (!s.ok()) return c.Fail(s, "cannot show the authority");
        return c.Show(r, [&] {
          std::cout << "authority " << r.identifier() << ": " << r.members()
                    << " members, credentials valid " << r.credential_ttl_seconds() << " s"
                    << (r.route().empty() ? "" : ", reached at " + r.route()) << "\n";
        });
      });
  auto* member = authority->add_subcommand("member", "The authority's members");
  member->require_subcommand(1);
  commands.On(member->add_subcommand("list", "List members"), [](Client& c) {
    v1::ListMembersResponse r;
    grpc::Status s =
        v1::AuthorityService::NewStub(c.channel())->ListMembers(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list members");
    return c.Show(r, [&] {
      Table t({"IDENTIFIER", "ATTRIBUTES", "ADDED", "TICKET"});
      for (const auto& m : r.members()) {
        t.Add({m.identifier(), Attributes(m.attributes()), UnixTime(m.added_unix_seconds()),
               m.ticket()});
      }
      t.Print();
    });
  });
  auto* add = member->add_subcommand("add", "Add a member (or set a member's attributes)");
  add->add_option("identifier", f->identifier, "Its identifier")->required();
  add->add_option("--attr", f->attrs, "KEY=VALUE (repeatable)")->allow_extra_args(false);
  commands.On(add, [f](Client& c) {
    v1::AddMemberRequest req;
    req.set_identifier(f->identifier);
    if (!ParseAttributes(f->attrs, *req.mutable_attributes())) return static_cast<int>(kUsage);
    v1::Member r;
    grpc::Status s =
        v1::AuthorityService::NewStub(c.channel())->AddMember(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot add member " + f->identifier);
    return c.Show(r, [&] {
      std::cout << "member " << r.identifier() << " (" << Attributes(r.attributes()) << ")\n";
    });
  });
  auto* remove = member->add_subcommand(
      "remove", "Remove a member: no more credentials (those it holds die at expiry)");
  remove->add_option("identifier", f->identifier, "Its identifier")->required();
  commands.On(remove, [f](Client& c) {
    v1::RemoveMemberRequest req;
    req.set_identifier(f->identifier);
    v1::RemoveMemberResponse r;
    grpc::Status s =
        v1::AuthorityService::NewStub(c.channel())->RemoveMember(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot remove member " + f->identifier);
    return c.Show(r, [&] { std::cout << "removed member " << f->identifier << "\n"; });
  });
  auto* ticket = authority->add_subcommand("ticket", "One-time enrollment tickets");
  ticket->require_subcommand(1);
  auto* create = ticket->add_subcommand(
      "create", "Create a ticket; prints its token for `veil enroll` (shown once)");
  create->add_option("--attr", f->attrs, "KEY=VALUE the member gets (repeatable)")
      ->allow_extra_args(false);
  create->add_option("--ttl", f->ttl, "How long it may be used: 90s, 10m, 2h, 1d")
      ->capture_default_str();
  create->add_option("--route", f->route,
                     "How members reach this authority's listener (default: veild "
                     "--authority-route)");
  commands.On(create, [f](Client& c) {
    v1::CreateTicketRequest req;
    if (!ParseAttributes(f->attrs, *req.mutable_attributes())) return static_cast<int>(kUsage);
    absl::Duration ttl;
    if (!absl::ParseDuration(f->ttl, &ttl) || ttl < absl::Seconds(1)) {
      std::cerr << "veil: --ttl takes a duration such as 90s, 10m or 2h\n";
      return static_cast<int>(kUsage);
    }
    req.set_ttl_seconds(absl::ToInt64Seconds(ttl));
    req.set_route(f->route);
    v1::Ticket r;
    grpc::Status s =
        v1::AuthorityService::NewStub(c.channel())->CreateTicket(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot create a ticket");
    return c.Show(r, [&] { std::cout << r.token() << "\n"; });
  });
  commands.On(ticket->add_subcommand("list", "List tickets"), [](Client& c) {
    v1::ListTicketsResponse r;
    grpc::Status s =
        v1::AuthorityService::NewStub(c.channel())->ListTickets(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list tickets");
    return c.Show(r, [&] {
      Table t({"ID", "ATTRIBUTES", "EXPIRES", "STATE"});
      for (const auto& k : r.tickets()) {
        t.Add({k.id(), Attributes(k.attributes()), UnixTime(k.expires_unix_seconds()),
               k.revoked()           ? "revoked"
               : k.used_by().empty() ? "unused"
                                     : "used by " + k.used_by()});
      }
      t.Print();
    });
  });
  auto* revoke = ticket->add_subcommand("revoke", "Revoke a ticket: no one enrolls with it");
  revoke->add_option("id", f->id, "Its id (t_...)")->required();
  commands.On(revoke, [f](Client& c) {
    v1::RevokeTicketRequest req;
    req.set_id(f->id);
    v1::RevokeTicketResponse r;
    grpc::Status s =
        v1::AuthorityService::NewStub(c.channel())->RevokeTicket(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot revoke ticket " + f->id);
    return c.Show(r, [&] { std::cout << "revoked ticket " << f->id << "\n"; });
  });

  auto* enroll = commands.app().add_subcommand(
      "enroll", "Become a member of an authority with a ticket's token");
  enroll->add_option("token", f->token, "The token (veil-ticket-v1....)")->required();
  enroll->add_option("--identity", f->identity, "This node's identity that joins")
      ->default_val("default");
  commands.On(enroll, [f](Client& c) {
    v1::EnrollRequest req;
    req.set_token(f->token);
    req.set_identity(f->identity);
    v1::Membership r;
    grpc::Status s = v1::AuthorityService::NewStub(c.channel())->Enroll(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot enroll");
    return c.Show(r, [&] {
      std::cout << "identity " << r.identity() << " (" << r.identifier()
                << ") is a member of authority " << r.authority() << " ("
                << Attributes(r.attributes()) << "), credential until "
                << UnixTime(r.expires_unix_seconds()) << "\n";
    });
  });
  commands.On(
      commands.app().add_subcommand("credentials",
                                    "This node's memberships and the credentials held"),
      [](Client& c) {
        v1::ListMembershipsResponse r;
        grpc::Status s =
            v1::AuthorityService::NewStub(c.channel())->ListMemberships(c.Context().get(), {}, &r);
        if (!s.ok()) return c.Fail(s, "cannot list memberships");
        return c.Show(r, [&] {
          Table t({"AUTHORITY", "IDENTITY", "ATTRIBUTES", "EXPIRES", "ERROR"});
          for (const auto& m : r.memberships()) {
            t.Add({m.authority(), m.identity(), Attributes(m.attributes()),
                   UnixTime(m.expires_unix_seconds()), m.last_error()});
          }
          t.Print();
        });
      });
}

void AddInlet(Commands& commands) {
  struct Flags {
    std::string listen, route, outlet, identity;
    TrustFlags trust;
    double idle_timeout = 0;
    bool allow_public = false, exist_ok = false;
  };
  auto f = std::make_shared<Flags>();
  auto* inlet = commands.app().add_subcommand(
      "inlet", "Portal inlets: local TCP listeners whose connections reach a far outlet");
  inlet->require_subcommand(1);
  commands.On(inlet->add_subcommand("list", "List inlets"), [](Client& c) {
    v1::ListInletsResponse r;
    grpc::Status s = v1::PortalService::NewStub(c.channel())->ListInlets(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list inlets");
    return c.Show(r, [&] {
      Table t(
          {"LISTEN", "OUTLET", "ROUTE", "CHANNEL", "SESSIONS", "RESET", "BYTES IN", "BYTES OUT"});
      for (const auto& i : r.inlets()) {
        t.Add({i.listen_address(), i.outlet(), i.route(), i.channel(),
               std::to_string(i.counters().sessions_active()),
               std::to_string(i.counters().sessions_reset()),
               std::to_string(i.counters().bytes_in()), std::to_string(i.counters().bytes_out())});
      }
      t.Print();
    });
  });
  auto* create = inlet->add_subcommand(
      "create", "Create an inlet: each connection to LISTEN_ADDR reaches the outlet through ROUTE");
  create->add_option("listen-address", f->listen, "HOST:PORT to listen on, e.g. 127.0.0.1:15432")
      ->required();
  create
      ->add_option("route", f->route,
                   "The route to the far secure channel listener, e.g. "
                   "/tcp/hub:4000/service/forward_to_bob/service/listener")
      ->required();
  create->add_option("--outlet", f->outlet, "The outlet's name on the far node")->required();
  create->add_option("--identity", f->identity, "The identity to present")->default_val("default");
  create->add_flag("--public", f->allow_public,
                   "Allow a non-loopback LISTEN_ADDR (anyone who reaches it reaches the outlet as "
                   "this node's identity)");
  create
      ->add_option("--idle-timeout", f->idle_timeout,
                   "Reset a session with no byte either way for this many seconds (0: never)")
      ->check(CLI::Range(0.0, 86400.0));
  create->add_flag("--exist-ok", f->exist_ok,
                   "Succeed when an inlet to the same route and outlet already listens there");
  f->trust.Add(create, "the far end may be (default: everyone; pin it to the outlet's owner)");
  commands.On(create, [f](Client& c) {
    v1::CreateInletRequest req;
    req.set_listen_address(f->listen);
    req.set_route(f->route);
    req.set_outlet(f->outlet);
    req.set_identity(f->identity);
    if (!f->trust.Empty()) *req.mutable_trust_policy() = f->trust.Policy();
    req.set_allow_public(f->allow_public);
    req.set_idle_timeout_ms(static_cast<uint32_t>(f->idle_timeout * 1000));
    req.set_exist_ok(f->exist_ok);
    v1::Inlet r;
    grpc::Status s =
        v1::PortalService::NewStub(c.channel())->CreateInlet(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot create an inlet on " + f->listen);
    return c.Show(r, [&] {
      std::cout << "inlet on " << r.listen_address() << " to outlet " << r.outlet() << " through "
                << r.route() << "\n";
    });
  });
  auto* del = inlet->add_subcommand("delete", "Delete an inlet (its sessions are reset)");
  del->add_option("listen-address", f->listen, "The address it listens on, as `inlet list` shows")
      ->required();
  commands.On(del, [f](Client& c) {
    v1::DeleteInletRequest req;
    req.set_listen_address(f->listen);
    v1::DeleteInletResponse r;
    grpc::Status s =
        v1::PortalService::NewStub(c.channel())->DeleteInlet(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot delete the inlet on " + f->listen);
    return c.Show(r, [&] { std::cout << "deleted inlet " << f->listen << "\n"; });
  });
}

void AddSend(Commands& commands) {
  struct Flags {
    std::string route, message;
    bool request = false;
  };
  auto f = std::make_shared<Flags>();
  auto* send = commands.app().add_subcommand(
      "send", "Send a message to a route; with --request, wait for the reply and print it");
  send->add_option("route", f->route, "e.g. /service/_sc_5d1cE7a9b3F/service/echoer")->required();
  send->add_option("message", f->message, "The payload; - or nothing reads stdin");
  send->add_flag("--request,-r", f->request, "Wait for one reply and print its payload");
  commands.On(send, [f](Client& c) {
    std::string payload = f->message.empty() || f->message == "-" ? ReadStdin() : f->message;
    auto stub = v1::MessagingService::NewStub(c.channel());
    if (f->request) {
      v1::RequestRequest req;
      req.mutable_message()->set_route(f->route);
      req.mutable_message()->set_payload(payload);
      v1::RequestResponse r;
      grpc::Status s = stub->Request(c.Context().get(), req, &r);
      if (!s.ok()) return c.Fail(s, "no reply from " + f->route);
      return c.Show(r, [&] {
        std::cout << r.reply().payload();
        if (r.reply().payload().empty() || r.reply().payload().back() != '\n') std::cout << "\n";
        if (r.reply().sender().origin() == v1::Sender::ORIGIN_SECURE_CHANNEL) {
          std::cerr << "(from " << r.reply().sender().identifier() << ")\n";
        }
      });
    }
    v1::SendRequest req;
    auto* m = req.add_messages();
    m->set_route(f->route);
    m->set_payload(payload);
    v1::SendResponse r;
    grpc::Status s = stub->Send(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot send to " + f->route);
    return c.Show(
        r, [&] { std::cout << "sent " << payload.size() << " bytes to " << f->route << "\n"; });
  });
}

int Run(int argc, char** argv) {
  Globals g;
  g.api = sdk::DefaultApi();
  CLI::App app{"veil — command-line client of a veil sidecar (the veil.v1 API).\n" +
                   std::string(kExitCodesHelp),
               "veil"};
  app.set_version_flag("--version", std::string("veil ") + kVeilVersion);
  app.require_subcommand(1);
  // The global flags work after the subcommand too: `veil status --json` as `veil --json status`.
  app.fallthrough();
  app.add_option("--api", g.api,
                 "The sidecar's API: unix:PATH or HOST:PORT (default $VEIL_API, else "
                 "unix:$VEIL_STATE_DIR/api.sock, else unix:$HOME/.veil/api.sock)")
      ->capture_default_str();
  app.add_flag("--json", g.json,
               "Print results as JSON (proto field names); errors as JSON on stderr");
  app.add_option("--timeout", g.timeout_seconds, "Seconds to wait for an answer")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.footer(
      "Routes are written as text, e.g. "
      "/tcp/hub.example:4000/service/forward_to_bob/service/listener.\n"
      "See docs/cli.md.");

  Commands commands(app);
  AddStatus(commands);
  AddHealth(commands);
  AddIdentity(commands);
  AddListener(commands);
  AddChannel(commands);
  AddRelay(commands);
  AddOutlet(commands);
  AddInlet(commands);
  AddAuthority(commands);
  AddSend(commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kUsage;
  }
  Client client(g);
  return commands.Run(client);
}

}  // namespace
}  // namespace veil::cli

int main(int argc, char** argv) {
  veil::sdk::TuneMalloc();
  return veil::cli::Run(argc, argv);
}
