// PortalService: veil.v1.PortalService over the node's PortalManager (inlets and outlets),
// converting API requests at this boundary. CreateOutletFrom / CreateInletFrom are also how the
// declarative config creates them (one reading of each request).
//
// Thread-safety: gRPC calls it from its own threads; the manager is thread-safe.
#ifndef VEIL_SIDECAR_API_PORTAL_SERVICE_H_
#define VEIL_SIDECAR_API_PORTAL_SERVICE_H_

#include "absl/status/statusor.h"
#include "sidecar/identity/identity_store.h"
#include "sidecar/portal/portal_manager.h"
#include "veil/v1/portal.grpc.pb.h"

namespace veil::api {

absl::StatusOr<portal::OutletInfo> CreateOutletFrom(const v1::CreateOutletRequest& request,
                                                    const identity::IdentityStore& identities,
                                                    portal::PortalManager& portals);
absl::StatusOr<portal::InletInfo> CreateInletFrom(const v1::CreateInletRequest& request,
                                                  const identity::IdentityStore& identities,
                                                  portal::PortalManager& portals);

void ToProto(const portal::OutletInfo& info, v1::Outlet& out);
void ToProto(const portal::InletInfo& info, v1::Inlet& out);

class PortalService final : public v1::PortalService::CallbackService {
 public:
  // `portals` and `identities` must outlive the service.
  PortalService(portal::PortalManager& portals, const identity::IdentityStore& identities)
      : portals_(portals), identities_(identities) {}

  grpc::ServerUnaryReactor* CreateOutlet(grpc::CallbackServerContext* context,
                                         const v1::CreateOutletRequest* request,
                                         v1::Outlet* response) override;
  grpc::ServerUnaryReactor* ListOutlets(grpc::CallbackServerContext* context,
                                        const v1::ListOutletsRequest* request,
                                        v1::ListOutletsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteOutlet(grpc::CallbackServerContext* context,
                                         const v1::DeleteOutletRequest* request,
                                         v1::DeleteOutletResponse* response) override;
  grpc::ServerUnaryReactor* CreateInlet(grpc::CallbackServerContext* context,
                                        const v1::CreateInletRequest* request,
                                        v1::Inlet* response) override;
  grpc::ServerUnaryReactor* ListInlets(grpc::CallbackServerContext* context,
                                       const v1::ListInletsRequest* request,
                                       v1::ListInletsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteInlet(grpc::CallbackServerContext* context,
                                        const v1::DeleteInletRequest* request,
                                        v1::DeleteInletResponse* response) override;

 private:
  portal::PortalManager& portals_;
  const identity::IdentityStore& identities_;
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_PORTAL_SERVICE_H_
