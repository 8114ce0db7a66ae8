// Credential authorities, both ends (docs/credentials.md):
//
//   Authority      on a node started with --authority: a secure channel listener "authority"
//                  (anyone may open a channel: who may have what is the store's business) and
//                  the service "credentials", which issues credentials to members and enrolls
//                  new ones with tickets. It signs with the node's default identity.
//   AuthorityCall  one request to an authority, from a member's sidecar: a fresh secure channel
//                  to the authority's listener that trusts only the authority's identifier, the
//                  request, the answer, the channel closed.
//
// Thread-safety: Authority's methods may be called from any thread; AuthorityCall runs on its
// strand and reports once.
#ifndef VEIL_SIDECAR_AUTHORITY_AUTHORITY_H_
#define VEIL_SIDECAR_AUTHORITY_AUTHORITY_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "boost/asio/steady_timer.hpp"
#include "sidecar/authority/authority_store.h"
#include "sidecar/channel/secure_channel_manager.h"
#include "sidecar/core/router.h"
#include "sidecar/identity/identity_store.h"
#include "veil/wire/v1/authority.pb.h"

namespace veil::authority {

inline constexpr char kAuthorityListenerAddress[] = "authority";
inline constexpr char kCredentialsServiceAddress[] = "credentials";
inline constexpr absl::string_view kTicketTokenPrefix = "veil-ticket-v1.";
inline constexpr int64_t kDefaultCredentialTtlSeconds = 3600;

// The printable token of a ticket, and back. Decoding checks the shape (the identifier, the
// route, a 32-byte secret): INVALID_ARGUMENT (TICKET_INVALID) otherwise, quoting nothing.
std::string EncodeTicketToken(const wire::v1::EnrollmentTicket& ticket);
absl::StatusOr<wire::v1::EnrollmentTicket> DecodeTicketToken(absl::string_view token);

struct AuthorityOptions {
  int64_t credential_ttl_seconds = kDefaultCredentialTtlSeconds;
  // The route members reach the authority's listener by, put in tickets when a request names
  // none, e.g. "/tcp/authority.example:4000/service/authority".
  std::string advertised_route;
  // Unix seconds now; null: the system clock (tests pass their own).
  std::function<int64_t()> unix_now;
};

class Authority : public std::enable_shared_from_this<Authority> {
 public:
  Authority(core::Router& router, channel::SecureChannelManager& channels,
            std::shared_ptr<const identity::Identity> identity,
            std::unique_ptr<AuthorityStore> store, AuthorityOptions options);
  // Starts the listener and the service.
  absl::Status Start();

  const std::string& identifier() const { return identity_->identifier(); }
  AuthorityStore& store() { return *store_; }
  const AuthorityOptions& options() const { return options_; }
  int64_t Now() const;
  // A credential about member `identifier`, valid from now for the credential TTL.
  // PERMISSION_DENIED (NOT_A_MEMBER) for one that is not a member.
  absl::StatusOr<std::string> Issue(const std::string& identifier) const;
  // A ticket's token for `route` (the advertised route when empty: FAILED_PRECONDITION when
  // neither is known).
  absl::StatusOr<std::string> Token(const std::string& secret, const std::string& route) const;

  // The service: a request out of a secure channel.
  void OnRequest(core::Message msg);

 private:
  wire::v1::AuthorityResponse Handle(const wire::v1::AuthorityRequest& request,
                                     const std::string& asker);

  core::Router& router_;
  channel::SecureChannelManager& channels_;
  const std::shared_ptr<const identity::Identity> identity_;
  const std::unique_ptr<AuthorityStore> store_;
  const AuthorityOptions options_;
};

class AuthorityCall final : public core::Worker,
                            public std::enable_shared_from_this<AuthorityCall> {
 public:
  using Done = std::function<void(absl::StatusOr<wire::v1::AuthorityResponse>)>;

  // Sends `request` to the authority `authority` (an identifier) at `route` (its listener) as
  // the local identity `identity_name`; `done` hears the answer (a refusal in it is turned
  // into a status) or UNAVAILABLE (AUTHORITY_UNREACHABLE) / the channel's error, once.
  static void Start(channel::SecureChannelManager& channels, const core::Route& route,
                    const std::string& authority, const std::string& identity_name,
                    wire::v1::AuthorityRequest request, std::chrono::milliseconds timeout,
                    Done done);

  AuthorityCall(channel::SecureChannelManager& channels, core::Strand strand, Done done);
  void HandleMessage(core::Message msg) override;
  absl::Status Admit(const core::SenderInfo& from) const override;

 private:
  class FailureTracker;
  void OnChannel(absl::StatusOr<channel::ChannelInfo> info, wire::v1::AuthorityRequest request,
                 std::chrono::milliseconds timeout);
  void Finish(absl::StatusOr<wire::v1::AuthorityResponse> outcome);

  channel::SecureChannelManager& channels_;
  boost::asio::steady_timer timer_;
  Done done_;
  std::string channel_, reply_address_;
  std::atomic<uint64_t> channel_encryptor_{0};
  bool finished_ = false;
};

}  // namespace veil::authority

#endif  // VEIL_SIDECAR_AUTHORITY_AUTHORITY_H_
