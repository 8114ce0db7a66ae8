// veil: the command-line client of a veil sidecar's API, for people and scripts.
// `veil --help` and `veil COMMAND --help` document everything; docs/cli.md too.
//
// Exit codes (also in --help): 0 done; 1 failed (other); 2 bad usage or invalid argument;
// 3 not found; 4 already exists; 5 refused (permission / trust); 6 failed precondition;
// 7 the sidecar (or a peer) is unreachable; 8 deadline exceeded; 9 resource exhausted.
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/escaping.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "sidecar/common/version.h"
#include "veil/v1/identity.grpc.pb.h"
#include "veil/v1/messaging.grpc.pb.h"
#include "veil/v1/node.grpc.pb.h"
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
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::UNKNOWN: return "UNKNOWN";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::ABORTED: return "ABORTED";
    case grpc::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::INTERNAL: return "INTERNAL";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::DATA_LOSS: return "DATA_LOSS";
    case grpc::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

int ExitCodeOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return kOk;
    case grpc::INVALID_ARGUMENT:
    case grpc::OUT_OF_RANGE: return kUsage;
    case grpc::NOT_FOUND: return kNotFound;
    case grpc::ALREADY_EXISTS: return kExists;
    case grpc::PERMISSION_DENIED:
    case grpc::UNAUTHENTICATED: return kRefused;
    case grpc::FAILED_PRECONDITION: return kPrecondition;
    case grpc::UNAVAILABLE: return kUnavailable;
    case grpc::DEADLINE_EXCEEDED: return kDeadline;
    case grpc::RESOURCE_EXHAUSTED: return kExhausted;
    default: return kFailed;
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
    context->set_deadline(std::chrono::system_clock::now() +
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
      if (!reason.empty()) std::cerr << " [" << CodeName(status.error_code()) << ", " << reason << "]";
      else std::cerr << " [" << CodeName(status.error_code()) << "]";
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

  void Add(CLI::App* app, const std::string& what) {
    auto* group = app->add_option_group("trust", "Who " + what + " (pick one or combine)");
    group->add_flag("--trust-everyone", everyone, "Any identity (each message still says who)");
    group->add_option("--trust", identifiers, "This identifier (repeatable: any of them)")
        ->allow_extra_args(false);  // one identifier each: `--trust ID NAME` leaves NAME alone
    group->add_option("--trust-file", file, "Identifiers listed in this file, one per line");
    group->add_flag("--trust-imported", imported, "Identities imported with `veil identity trust`");
  }
  bool Empty() const { return !everyone && identifiers.empty() && file.empty() && !imported; }
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
    if (parts.size() == 1) return parts[0];
    v1::TrustPolicy any;
    for (auto& p : parts) *any.mutable_any_of()->add_policies() = p;
    return any;
  }
};

const char* StateName(v1::SecureChannel::State s) {
  switch (s) {
    case v1::SecureChannel::HANDSHAKING: return "handshaking";
    case v1::SecureChannel::ESTABLISHED: return "established";
    case v1::SecureChannel::CLOSED: return "closed";
    default: return "unknown";
  }
}

const char* StateName(v1::Relay::State s) {
  switch (s) {
    case v1::Relay::CONNECTING: return "connecting";
    case v1::Relay::UP: return "up";
    case v1::Relay::RECONNECTING: return "reconnecting";
    case v1::Relay::FAILED: return "failed";
    default: return "unknown";
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
  PrintFields({{"name", id.name()},
               {"identifier", id.public_identity().identifier()},
               {"public key", absl::Base64Escape(id.public_identity().public_key())},
               {"created", Time(id.create_time())}});
}

// Reads all of stdin.
std::string ReadStdin() {
  std::ostringstream out;
  out << std::cin.rdbuf();
  return out.str();
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
  app.add_flag("--json", g.json, "Print results as JSON (proto field names); errors as JSON on stderr");
  app.add_option("--timeout", g.timeout_seconds, "Seconds to wait for an answer")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.footer("Routes are written as text, e.g. /tcp/hub.example:4000/service/forward_to_bob/service/listener.\n"
             "See docs/cli.md.");

  std::function<int(Client&)> action;
  auto on = [&action](CLI::App* cmd, std::function<int(Client&)> f) {
    cmd->callback([&action, f = std::move(f)] { action = f; });
  };

  // status
  auto* status = app.add_subcommand("status", "The node: version, API, health port, transports, counts");
  on(status, [](Client& c) {
    auto node_stub = v1::NodeService::NewStub(c.channel());
    v1::Node node;
    grpc::Status s = node_stub->GetNode(c.Context().get(), {}, &node);
    if (!s.ok()) return c.Fail(s, "cannot get the node's status");
    v1::ListSecureChannelsResponse channels;
    v1::ListRelaysResponse relays;
    v1::ListSecureChannelListenersResponse listeners;
    (void)v1::SecureChannelService::NewStub(c.channel())->ListSecureChannels(c.Context().get(), {}, &channels);
    (void)v1::SecureChannelService::NewStub(c.channel())
        ->ListSecureChannelListeners(c.Context().get(), {}, &listeners);
    (void)v1::RelayService::NewStub(c.channel())->ListRelays(c.Context().get(), {}, &relays);
    v1::ListHostedRelaysResponse hosted;  // a hub's: the relays others keep on it
    if (node.hub()) {
      (void)v1::RelayService::NewStub(c.channel())->ListHostedRelays(c.Context().get(), {}, &hosted);
    }
    return c.Show(node, [&] {
      std::string tcp;
      for (const auto& l : node.tcp_listeners()) tcp += (tcp.empty() ? "" : ", ") + l.address();
      size_t up = 0;
      for (const auto& r : relays.relays()) up += r.state() == v1::Relay::UP;
      PrintFields({{"version", node.version()},
                   {"api", node.api_endpoint()},
                   {"health", node.health_endpoint()},
                   {"role", node.hub() ? "hub" : "sidecar"},
                   {"tcp listeners", tcp},
                   {"tcp connections", std::to_string(node.tcp_connections_size())},
                   {"listeners", std::to_string(listeners.listeners_size())},
                   {"secure channels", std::to_string(channels.channels_size())},
                   {"relays", std::to_string(relays.relays_size()) + " (" + std::to_string(up) + " up)"},
                   {"hosted relays", node.hub() ? std::to_string(hosted.relays_size()) : "- (not a hub)"},
                   {"plaintext egress", node.insecure_plaintext() ? "ALLOWED (--insecure-plaintext)" : "refused"}});
    });
  });

  // health
  std::vector<std::string> health_targets;
  auto* health = app.add_subcommand(
      "health", "Check grpc.health.v1 on the API or on health ports; exit 0 when all are SERVING");
  health->add_option("targets", health_targets,
                     "HOST:PORT or unix:PATH to check (default: --api)");
  on(health, [&health_targets](Client& c) {
    std::vector<std::string> targets = health_targets;
    if (targets.empty()) targets.push_back(c.globals().api);
    int worst = kOk;
    for (const auto& target : targets) {
      auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
      auto stub = grpc::health::v1::Health::NewStub(channel);
      grpc::health::v1::HealthCheckResponse response;
      grpc::Status s = stub->Check(c.Context().get(), {}, &response);
      std::string state = s.ok() ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
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

  // identity
  auto* identity = app.add_subcommand("identity", "This node's identities and the identities it trusts");
  identity->require_subcommand(1);
  on(identity->add_subcommand("list", "List identities"), [](Client& c) {
    v1::ListIdentitiesResponse r;
    grpc::Status s = v1::IdentityService::NewStub(c.channel())->ListIdentities(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list identities");
    return c.Show(r, [&] {
      Table t({"NAME", "IDENTIFIER", "CREATED"});
      for (const auto& id : r.identities()) {
        t.Add({id.name(), id.public_identity().identifier(), Time(id.create_time())});
      }
      t.Print();
    });
  });
  std::string identity_name;
  auto* id_show = identity->add_subcommand("show", "Show an identity (its public part: share it)");
  id_show->add_option("name", identity_name, "Identity name")->default_val("default");
  on(id_show, [&identity_name](Client& c) {
    v1::GetIdentityRequest req;
    req.set_name(identity_name);
    v1::Identity r;
    grpc::Status s = v1::IdentityService::NewStub(c.channel())->GetIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot show identity \"" + identity_name + "\"");
    return c.Show(r, [&] { PrintIdentity(r); });
  });
  auto* id_create = identity->add_subcommand("create", "Create an identity");
  id_create->add_option("name", identity_name, "1-64 of a-z 0-9 _ -")->required();
  on(id_create, [&identity_name](Client& c) {
    v1::CreateIdentityRequest req;
    req.set_name(identity_name);
    v1::Identity r;
    grpc::Status s = v1::IdentityService::NewStub(c.channel())->CreateIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot create identity \"" + identity_name + "\"");
    return c.Show(r, [&] { PrintIdentity(r); });
  });
  auto* id_delete = identity->add_subcommand("delete", "Delete an identity and its secret key, for good");
  id_delete->add_option("name", identity_name, "Identity name")->required();
  on(id_delete, [&identity_name](Client& c) {
    v1::DeleteIdentityRequest req;
    req.set_name(identity_name);
    v1::DeleteIdentityResponse r;
    grpc::Status s = v1::IdentityService::NewStub(c.channel())->DeleteIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot delete identity \"" + identity_name + "\"");
    return c.Show(r, [&] { std::cout << "deleted identity " << identity_name << "\n"; });
  });
  std::string trust_identifier, trust_key, trust_label;
  auto* id_trust = identity->add_subcommand(
      "trust", "Trust a public identity (as `veil identity show` prints it elsewhere)");
  id_trust->add_option("identifier", trust_identifier, "Its identifier, I + 32 hex digits")->required();
  id_trust->add_option("public-key", trust_key, "Its Ed25519 public key, base64")->required();
  id_trust->add_option("--label", trust_label, "A note for people");
  on(id_trust, [&](Client& c) {
    v1::ImportTrustedIdentityRequest req;
    req.mutable_public_identity()->set_identifier(trust_identifier);
    std::string key;
    if (!absl::Base64Unescape(trust_key, &key) && !absl::WebSafeBase64Unescape(trust_key, &key)) {
      std::cerr << "veil: the public key is not base64\n";
      return static_cast<int>(kUsage);
    }
    req.mutable_public_identity()->set_public_key(key);
    req.set_label(trust_label);
    v1::TrustedIdentity r;
    grpc::Status s =
        v1::IdentityService::NewStub(c.channel())->ImportTrustedIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot trust " + trust_identifier);
    return c.Show(r, [&] { std::cout << "trusting " << trust_identifier << "\n"; });
  });
  on(identity->add_subcommand("trusted", "List trusted identities"), [](Client& c) {
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
  auto* id_untrust = identity->add_subcommand("untrust", "Stop trusting an identity");
  id_untrust->add_option("identifier", trust_identifier, "Its identifier")->required();
  on(id_untrust, [&](Client& c) {
    v1::DeleteTrustedIdentityRequest req;
    req.set_identifier(trust_identifier);
    v1::DeleteTrustedIdentityResponse r;
    grpc::Status s =
        v1::IdentityService::NewStub(c.channel())->DeleteTrustedIdentity(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot untrust " + trust_identifier);
    return c.Show(r, [&] { std::cout << "no longer trusting " << trust_identifier << "\n"; });
  });

  // listener
  auto* listener = app.add_subcommand("listener", "Secure channel listeners on this node");
  listener->require_subcommand(1);
  on(listener->add_subcommand("list", "List listeners"), [](Client& c) {
    v1::ListSecureChannelListenersResponse r;
    grpc::Status s = v1::SecureChannelService::NewStub(c.channel())
                         ->ListSecureChannelListeners(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list listeners");
    return c.Show(r, [&] {
      Table t({"ADDRESS", "IDENTITY", "IDENTIFIER", "TRUST"});
      for (const auto& l : r.listeners()) t.Add({l.address(), l.identity(), l.identifier(), l.trust_policy()});
      t.Print();
    });
  });
  std::string listener_address, listener_identity;
  TrustFlags listener_trust;
  auto* l_create = listener->add_subcommand("create", "Create a listener others open channels to");
  l_create->add_option("address", listener_address, "Its address on this node, e.g. listener")->required();
  l_create->add_option("--identity", listener_identity, "The identity it answers as")->default_val("default");
  listener_trust.Add(l_create, "may open channels");
  on(l_create, [&](Client& c) {
    if (listener_trust.Empty()) {
      std::cerr << "veil: say who may open channels: --trust-everyone, --trust ID, --trust-file F or "
                   "--trust-imported\n";
      return static_cast<int>(kUsage);
    }
    v1::CreateSecureChannelListenerRequest req;
    req.set_address(listener_address);
    req.set_identity(listener_identity);
    *req.mutable_trust_policy() = listener_trust.Policy();
    v1::SecureChannelListener r;
    grpc::Status s = v1::SecureChannelService::NewStub(c.channel())
                         ->CreateSecureChannelListener(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot create listener \"" + listener_address + "\"");
    return c.Show(r, [&] {
      std::cout << "listening at /service/" << r.address() << " as " << r.identifier() << " ("
                << r.trust_policy() << ")\n";
    });
  });
  auto* l_delete = listener->add_subcommand("delete", "Delete a listener");
  l_delete->add_option("address", listener_address, "Its address")->required();
  on(l_delete, [&](Client& c) {
    v1::DeleteSecureChannelListenerRequest req;
    req.set_address(listener_address);
    v1::DeleteSecureChannelListenerResponse r;
    grpc::Status s = v1::SecureChannelService::NewStub(c.channel())
                         ->DeleteSecureChannelListener(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot delete listener \"" + listener_address + "\"");
    return c.Show(r, [&] { std::cout << "deleted listener " << listener_address << "\n"; });
  });

  // channel
  auto* channel = app.add_subcommand("channel", "Secure channels");
  channel->require_subcommand(1);
  on(channel->add_subcommand("list", "List secure channels"), [](Client& c) {
    v1::ListSecureChannelsResponse r;
    grpc::Status s =
        v1::SecureChannelService::NewStub(c.channel())->ListSecureChannels(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list channels");
    return c.Show(r, [&] {
      Table t({"ADDRESS", "ROLE", "STATE", "REMOTE IDENTIFIER", "SENT", "RECEIVED", "REMOTE ROUTE"});
      for (const auto& ch : r.channels()) {
        t.Add({ch.address(), ch.role() == v1::SecureChannel::INITIATOR ? "initiator" : "responder",
               StateName(ch.state()), ch.remote_identifier(), std::to_string(ch.messages_sent()),
               std::to_string(ch.messages_received()), ch.remote_route()});
      }
      t.Print();
    });
  });
  std::string channel_address, channel_route, channel_identity;
  TrustFlags channel_trust;
  double handshake_timeout = 10;
  auto* ch_show = channel->add_subcommand("show", "Show a secure channel");
  ch_show->add_option("address", channel_address, "Its local address")->required();
  on(ch_show, [&](Client& c) {
    v1::GetSecureChannelRequest req;
    req.set_address(channel_address);
    v1::SecureChannel r;
    grpc::Status s =
        v1::SecureChannelService::NewStub(c.channel())->GetSecureChannel(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot show channel \"" + channel_address + "\"");
    return c.Show(r, [&] { PrintChannel(r); });
  });
  auto* ch_create = channel->add_subcommand(
      "create", "Open a mutually authenticated, end-to-end encrypted channel to a listener");
  ch_create->add_option("route", channel_route,
                        "The listener's route, e.g. /tcp/hub:4000/service/forward_to_bob/service/listener")
      ->required();
  ch_create->add_option("--identity", channel_identity, "The identity to present")->default_val("default");
  ch_create->add_option("--handshake-timeout", handshake_timeout, "Seconds the handshake may take")
      ->check(CLI::Range(0.1, 120.0))
      ->capture_default_str();
  channel_trust.Add(ch_create, "the listener may be (default: everyone; the channel still says who)");
  on(ch_create, [&](Client& c) {
    v1::CreateSecureChannelRequest req;
    req.set_route(channel_route);
    req.set_identity(channel_identity);
    if (channel_trust.Empty()) {
      req.mutable_trust_policy()->set_trust_everyone(true);
    } else {
      *req.mutable_trust_policy() = channel_trust.Policy();
    }
    req.set_timeout_ms(static_cast<uint32_t>(handshake_timeout * 1000));
    v1::SecureChannel r;
    grpc::Status s =
        v1::SecureChannelService::NewStub(c.channel())->CreateSecureChannel(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot open a secure channel to " + channel_route);
    return c.Show(r, [&] {
      std::cout << "[✓] secure channel established with " << r.remote_identifier() << "\n"
                << "send through it with routes starting " << r.route() << "\n";
    });
  });
  auto* ch_delete = channel->add_subcommand("delete", "Close a secure channel (the other end is told)");
  ch_delete->add_option("address", channel_address, "Its local address")->required();
  on(ch_delete, [&](Client& c) {
    v1::DeleteSecureChannelRequest req;
    req.set_address(channel_address);
    v1::DeleteSecureChannelResponse r;
    grpc::Status s =
        v1::SecureChannelService::NewStub(c.channel())->DeleteSecureChannel(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot close channel \"" + channel_address + "\"");
    return c.Show(r, [&] { std::cout << "closed channel " << channel_address << "\n"; });
  });

  // relay
  auto* relay = app.add_subcommand("relay", "Relays on hubs (and, on a hub, the relays it hosts)");
  relay->require_subcommand(1);
  on(relay->add_subcommand("list", "List this node's relays"), [](Client& c) {
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
  std::string relay_name, relay_hub, relay_identity;
  TrustFlags hub_trust;
  auto* r_show = relay->add_subcommand("show", "Show a relay");
  r_show->add_option("name", relay_name, "Its name")->required();
  on(r_show, [&](Client& c) {
    v1::GetRelayRequest req;
    req.set_name(relay_name);
    v1::Relay r;
    grpc::Status s = v1::RelayService::NewStub(c.channel())->GetRelay(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot show relay \"" + relay_name + "\"");
    return c.Show(r, [&] { PrintRelay(r); });
  });
  auto* r_create = relay->add_subcommand("create", "Register a relay on a hub, so others reach this node through it");
  r_create->add_option("hub-route", relay_hub, "The hub's route, e.g. /tcp/hub.example:4000")->required();
  r_create->add_option("--name", relay_name, "Its name on the hub (default: the hub picks one)");
  r_create->add_option("--identity", relay_identity, "The identity that owns it")->default_val("default");
  hub_trust.Add(r_create, "the hub may be (default: everyone)");
  on(r_create, [&](Client& c) {
    v1::CreateRelayRequest req;
    req.set_hub_route(relay_hub);
    req.set_name(relay_name);
    req.set_identity(relay_identity);
    if (!hub_trust.Empty()) *req.mutable_hub_trust_policy() = hub_trust.Policy();
    v1::Relay r;
    grpc::Status s = v1::RelayService::NewStub(c.channel())->CreateRelay(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot create a relay on " + relay_hub);
    return c.Show(r, [&] {
      std::cout << "[✓] relay " << r.name() << " is up on " << r.hub_route() << "\n"
                << "others reach this node's workers at " << r.route() << "/service/<worker>\n";
    });
  });
  auto* r_delete = relay->add_subcommand("delete", "Unregister and forget a relay");
  r_delete->add_option("name", relay_name, "Its name")->required();
  on(r_delete, [&](Client& c) {
    v1::DeleteRelayRequest req;
    req.set_name(relay_name);
    v1::DeleteRelayResponse r;
    grpc::Status s = v1::RelayService::NewStub(c.channel())->DeleteRelay(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot delete relay \"" + relay_name + "\"");
    return c.Show(r, [&] { std::cout << "deleted relay " << relay_name << "\n"; });
  });
  on(relay->add_subcommand("hosted", "On a hub: the relays it hosts"), [](Client& c) {
    v1::ListHostedRelaysResponse r;
    grpc::Status s = v1::RelayService::NewStub(c.channel())->ListHostedRelays(c.Context().get(), {}, &r);
    if (!s.ok()) return c.Fail(s, "cannot list hosted relays");
    return c.Show(r, [&] {
      Table t({"NAME", "ADDRESS", "OWNER", "CONNECTION"});
      for (const auto& x : r.relays()) t.Add({x.name(), x.address(), x.owner(), x.connection()});
      t.Print();
    });
  });

  // send
  std::string send_route, send_message;
  bool send_request = false;
  auto* send = app.add_subcommand(
      "send", "Send a message to a route; with --request, wait for the reply and print it");
  send->add_option("route", send_route, "e.g. /service/_sc_5d1cE7a9b3F/service/echoer")->required();
  send->add_option("message", send_message, "The payload; - or nothing reads stdin");
  send->add_flag("--request,-r", send_request, "Wait for one reply and print its payload");
  on(send, [&](Client& c) {
    std::string payload = send_message.empty() || send_message == "-" ? ReadStdin() : send_message;
    auto stub = v1::MessagingService::NewStub(c.channel());
    if (send_request) {
      v1::RequestRequest req;
      req.mutable_message()->set_route(send_route);
      req.mutable_message()->set_payload(payload);
      v1::RequestResponse r;
      grpc::Status s = stub->Request(c.Context().get(), req, &r);
      if (!s.ok()) return c.Fail(s, "no reply from " + send_route);
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
    m->set_route(send_route);
    m->set_payload(payload);
    v1::SendResponse r;
    grpc::Status s = stub->Send(c.Context().get(), req, &r);
    if (!s.ok()) return c.Fail(s, "cannot send to " + send_route);
    return c.Show(r, [&] { std::cout << "sent " << payload.size() << " bytes to " << send_route << "\n"; });
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kUsage;
  }
  Client client(g);
  return action ? action(client) : static_cast<int>(kUsage);
}

}  // namespace
}  // namespace veil::cli

int main(int argc, char** argv) {
  veil::sdk::TuneMalloc();
  return veil::cli::Run(argc, argv);
}
