#include "sidecar/api/relay_service.h"

#include "absl/strings/str_cat.h"
#include "sidecar/api/grpc_status.h"
#include "sidecar/api/secure_channel_service.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/identity/identity.h"

namespace veil::api {
namespace {

void ToProto(const relay::RelayStatus& s, v1::Relay& out) {
  out.set_name(s.name);
  out.set_address(s.address);
  out.set_hub_route(s.hub_route);
  if (!s.address.empty()) {
    out.set_route(s.hub_route + core::Address::Local(s.address).ToString());
  }
  switch (s.state) {
    case relay::RelayStatus::State::kConnecting:
      out.set_state(v1::Relay::CONNECTING);
      break;
    case relay::RelayStatus::State::kUp:
      out.set_state(v1::Relay::UP);
      break;
    case relay::RelayStatus::State::kReconnecting:
      out.set_state(v1::Relay::RECONNECTING);
      break;
    case relay::RelayStatus::State::kFailed:
    case relay::RelayStatus::State::kStopped:
      out.set_state(v1::Relay::FAILED);
      break;
  }
  out.set_last_error(s.last_error);
  out.set_identity(s.identity);
  out.set_hub_identifier(s.hub_identifier);
  out.set_registrations(s.registrations);
}

}  // namespace

absl::StatusOr<RelayRequestArgs> ReadRelayRequest(const v1::CreateRelayRequest& request,
                                                  const identity::IdentityStore& identities) {
  RelayRequestArgs args;
  auto route = core::Route::Parse(request.hub_route());
  if (!route.ok()) return route.status();
  args.hub_route = *std::move(route);
  args.name = request.name();
  args.identity = identity::IdentityOrDefault(request.identity());
  if (absl::Status known = identities.Get(args.identity).status(); !known.ok()) return known;
  if (request.has_hub_trust_policy()) {
    auto converted = ToTrustPolicy(request.hub_trust_policy(), identities);
    if (!converted.ok()) return converted.status();
    args.hub_policy = *std::move(converted);
  } else {
    args.hub_policy = channel::TrustEveryone();
  }
  return args;
}

grpc::ServerUnaryReactor* RelayService::CreateRelay(grpc::CallbackServerContext* context,
                                                    const v1::CreateRelayRequest* request,
                                                    v1::Relay* response) {
  auto args = ReadRelayRequest(*request, identities_);
  if (!args.ok()) return FinishUnary(context, args.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  clients_.Create(
      args->hub_route, args->name, args->identity, std::move(args->hub_policy),
      [reactor, response](absl::StatusOr<relay::RelayStatus> status) {
        if (status.ok()) ToProto(*status, *response);
        reactor->Finish(ToGrpcStatus(status.status()));
      },
      request->exist_ok());
  return reactor;
}

grpc::ServerUnaryReactor* RelayService::GetRelay(grpc::CallbackServerContext* context,
                                                 const v1::GetRelayRequest* request,
                                                 v1::Relay* response) {
  auto status = clients_.Get(request->name());
  if (status.ok()) ToProto(*status, *response);
  return FinishUnary(context, status.status());
}

grpc::ServerUnaryReactor* RelayService::ListRelays(grpc::CallbackServerContext* context,
                                                   const v1::ListRelaysRequest* request,
                                                   v1::ListRelaysResponse* response) {
  for (const auto& s : clients_.List()) ToProto(s, *response->add_relays());
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* RelayService::DeleteRelay(grpc::CallbackServerContext* context,
                                                    const v1::DeleteRelayRequest* request,
                                                    v1::DeleteRelayResponse* response) {
  return FinishUnary(context, clients_.Delete(request->name()));
}

grpc::ServerUnaryReactor* RelayService::ListHostedRelays(grpc::CallbackServerContext* context,
                                                         const v1::ListHostedRelaysRequest* request,
                                                         v1::ListHostedRelaysResponse* response) {
  if (hub_ == nullptr) {
    return FinishUnary(context, ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                                                "this node is not a hub (start veild with --hub)",
                                                reason::kNotAHub));
  }
  for (const auto& entry : hub_->List()) {
    v1::HostedRelay* r = response->add_relays();
    r->set_name(entry.name);
    r->set_address(absl::StrCat(relay::kForwarderPrefix, entry.name));
    r->set_owner(entry.owner);
    r->set_connection(entry.connection);
  }
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* RelayService::ReleaseRelayName(grpc::CallbackServerContext* context,
                                                         const v1::ReleaseRelayNameRequest* request,
                                                         v1::ReleaseRelayNameResponse*) {
  if (hub_ == nullptr) {
    return FinishUnary(context, ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                                                "this node is not a hub (start veild with --hub)",
                                                reason::kNotAHub));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  hub_->Release(request->name(),
                [reactor](absl::Status released) { reactor->Finish(ToGrpcStatus(released)); });
  return reactor;
}

}  // namespace veil::api
