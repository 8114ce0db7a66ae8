#include "sidecar/api/outgoing.h"

#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"

namespace veil::api {

absl::StatusOr<core::Message> PrepareOutgoing(v1::OutgoingMessage& out, core::Route return_route,
                                              const core::Router& router,
                                              const ApiSettings& settings) {
  auto route = core::Route::Parse(out.route());
  if (!route.ok()) return route.status();
  if (!settings.insecure_plaintext && router.LeavesHost(*route)) {
    return ErrorWithReason(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat("refusing to send plaintext to ", out.route(),
                     ": its first hop leaves this host, and app payloads leave the host only "
                     "inside a secure channel (veild --insecure-plaintext allows it, for testing)"),
        reason::kPlaintextEgressRefused);
  }
  core::Message msg;
  msg.onward = *std::move(route);
  msg.return_route = std::move(return_route);
  msg.payload = std::move(*out.mutable_payload());
  msg.sender.origin = core::SenderInfo::Origin::kLocal;
  return msg;
}

void ToDelivery(core::Message& msg, v1::Delivery& delivery) {
  delivery.set_payload(std::move(msg.payload));
  delivery.set_return_route(msg.return_route.ToString());
  if (!msg.onward.empty()) delivery.set_onward_route(msg.onward.ToString());
  v1::Sender* sender = delivery.mutable_sender();
  switch (msg.sender.origin) {
    case core::SenderInfo::Origin::kLocal:
      sender->set_origin(v1::Sender::ORIGIN_LOCAL);
      break;
    case core::SenderInfo::Origin::kTransport:
      sender->set_origin(v1::Sender::ORIGIN_TRANSPORT);
      break;
    case core::SenderInfo::Origin::kSecureChannel:
      sender->set_origin(v1::Sender::ORIGIN_SECURE_CHANNEL);
      sender->set_identifier(msg.sender.identifier);
      sender->set_channel(msg.sender.channel);
      break;
  }
}

}  // namespace veil::api
