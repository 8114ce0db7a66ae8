// AuthorityService: veil.v1.AuthorityService — this node as a credential authority (members,
// tickets; only with --authority) and as a member (enrolling, its memberships).
//
// Thread-safety: gRPC calls it from its own threads; what it uses is thread-safe.
#ifndef VEIL_SIDECAR_API_AUTHORITY_SERVICE_H_
#define VEIL_SIDECAR_API_AUTHORITY_SERVICE_H_

#include <memory>

#include "sidecar/authority/authority.h"
#include "sidecar/authority/memberships.h"
#include "veil/v1/authority.grpc.pb.h"

namespace veil::api {

class AuthorityService final : public v1::AuthorityService::CallbackService {
 public:
  // `authority` is null on a node that is not one.
  AuthorityService(std::shared_ptr<authority::Authority> authority,
                   std::shared_ptr<authority::Memberships> memberships)
      : authority_(std::move(authority)), memberships_(std::move(memberships)) {}

  grpc::ServerUnaryReactor* GetAuthority(grpc::CallbackServerContext* context,
                                         const v1::GetAuthorityRequest* request,
                                         v1::Authority* response) override;
  grpc::ServerUnaryReactor* AddMember(grpc::CallbackServerContext* context,
                                      const v1::AddMemberRequest* request,
                                      v1::Member* response) override;
  grpc::ServerUnaryReactor* ListMembers(grpc::CallbackServerContext* context,
                                        const v1::ListMembersRequest* request,
                                        v1::ListMembersResponse* response) override;
  grpc::ServerUnaryReactor* RemoveMember(grpc::CallbackServerContext* context,
                                         const v1::RemoveMemberRequest* request,
                                         v1::RemoveMemberResponse* response) override;
  grpc::ServerUnaryReactor* CreateTicket(grpc::CallbackServerContext* context,
                                         const v1::CreateTicketRequest* request,
                                         v1::Ticket* response) override;
  grpc::ServerUnaryReactor* ListTickets(grpc::CallbackServerContext* context,
                                        const v1::ListTicketsRequest* request,
                                        v1::ListTicketsResponse* response) override;
  grpc::ServerUnaryReactor* RevokeTicket(grpc::CallbackServerContext* context,
                                         const v1::RevokeTicketRequest* request,
                                         v1::RevokeTicketResponse* response) override;
  grpc::ServerUnaryReactor* Enroll(grpc::CallbackServerContext* context,
                                   const v1::EnrollRequest* request,
                                   v1::Membership* response) override;
  grpc::ServerUnaryReactor* ListMemberships(grpc::CallbackServerContext* context,
                                            const v1::ListMembershipsRequest* request,
                                            v1::ListMembershipsResponse* response) override;

 private:
  absl::Status NeedAuthority() const;

  const std::shared_ptr<authority::Authority> authority_;
  const std::shared_ptr<authority::Memberships> memberships_;
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_AUTHORITY_SERVICE_H_
