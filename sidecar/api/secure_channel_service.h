// SecureChannelService: veil.v1.SecureChannelService over the node's SecureChannelManager,
// converting API trust policies into channel::TrustPolicy at this boundary.
//
// Thread-safety: gRPC calls it from its own threads; the manager is thread-safe.
#ifndef VEIL_SIDECAR_API_SECURE_CHANNEL_SERVICE_H_
#define VEIL_SIDECAR_API_SECURE_CHANNEL_SERVICE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "sidecar/channel/secure_channel_manager.h"
#include "veil/v1/secure_channel.grpc.pb.h"

namespace veil::api {

// The channel policy for an API policy. INVALID_ARGUMENT (INVALID_TRUST_POLICY) when none is
// set or a part is invalid; nesting is limited to 8 levels.
absl::StatusOr<std::unique_ptr<channel::TrustPolicy>> ToTrustPolicy(
    const v1::TrustPolicy& policy, const identity::IdentityStore& identities, int depth = 0);

// Creates the listener a CreateSecureChannelListenerRequest asks for (the API's and the
// config's one way): its trust policy converted, the default identity when it names none.
absl::StatusOr<channel::ListenerInfo> CreateListenerFrom(
    const v1::CreateSecureChannelListenerRequest& request,
    const identity::IdentityStore& identities, channel::SecureChannelManager& channels);

class SecureChannelService final : public v1::SecureChannelService::CallbackService {
 public:
  // `channels` and `identities` must outlive the service.
  SecureChannelService(channel::SecureChannelManager& channels,
                       const identity::IdentityStore& identities)
      : channels_(channels), identities_(identities) {}

  grpc::ServerUnaryReactor* CreateSecureChannelListener(
      grpc::CallbackServerContext* context, const v1::CreateSecureChannelListenerRequest* request,
      v1::SecureChannelListener* response) override;
  grpc::ServerUnaryReactor* ListSecureChannelListeners(
      grpc::CallbackServerContext* context, const v1::ListSecureChannelListenersRequest* request,
      v1::ListSecureChannelListenersResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSecureChannelListener(
      grpc::CallbackServerContext* context, const v1::DeleteSecureChannelListenerRequest* request,
      v1::DeleteSecureChannelListenerResponse* response) override;
  grpc::ServerUnaryReactor* CreateSecureChannel(grpc::CallbackServerContext* context,
                                                const v1::CreateSecureChannelRequest* request,
                                                v1::SecureChannel* response) override;
  grpc::ServerUnaryReactor* GetSecureChannel(grpc::CallbackServerContext* context,
                                             const v1::GetSecureChannelRequest* request,
                                             v1::SecureChannel* response) override;
  grpc::ServerUnaryReactor* ListSecureChannels(grpc::CallbackServerContext* context,
                                               const v1::ListSecureChannelsRequest* request,
                                               v1::ListSecureChannelsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSecureChannel(grpc::CallbackServerContext* context,
                                                const v1::DeleteSecureChannelRequest* request,
                                                v1::DeleteSecureChannelResponse* response) override;

 private:
  channel::SecureChannelManager& channels_;
  const identity::IdentityStore& identities_;
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_SECURE_CHANNEL_SERVICE_H_
