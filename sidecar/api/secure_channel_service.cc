#include "sidecar/api/secure_channel_service.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "sidecar/api/grpc_status.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/identity/identity.h"

namespace veil::api {
namespace {

constexpr uint32_t kDefaultTimeoutMs = 10000;
constexpr uint32_t kMaxTimeoutMs = 120000;
constexpr int kMaxPolicyDepth = 8;

absl::Status BadPolicy(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument, why, reason::kInvalidTrustPolicy);
}

void ToProto(const channel::ListenerInfo& info, v1::SecureChannelListener& out) {
  out.set_address(info.address);
  out.set_identity(info.identity);
  out.set_identifier(info.identifier);
  out.set_trust_policy(info.trust_policy);
}

void ToProto(const channel::ChannelInfo& info, v1::SecureChannel& out) {
  out.set_address(info.address);
  out.set_route(core::Address::Local(info.address).ToString());
  out.set_role(info.initiator ? v1::SecureChannel::INITIATOR : v1::SecureChannel::RESPONDER);
  switch (info.state) {
    case channel::ChannelInfo::State::kHandshaking:
      out.set_state(v1::SecureChannel::HANDSHAKING);
      break;
    case channel::ChannelInfo::State::kEstablished:
      out.set_state(v1::SecureChannel::ESTABLISHED);
      break;
    case channel::ChannelInfo::State::kClosed:
      out.set_state(v1::SecureChannel::CLOSED);
      break;
  }
  out.set_identity(info.identity);
  out.set_local_identifier(info.local_identifier);
  out.set_remote_identifier(info.remote_identifier);
  out.set_remote_route(info.remote_route);
  out.set_listener(info.listener);
  out.set_trust_policy(info.trust_policy);
  out.set_messages_sent(info.messages_sent);
  out.set_messages_received(info.messages_received);
  out.set_decrypt_failures(info.decrypt_failures);
  out.set_replays_rejected(info.replays_rejected);
  out.set_queued_bytes(info.queued_bytes);
  if (info.send_credit != std::numeric_limits<uint64_t>::max()) {
    out.set_send_credit_bytes(info.send_credit);
  }
  if (info.remote_attributes != nullptr) {
    out.mutable_remote_attributes()->insert(info.remote_attributes->begin(),
                                            info.remote_attributes->end());
  }
  out.set_remote_credentials_expire_time(info.remote_credentials_expire_at);
}

using identity::IdentityOrDefault;

}  // namespace

absl::StatusOr<std::unique_ptr<channel::TrustPolicy>> ToTrustPolicy(
    const v1::TrustPolicy& policy, const identity::IdentityStore& identities, int depth) {
  if (depth > kMaxPolicyDepth) return BadPolicy("trust policies nest at most 8 deep");
  auto combine = [&](const v1::TrustPolicy::Policies& parts,
                     bool all) -> absl::StatusOr<std::unique_ptr<channel::TrustPolicy>> {
    std::vector<std::unique_ptr<channel::TrustPolicy>> converted;
    for (const auto& part : parts.policies()) {
      auto p = ToTrustPolicy(part, identities, depth + 1);
      if (!p.ok()) return p.status();
      converted.push_back(*std::move(p));
    }
    return all ? channel::AllOf(std::move(converted)) : channel::AnyOf(std::move(converted));
  };
  switch (policy.policy_case()) {
    case v1::TrustPolicy::kTrustEveryone:
      if (!policy.trust_everyone()) return BadPolicy("trust_everyone must be true when set");
      return channel::TrustEveryone();
    case v1::TrustPolicy::kTrustIdentifier:
      return channel::TrustIdentifiers({policy.trust_identifier()});
    case v1::TrustPolicy::kTrustIdentifiers:
      return channel::TrustIdentifiers({policy.trust_identifiers().identifiers().begin(),
                                        policy.trust_identifiers().identifiers().end()});
    case v1::TrustPolicy::kTrustIdentifiersFile:
      return channel::TrustIdentifiersFile(policy.trust_identifiers_file());
    case v1::TrustPolicy::kTrustImported:
      if (!policy.trust_imported()) return BadPolicy("trust_imported must be true when set");
      return channel::TrustImported(identities);
    case v1::TrustPolicy::kAnyOf:
      return combine(policy.any_of(), false);
    case v1::TrustPolicy::kAllOf:
      return combine(policy.all_of(), true);
    case v1::TrustPolicy::kExpression:
      return channel::TrustExpression(policy.expression());
    case v1::TrustPolicy::POLICY_NOT_SET:
      break;
  }
  return BadPolicy(
      "a trust policy is required: set one of trust_everyone, trust_identifier, "
      "trust_identifiers, trust_identifiers_file, trust_imported, any_of, all_of, expression");
}

absl::StatusOr<channel::ListenerInfo> CreateListenerFrom(
    const v1::CreateSecureChannelListenerRequest& request,
    const identity::IdentityStore& identities, channel::SecureChannelManager& channels) {
  auto policy = ToTrustPolicy(request.trust_policy(), identities);
  if (!policy.ok()) return policy.status();
  return channels.CreateListener(request.address(), IdentityOrDefault(request.identity()),
                                 *std::move(policy), request.exist_ok());
}

grpc::ServerUnaryReactor* SecureChannelService::CreateSecureChannelListener(
    grpc::CallbackServerContext* context, const v1::CreateSecureChannelListenerRequest* request,
    v1::SecureChannelListener* response) {
  auto info = CreateListenerFrom(*request, identities_, channels_);
  if (info.ok()) ToProto(*info, *response);
  return FinishUnary(context, info.status());
}

grpc::ServerUnaryReactor* SecureChannelService::ListSecureChannelListeners(
    grpc::CallbackServerContext* context, const v1::ListSecureChannelListenersRequest* request,
    v1::ListSecureChannelListenersResponse* response) {
  for (const auto& info : channels_.ListListeners()) ToProto(info, *response->add_listeners());
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* SecureChannelService::DeleteSecureChannelListener(
    grpc::CallbackServerContext* context, const v1::DeleteSecureChannelListenerRequest* request,
    v1::DeleteSecureChannelListenerResponse* response) {
  return FinishUnary(context, channels_.DeleteListener(request->address()));
}

grpc::ServerUnaryReactor* SecureChannelService::CreateSecureChannel(
    grpc::CallbackServerContext* context, const v1::CreateSecureChannelRequest* request,
    v1::SecureChannel* response) {
  auto route = core::Route::Parse(request->route());
  if (!route.ok()) return FinishUnary(context, route.status());
  auto policy = ToTrustPolicy(request->trust_policy(), identities_);
  if (!policy.ok()) return FinishUnary(context, policy.status());
  uint32_t timeout_ms = request->timeout_ms() == 0 ? kDefaultTimeoutMs
                                                   : std::min(request->timeout_ms(), kMaxTimeoutMs);
  auto until_deadline = std::chrono::duration_cast<std::chrono::milliseconds>(
      context->deadline() - std::chrono::system_clock::now());
  auto timeout = std::max(std::chrono::milliseconds(1),
                          std::min(std::chrono::milliseconds(timeout_ms), until_deadline));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  channels_.CreateChannel(*route, IdentityOrDefault(request->identity()), *std::move(policy),
                          timeout, [reactor, response](absl::StatusOr<channel::ChannelInfo> info) {
                            if (info.ok()) ToProto(*info, *response);
                            reactor->Finish(ToGrpcStatus(info.status()));
                          });
  return reactor;
}

grpc::ServerUnaryReactor* SecureChannelService::GetSecureChannel(
    grpc::CallbackServerContext* context, const v1::GetSecureChannelRequest* request,
    v1::SecureChannel* response) {
  auto info = channels_.GetChannel(request->address());
  if (info.ok()) ToProto(*info, *response);
  return FinishUnary(context, info.status());
}

grpc::ServerUnaryReactor* SecureChannelService::ListSecureChannels(
    grpc::CallbackServerContext* context, const v1::ListSecureChannelsRequest* request,
    v1::ListSecureChannelsResponse* response) {
  for (const auto& info : channels_.ListChannels()) ToProto(info, *response->add_channels());
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* SecureChannelService::DeleteSecureChannel(
    grpc::CallbackServerContext* context, const v1::DeleteSecureChannelRequest* request,
    v1::DeleteSecureChannelResponse* response) {
  return FinishUnary(context, channels_.DeleteChannel(request->address()));
}

}  // namespace veil::api
