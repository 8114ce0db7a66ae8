#include "sidecar/api/identity_service.h"

#include "sidecar/api/grpc_status.h"

namespace veil::api {
namespace {

void ToProto(const identity::Identity& id, v1::Identity& out) {
  out.set_name(id.name());
  out.mutable_public_identity()->set_identifier(id.identifier());
  out.mutable_public_identity()->set_public_key(id.public_key());
  out.mutable_create_time()->set_seconds(id.created_unix_seconds());
  std::shared_ptr<const identity::IdentityKeys> keys = id.keys();
  out.set_current_public_key(keys->public_key());
  out.set_key_changes(static_cast<uint32_t>(keys->history().changes()));
  if (keys->history().changes() > 0) {
    out.mutable_rotate_time()->set_seconds(keys->history().changed_at);
  }
}

void ToProto(const identity::TrustedIdentity& t, v1::TrustedIdentity& out) {
  out.mutable_public_identity()->set_identifier(t.identifier);
  out.mutable_public_identity()->set_public_key(t.public_key);
  out.set_label(t.label);
  out.mutable_add_time()->set_seconds(t.added_unix_seconds);
}

}  // namespace

grpc::ServerUnaryReactor* IdentityService::CreateIdentity(grpc::CallbackServerContext* context,
                                                          const v1::CreateIdentityRequest* request,
                                                          v1::Identity* response) {
  auto id = store_.Create(request->name());
  if (id.ok()) ToProto(**id, *response);
  return FinishUnary(context, id.status());
}

grpc::ServerUnaryReactor* IdentityService::GetIdentity(grpc::CallbackServerContext* context,
                                                       const v1::GetIdentityRequest* request,
                                                       v1::Identity* response) {
  auto id = store_.Get(request->name());
  if (id.ok()) ToProto(**id, *response);
  return FinishUnary(context, id.status());
}

grpc::ServerUnaryReactor* IdentityService::ListIdentities(grpc::CallbackServerContext* context,
                                                          const v1::ListIdentitiesRequest* request,
                                                          v1::ListIdentitiesResponse* response) {
  for (const auto& id : store_.List()) ToProto(*id, *response->add_identities());
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* IdentityService::DeleteIdentity(grpc::CallbackServerContext* context,
                                                          const v1::DeleteIdentityRequest* request,
                                                          v1::DeleteIdentityResponse* response) {
  return FinishUnary(context, store_.Delete(request->name()));
}

grpc::ServerUnaryReactor* IdentityService::RotateIdentity(grpc::CallbackServerContext* context,
                                                          const v1::RotateIdentityRequest* request,
                                                          v1::Identity* response) {
  auto id = store_.Rotate(request->name());
  if (id.ok()) ToProto(**id, *response);
  return FinishUnary(context, id.status());
}

grpc::ServerUnaryReactor* IdentityService::ImportTrustedIdentity(
    grpc::CallbackServerContext* context, const v1::ImportTrustedIdentityRequest* request,
    v1::TrustedIdentity* response) {
  auto t = store_.ImportTrusted(request->public_identity().identifier(),
                                request->public_identity().public_key(), request->label());
  if (t.ok()) ToProto(*t, *response);
  return FinishUnary(context, t.status());
}

grpc::ServerUnaryReactor* IdentityService::ListTrustedIdentities(
    grpc::CallbackServerContext* context, const v1::ListTrustedIdentitiesRequest* request,
    v1::ListTrustedIdentitiesResponse* response) {
  for (const auto& t : store_.ListTrusted()) ToProto(t, *response->add_trusted_identities());
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* IdentityService::DeleteTrustedIdentity(
    grpc::CallbackServerContext* context, const v1::DeleteTrustedIdentityRequest* request,
    v1::DeleteTrustedIdentityResponse* response) {
  return FinishUnary(context, store_.DeleteTrusted(request->identifier()));
}

}  // namespace veil::api
