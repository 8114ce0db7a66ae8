// IdentityService: veil.v1.IdentityService over the node's IdentityStore. Returns public parts
// only: no response carries a private key.
//
// Thread-safety: gRPC calls it from its own threads; the store is thread-safe.
#ifndef VEIL_SIDECAR_API_IDENTITY_SERVICE_H_
#define VEIL_SIDECAR_API_IDENTITY_SERVICE_H_

#include "sidecar/identity/identity_store.h"
#include "veil/v1/identity.grpc.pb.h"

namespace veil::api {

class IdentityService final : public v1::IdentityService::CallbackService {
 public:
  // `store` must outlive the service.
  explicit IdentityService(identity::IdentityStore& store) : store_(store) {}

  grpc::ServerUnaryReactor* CreateIdentity(grpc::CallbackServerContext* context,
                                           const v1::CreateIdentityRequest* request,
                                           v1::Identity* response) override;
  grpc::ServerUnaryReactor* GetIdentity(grpc::CallbackServerContext* context,
                                        const v1::GetIdentityRequest* request,
                                        v1::Identity* response) override;
  grpc::ServerUnaryReactor* ListIdentities(grpc::CallbackServerContext* context,
                                           const v1::ListIdentitiesRequest* request,
                                           v1::ListIdentitiesResponse* response) override;
  grpc::ServerUnaryReactor* DeleteIdentity(grpc::CallbackServerContext* context,
                                           const v1::DeleteIdentityRequest* request,
                                           v1::DeleteIdentityResponse* response) override;
  grpc::ServerUnaryReactor* RotateIdentity(grpc::CallbackServerContext* context,
                                           const v1::RotateIdentityRequest* request,
                                           v1::Identity* response) override;
  grpc::ServerUnaryReactor* ImportTrustedIdentity(grpc::CallbackServerContext* context,
                                                  const v1::ImportTrustedIdentityRequest* request,
                                                  v1::TrustedIdentity* response) override;
  grpc::ServerUnaryReactor* ListTrustedIdentities(
      grpc::CallbackServerContext* context, const v1::ListTrustedIdentitiesRequest* request,
      v1::ListTrustedIdentitiesResponse* response) override;
  grpc::ServerUnaryReactor* DeleteTrustedIdentity(
      grpc::CallbackServerContext* context, const v1::DeleteTrustedIdentityRequest* request,
      v1::DeleteTrustedIdentityResponse* response) override;

 private:
  identity::IdentityStore& store_;
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_IDENTITY_SERVICE_H_
