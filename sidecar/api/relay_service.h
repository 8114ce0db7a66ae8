// RelayService: veil.v1.RelayService over the sidecar's RelayClients and, on a hub, its
// RelayHub.
//
// Thread-safety: gRPC calls it from its own threads; what it wraps is thread-safe.
#ifndef VEIL_SIDECAR_API_RELAY_SERVICE_H_
#define VEIL_SIDECAR_API_RELAY_SERVICE_H_

#include "sidecar/relay/relay_clients.h"
#include "sidecar/relay/relay_hub.h"
#include "veil/v1/relay.grpc.pb.h"

namespace veil::api {

// What a CreateRelayRequest asks for (the API's and the config's one reading): the hub route,
// the name, the identity (the default when it names none, and it must exist) and the trust
// policy for the hub (anyone when it sets none).
struct RelayRequestArgs {
  core::Route hub_route;
  std::string name;
  std::string identity;
  std::unique_ptr<channel::TrustPolicy> hub_policy;
};
absl::StatusOr<RelayRequestArgs> ReadRelayRequest(const v1::CreateRelayRequest& request,
                                                  const identity::IdentityStore& identities);

class RelayService final : public v1::RelayService::CallbackService {
 public:
  // `hub` is null unless this node is a hub. All must outlive the service.
  RelayService(relay::RelayClients& clients, relay::RelayHub* hub,
               const identity::IdentityStore& identities)
      : clients_(clients), hub_(hub), identities_(identities) {}

  grpc::ServerUnaryReactor* CreateRelay(grpc::CallbackServerContext* context,
                                        const v1::CreateRelayRequest* request,
                                        v1::Relay* response) override;
  grpc::ServerUnaryReactor* GetRelay(grpc::CallbackServerContext* context,
                                     const v1::GetRelayRequest* request,
                                     v1::Relay* response) override;
  grpc::ServerUnaryReactor* ListRelays(grpc::CallbackServerContext* context,
                                       const v1::ListRelaysRequest* request,
                                       v1::ListRelaysResponse* response) override;
  grpc::ServerUnaryReactor* DeleteRelay(grpc::CallbackServerContext* context,
                                        const v1::DeleteRelayRequest* request,
                                        v1::DeleteRelayResponse* response) override;
  grpc::ServerUnaryReactor* ListHostedRelays(grpc::CallbackServerContext* context,
                                             const v1::ListHostedRelaysRequest* request,
                                             v1::ListHostedRelaysResponse* response) override;
  grpc::ServerUnaryReactor* ReleaseRelayName(grpc::CallbackServerContext* context,
                                             const v1::ReleaseRelayNameRequest* request,
                                             v1::ReleaseRelayNameResponse* response) override;

 private:
  relay::RelayClients& clients_;
  relay::RelayHub* hub_;
  const identity::IdentityStore& identities_;
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_RELAY_SERVICE_H_
