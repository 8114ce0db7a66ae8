#include "sidecar/authority/authority.h"

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "boost/asio/post.hpp"
#include "sidecar/channel/trust_policy.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/random_name.h"
#include "sidecar/identity/identifier.h"
#include "spdlog/spdlog.h"

namespace veil::authority {
namespace {

absl::Status BadToken(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                         absl::StrCat("not an enrollment token: ", why), reason::kTicketInvalid);
}

void SetError(const absl::Status& status, wire::v1::AuthorityResponse& response) {
  response.set_code(static_cast<uint32_t>(status.code()));
  response.set_reason(ReasonOf(status));
  response.set_message(std::string(status.message()));
}

class ServiceWorker final : public core::Worker {
 public:
  ServiceWorker(core::Strand strand, std::shared_ptr<Authority> authority)
      : Worker(std::move(strand)), authority_(std::move(authority)) {}
  void HandleMessage(core::Message msg) override {
    msg.receipt.Settle(absl::OkStatus());
    if (authority_ != nullptr) authority_->OnRequest(std::move(msg));
  }
  void OnStop() override { authority_.reset(); }
  // Only out of a secure channel: the authority issues to the authenticated identifier.
  absl::Status Admit(const core::SenderInfo& from) const override {
    if (from.origin == core::SenderInfo::Origin::kSecureChannel) return absl::OkStatus();
    return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                           "authority requests must come through a secure channel to it",
                           reason::kSecureChannelRequired);
  }

 private:
  std::shared_ptr<Authority> authority_;
};

}  // namespace

// A request that could not be handed on (the channel or its connection died) ends the call.
class AuthorityCall::FailureTracker final : public core::SendTracker {
 public:
  explicit FailureTracker(std::shared_ptr<AuthorityCall> call) : call_(std::move(call)) {}
  void Complete(uint32_t, absl::Status status) override {
    if (status.ok()) return;
    boost::asio::post(call_->strand(), [call = call_, status] { call->Finish(status); });
  }

 private:
  std::shared_ptr<AuthorityCall> call_;
};

std::string EncodeTicketToken(const wire::v1::EnrollmentTicket& ticket) {
  std::string encoded;
  absl::WebSafeBase64Escape(ticket.SerializeAsString(), &encoded);
  return absl::StrCat(kTicketTokenPrefix, encoded);
}

absl::StatusOr<wire::v1::EnrollmentTicket> DecodeTicketToken(absl::string_view token) {
  token = absl::StripAsciiWhitespace(token);
  if (token.size() > 4096) return BadToken("longer than 4096 characters");
  if (!absl::ConsumePrefix(&token, kTicketTokenPrefix)) {
    return BadToken(absl::StrCat("it does not start with \"", kTicketTokenPrefix, "\""));
  }
  std::string bytes;
  if (!absl::WebSafeBase64Unescape(token, &bytes)) return BadToken("not base64url");
  wire::v1::EnrollmentTicket ticket;
  if (!ticket.ParseFromString(bytes)) return BadToken("it does not decode");
  if (!identity::ValidateIdentifier(ticket.authority()).ok()) {
    return BadToken("the authority is not an identifier");
  }
  if (!core::Route::Parse(ticket.route()).ok() || ticket.route().empty()) {
    return BadToken("the route does not parse");
  }
  if (ticket.secret().size() != kTicketSecretBytes) return BadToken("the secret is not 32 bytes");
  return ticket;
}

Authority::Authority(core::Router& router, channel::SecureChannelManager& channels,
                     std::shared_ptr<const identity::Identity> identity,
                     std::unique_ptr<AuthorityStore> store, AuthorityOptions options)
    : router_(router),
      channels_(channels),
      identity_(std::move(identity)),
      store_(std::move(store)),
      options_(std::move(options)) {}

absl::Status Authority::Start() {
  if (absl::Status s = router_.StartWorker(
          kCredentialsServiceAddress,
          std::make_shared<ServiceWorker>(router_.NewStrand(), shared_from_this()));
      !s.ok()) {
    return s;
  }
  auto listener = channels_.CreateListener(
      kAuthorityListenerAddress, identity_->name(),
      std::shared_ptr<const channel::TrustPolicy>(channel::TrustEveryone()));
  if (!listener.ok()) return listener.status();
  spdlog::info(
      "authority {}: listener at /service/{}, credentials at /service/{}, {} members, "
      "credentials valid {} s",
      identity_->identifier(), kAuthorityListenerAddress, kCredentialsServiceAddress,
      store_->ListMembers().size(), options_.credential_ttl_seconds);
  return absl::OkStatus();
}

int64_t Authority::Now() const {
  return options_.unix_now ? options_.unix_now() : absl::ToUnixSeconds(absl::Now());
}

absl::StatusOr<std::string> Authority::Issue(const std::string& identifier) const {
  auto member = store_->GetMember(identifier);
  if (!member.has_value()) {
    return ErrorWithReason(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat(identifier, " is not a member of authority ", identity_->identifier()),
        reason::kNotAMember);
  }
  const int64_t now = Now();
  return identity::IssueCredential(*identity_,
                                   {.issuer = identity_->identifier(),
                                    .subject = identifier,
                                    .attributes = member->attributes,
                                    .issued_at = now,
                                    .expires_at = now + options_.credential_ttl_seconds});
}

absl::StatusOr<std::string> Authority::Token(const std::string& secret,
                                             const std::string& route) const {
  const std::string& to = route.empty() ? options_.advertised_route : route;
  if (to.empty()) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                           "say how members reach this authority: a route in the request, or veild "
                           "--authority-route (e.g. /tcp/authority.example:4000/service/authority)",
                           reason::kInvalidRequest);
  }
  if (auto parsed = core::Route::Parse(to); !parsed.ok()) return parsed.status();
  wire::v1::EnrollmentTicket ticket;
  ticket.set_authority(identity_->identifier());
  ticket.set_route(to);
  ticket.set_secret(secret);
  return EncodeTicketToken(ticket);
}

wire::v1::AuthorityResponse Authority::Handle(const wire::v1::AuthorityRequest& request,
                                              const std::string& asker) {
  wire::v1::AuthorityResponse response;
  response.set_id(request.id());
  if (request.has_enroll()) {
    auto member = store_->Enroll(request.enroll().ticket_secret(), asker, Now());
    if (!member.ok()) {
      spdlog::warn("authority: enrollment of {} refused: {}", asker, member.status().message());
      SetError(member.status(), response);
      return response;
    }
    spdlog::info("authority: {} enrolled with ticket {}", asker, member->ticket);
  } else if (!request.has_credential()) {
    SetError(ErrorWithReason(absl::StatusCode::kInvalidArgument, "an empty authority request",
                             reason::kInvalidRequest),
             response);
    return response;
  }
  auto credential = Issue(asker);
  if (!credential.ok()) {
    SetError(credential.status(), response);
    return response;
  }
  response.set_credential(*std::move(credential));
  return response;
}

void Authority::OnRequest(core::Message msg) {
  wire::v1::AuthorityRequest request;
  wire::v1::AuthorityResponse response;
  if (!request.ParseFromString(msg.payload)) {
    SetError(ErrorWithReason(absl::StatusCode::kInvalidArgument, "not an AuthorityRequest",
                             reason::kInvalidRequest),
             response);
  } else {
    response = Handle(request, msg.sender.identifier);
  }
  if (msg.return_route.empty()) return;
  core::Message reply;
  reply.onward = std::move(msg.return_route);
  reply.return_route.Append(core::Address::Local(kCredentialsServiceAddress));
  reply.payload = response.SerializeAsString();
  router_.Send(std::move(reply));
}

void AuthorityCall::Start(channel::SecureChannelManager& channels, const core::Route& route,
                          const std::string& authority, const std::string& identity_name,
                          wire::v1::AuthorityRequest request, std::chrono::milliseconds timeout,
                          Done done) {
  auto policy = channel::TrustIdentifiers({authority});
  if (!policy.ok()) {
    done(policy.status());
    return;
  }
  auto call =
      std::make_shared<AuthorityCall>(channels, channels.router().NewStrand(), std::move(done));
  channels.CreateChannel(
      route, identity_name, std::shared_ptr<const channel::TrustPolicy>(*std::move(policy)),
      timeout,
      [call, request = std::move(request), timeout](absl::StatusOr<channel::ChannelInfo> info) {
        boost::asio::post(call->strand(), [call, info = std::move(info), request, timeout] {
          call->OnChannel(info, request, timeout);
        });
      });
}

AuthorityCall::AuthorityCall(channel::SecureChannelManager& channels, core::Strand strand,
                             Done done)
    : Worker(strand), channels_(channels), timer_(strand), done_(std::move(done)) {}

absl::Status AuthorityCall::Admit(const core::SenderInfo& from) const {
  if (from.origin == core::SenderInfo::Origin::kSecureChannel &&
      from.via == channel_encryptor_.load(std::memory_order_acquire)) {
    return absl::OkStatus();
  }
  return Worker::Admit(from);
}

void AuthorityCall::OnChannel(absl::StatusOr<channel::ChannelInfo> info,
                              wire::v1::AuthorityRequest request,
                              std::chrono::milliseconds timeout) {
  if (!info.ok()) {
    Finish(WithReason(
        absl::Status(info.status().code(),
                     absl::StrCat("no secure channel to the authority: ", info.status().message())),
        ReasonOf(info.status()).empty() ? std::string(reason::kAuthorityUnreachable)
                                        : ReasonOf(info.status())));
    return;
  }
  channel_ = info->address;
  channel_encryptor_.store(info->encryptor_id, std::memory_order_release);
  reply_address_ = channels_.router().StartWorkerWithPrefix("_ac_", shared_from_this());
  if (reply_address_.empty()) {
    Finish(ErrorWithReason(absl::StatusCode::kUnavailable, "the node is shutting down",
                           reason::kNodeShuttingDown));
    return;
  }
  timer_.expires_after(timeout);
  timer_.async_wait([self = shared_from_this(), timeout](boost::system::error_code ec) {
    if (ec) return;
    self->Finish(
        ErrorWithReason(absl::StatusCode::kUnavailable,
                        absl::StrCat("the authority did not answer in ", timeout.count(), " ms"),
                        reason::kAuthorityUnreachable));
  });
  core::Message msg;
  msg.onward.Append(core::Address::Local(channel_));
  msg.onward.Append(core::Address::Local(kCredentialsServiceAddress));
  msg.return_route.Append(core::Address::Local(reply_address_));
  msg.payload = request.SerializeAsString();
  msg.receipt = core::Receipt(std::make_shared<FailureTracker>(shared_from_this()), 0);
  channels_.router().Send(std::move(msg));
}

void AuthorityCall::HandleMessage(core::Message msg) {
  msg.receipt.Settle(absl::OkStatus());
  wire::v1::AuthorityResponse response;
  if (!response.ParseFromString(msg.payload)) {
    Finish(ErrorWithReason(absl::StatusCode::kUnavailable, "the authority's answer does not decode",
                           reason::kInvalidRequest));
    return;
  }
  if (response.code() != 0) {
    const auto code = response.code() <= 16 ? static_cast<absl::StatusCode>(response.code())
                                            : absl::StatusCode::kUnknown;
    std::string why = response.message().substr(0, 256);
    Finish(ErrorWithReason(code, absl::StrCat("the authority refused: ", why),
                           response.reason().substr(0, 64)));
    return;
  }
  Finish(std::move(response));
}

void AuthorityCall::Finish(absl::StatusOr<wire::v1::AuthorityResponse> outcome) {
  if (finished_) return;
  finished_ = true;
  timer_.cancel();
  if (!reply_address_.empty()) channels_.router().StopWorker(reply_address_, this);
  if (!channel_.empty()) channels_.DeleteChannel(channel_).IgnoreError();
  auto done = std::move(done_);
  done_ = nullptr;
  if (done) done(std::move(outcome));
}

}  // namespace veil::authority
