#include "sidecar/api/portal_service.h"

#include "sidecar/api/grpc_status.h"
#include "sidecar/api/secure_channel_service.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/identity/identity.h"

namespace veil::api {
namespace {

void ToProto(const portal::CounterValues& c, v1::PortalCounters& out) {
  out.set_sessions_active(c.active);
  out.set_sessions_total(c.total);
  out.set_sessions_reset(c.reset);
  out.set_sessions_refused(c.refused);
  out.set_bytes_in(c.bytes_in);
  out.set_bytes_out(c.bytes_out);
}

}  // namespace

void ToProto(const portal::OutletInfo& info, v1::Outlet& out) {
  out.set_name(info.name);
  out.set_target(info.target);
  out.set_trust_policy(info.trust_policy);
  out.set_idle_timeout_ms(info.idle_timeout_ms);
  ToProto(info.counters, *out.mutable_counters());
}

void ToProto(const portal::InletInfo& info, v1::Inlet& out) {
  out.set_listen_address(info.listen_address);
  out.set_route(info.route);
  out.set_outlet(info.outlet);
  out.set_identity(info.identity);
  out.set_trust_policy(info.trust_policy);
  out.set_idle_timeout_ms(info.idle_timeout_ms);
  out.set_channel(info.channel);
  ToProto(info.counters, *out.mutable_counters());
}

absl::StatusOr<portal::OutletInfo> CreateOutletFrom(const v1::CreateOutletRequest& request,
                                                    const identity::IdentityStore& identities,
                                                    portal::PortalManager& portals) {
  auto policy = ToTrustPolicy(request.trust_policy(), identities);
  if (!policy.ok()) return policy.status();
  return portals.CreateOutlet(request.name(), request.target(), *std::move(policy),
                              request.idle_timeout_ms(), request.exist_ok());
}

absl::StatusOr<portal::InletInfo> CreateInletFrom(const v1::CreateInletRequest& request,
                                                  const identity::IdentityStore& identities,
                                                  portal::PortalManager& portals) {
  auto route = core::Route::Parse(request.route());
  if (!route.ok()) return route.status();
  const std::string identity = identity::IdentityOrDefault(request.identity());
  if (auto found = identities.Get(identity); !found.ok()) return found.status();
  v1::TrustPolicy everyone;
  everyone.set_trust_everyone(true);
  auto policy =
      ToTrustPolicy(request.has_trust_policy() ? request.trust_policy() : everyone, identities);
  if (!policy.ok()) return policy.status();
  return portals.CreateInlet(request.listen_address(), *route, request.outlet(), identity,
                             *std::move(policy), request.allow_public(), request.idle_timeout_ms(),
                             request.exist_ok());
}

grpc::ServerUnaryReactor* PortalService::CreateOutlet(grpc::CallbackServerContext* context,
                                                      const v1::CreateOutletRequest* request,
                                                      v1::Outlet* response) {
  auto info = CreateOutletFrom(*request, identities_, portals_);
  if (info.ok()) ToProto(*info, *response);
  return FinishUnary(context, info.status());
}

grpc::ServerUnaryReactor* PortalService::ListOutlets(grpc::CallbackServerContext* context,
                                                     const v1::ListOutletsRequest* request,
                                                     v1::ListOutletsResponse* response) {
  for (const auto& info : portals_.ListOutlets()) ToProto(info, *response->add_outlets());
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* PortalService::DeleteOutlet(grpc::CallbackServerContext* context,
                                                      const v1::DeleteOutletRequest* request,
                                                      v1::DeleteOutletResponse* response) {
  return FinishUnary(context, portals_.DeleteOutlet(request->name()));
}

grpc::ServerUnaryReactor* PortalService::CreateInlet(grpc::CallbackServerContext* context,
                                                     const v1::CreateInletRequest* request,
                                                     v1::Inlet* response) {
  auto info = CreateInletFrom(*request, identities_, portals_);
  if (info.ok()) ToProto(*info, *response);
  return FinishUnary(context, info.status());
}

grpc::ServerUnaryReactor* PortalService::ListInlets(grpc::CallbackServerContext* context,
                                                    const v1::ListInletsRequest* request,
                                                    v1::ListInletsResponse* response) {
  for (const auto& info : portals_.ListInlets()) ToProto(info, *response->add_inlets());
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* PortalService::DeleteInlet(grpc::CallbackServerContext* context,
                                                     const v1::DeleteInletRequest* request,
                                                     v1::DeleteInletResponse* response) {
  return FinishUnary(context, portals_.DeleteInlet(request->listen_address()));
}

}  // namespace veil::api
