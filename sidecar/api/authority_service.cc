#include "sidecar/api/authority_service.h"

#include "absl/strings/str_cat.h"
#include "sidecar/api/grpc_status.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/identity/identity.h"

namespace veil::api {
namespace {

constexpr int64_t kDefaultTicketTtlSeconds = 600;

void ToProto(const authority::Member& member, v1::Member& out) {
  out.set_identifier(member.identifier);
  out.mutable_attributes()->insert(member.attributes.begin(), member.attributes.end());
  out.set_added_unix_seconds(member.added_unix_seconds);
  out.set_ticket(member.ticket);
}

void ToProto(const authority::Ticket& ticket, v1::Ticket& out) {
  out.set_id(ticket.id);
  out.mutable_attributes()->insert(ticket.attributes.begin(), ticket.attributes.end());
  out.set_created_unix_seconds(ticket.created_unix_seconds);
  out.set_expires_unix_seconds(ticket.expires_unix_seconds);
  out.set_used_by(ticket.used_by);
  out.set_revoked(ticket.revoked);
}

void ToProto(const authority::MembershipInfo& info, v1::Membership& out) {
  out.set_authority(info.authority);
  out.set_route(info.route);
  out.set_identity(info.identity);
  out.set_identifier(info.identifier);
  out.set_enrolled(info.enrolled);
  out.mutable_attributes()->insert(info.attributes.begin(), info.attributes.end());
  out.set_issued_unix_seconds(info.issued_at);
  out.set_expires_unix_seconds(info.expires_at);
  out.set_refreshes(info.refreshes);
  out.set_last_error(info.last_error);
}

identity::Attributes FromProto(const google::protobuf::Map<std::string, std::string>& map) {
  return identity::Attributes(map.begin(), map.end());
}

}  // namespace

absl::Status AuthorityService::NeedAuthority() const {
  if (authority_ != nullptr) return absl::OkStatus();
  return ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                         "this node is not a credential authority (start it with --authority)",
                         reason::kNotAnAuthority);
}

grpc::ServerUnaryReactor* AuthorityService::GetAuthority(grpc::CallbackServerContext* context,
                                                         const v1::GetAuthorityRequest*,
                                                         v1::Authority* response) {
  if (absl::Status s = NeedAuthority(); !s.ok()) return FinishUnary(context, s);
  response->set_identifier(authority_->identifier());
  response->set_credential_ttl_seconds(authority_->options().credential_ttl_seconds);
  response->set_route(authority_->options().advertised_route);
  response->set_members(static_cast<uint32_t>(authority_->store().ListMembers().size()));
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthorityService::AddMember(grpc::CallbackServerContext* context,
                                                      const v1::AddMemberRequest* request,
                                                      v1::Member* response) {
  if (absl::Status s = NeedAuthority(); !s.ok()) return FinishUnary(context, s);
  auto member = authority_->store().PutMember(request->identifier(),
                                              FromProto(request->attributes()), authority_->Now());
  if (member.ok()) ToProto(*member, *response);
  return FinishUnary(context, member.status());
}

grpc::ServerUnaryReactor* AuthorityService::ListMembers(grpc::CallbackServerContext* context,
                                                        const v1::ListMembersRequest*,
                                                        v1::ListMembersResponse* response) {
  if (absl::Status s = NeedAuthority(); !s.ok()) return FinishUnary(context, s);
  for (const auto& member : authority_->store().ListMembers()) {
    ToProto(member, *response->add_members());
  }
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthorityService::RemoveMember(grpc::CallbackServerContext* context,
                                                         const v1::RemoveMemberRequest* request,
                                                         v1::RemoveMemberResponse*) {
  if (absl::Status s = NeedAuthority(); !s.ok()) return FinishUnary(context, s);
  return FinishUnary(context, authority_->store().RemoveMember(request->identifier()));
}

grpc::ServerUnaryReactor* AuthorityService::CreateTicket(grpc::CallbackServerContext* context,
                                                         const v1::CreateTicketRequest* request,
                                                         v1::Ticket* response) {
  if (absl::Status s = NeedAuthority(); !s.ok()) return FinishUnary(context, s);
  // Check the route first: a ticket no one can use is not made.
  if (auto probe =
          authority_->Token(std::string(authority::kTicketSecretBytes, '\0'), request->route());
      !probe.ok()) {
    return FinishUnary(context, probe.status());
  }
  auto created = authority_->store().CreateTicket(
      FromProto(request->attributes()),
      request->ttl_seconds() == 0 ? kDefaultTicketTtlSeconds : request->ttl_seconds(),
      authority_->Now());
  if (!created.ok()) return FinishUnary(context, created.status());
  ToProto(created->first, *response);
  auto token = authority_->Token(created->second, request->route());
  if (!token.ok()) return FinishUnary(context, token.status());
  response->set_token(*std::move(token));
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthorityService::ListTickets(grpc::CallbackServerContext* context,
                                                        const v1::ListTicketsRequest*,
                                                        v1::ListTicketsResponse* response) {
  if (absl::Status s = NeedAuthority(); !s.ok()) return FinishUnary(context, s);
  for (const auto& ticket : authority_->store().ListTickets()) {
    ToProto(ticket, *response->add_tickets());
  }
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AuthorityService::RevokeTicket(grpc::CallbackServerContext* context,
                                                         const v1::RevokeTicketRequest* request,
                                                         v1::RevokeTicketResponse*) {
  if (absl::Status s = NeedAuthority(); !s.ok()) return FinishUnary(context, s);
  return FinishUnary(context, authority_->store().RevokeTicket(request->id()));
}

grpc::ServerUnaryReactor* AuthorityService::Enroll(grpc::CallbackServerContext* context,
                                                   const v1::EnrollRequest* request,
                                                   v1::Membership* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  memberships_->Enroll(request->token(), identity::IdentityOrDefault(request->identity()),
                       [reactor, response](absl::StatusOr<authority::MembershipInfo> info) {
                         if (info.ok()) ToProto(*info, *response);
                         reactor->Finish(ToGrpcStatus(info.status()));
                       });
  return reactor;
}

grpc::ServerUnaryReactor* AuthorityService::ListMemberships(grpc::CallbackServerContext* context,
                                                            const v1::ListMembershipsRequest*,
                                                            v1::ListMembershipsResponse* response) {
  for (const auto& info : memberships_->List()) ToProto(info, *response->add_memberships());
  return FinishUnary(context, absl::OkStatus());
}

}  // namespace veil::api
