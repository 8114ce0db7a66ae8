#include "sidecar/api/outgoing.h"

#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"

namespace veil::api {

namespace {

core::SenderInfo FromApp() {
  core::SenderInfo app;
  app.origin = core::SenderInfo::Origin::kApp;
  return app;
}

// The route of an outgoing message, parsed, and checked the way the router will check it
// (access control, e.g. plaintext egress): a request that would be refused sends nothing.
absl::StatusOr<core::Route> OutgoingRoute(const std::string& text, const core::Router& router) {
  auto route = core::Route::Parse(text);
  if (!route.ok()) return route.status();
  absl::Status admitted = router.CheckAccess(*route, FromApp());
  if (!admitted.ok()) return admitted;
  return route;
}

core::Message Outgoing(core::Route onward, core::Route return_route, std::string* payload) {
  core::Message msg;
  msg.onward = std::move(onward);
  msg.return_route = std::move(return_route);
  msg.payload = std::move(*payload);
  msg.sender.origin = core::SenderInfo::Origin::kApp;
  return msg;
}

}  // namespace

absl::StatusOr<core::Message> PrepareOutgoing(v1::OutgoingMessage& out, core::Route return_route,
                                              const core::Router& router,
                                              const ApiSettings& settings) {
  auto route = OutgoingRoute(out.route(), router);
  if (!route.ok()) return route.status();
  return Outgoing(*std::move(route), std::move(return_route), out.mutable_payload());
}

absl::StatusOr<core::Message> OutgoingBatch::Prepare(v1::OutgoingMessage& out) {
  if (!last_text_.has_value() || *last_text_ != out.route()) {
    last_route_ = OutgoingRoute(out.route(), router_);
    last_text_ = out.route();
  }
  if (!last_route_.ok()) return last_route_.status();
  return Outgoing(*last_route_, return_route_, out.mutable_payload());
}

void ToDelivery(core::Message& msg, v1::Delivery& delivery,
                const std::pair<const core::Message*, const v1::Delivery*>& previous) {
  delivery.set_payload(std::move(msg.payload));
  const auto [prev_msg, prev] = previous;
  if (prev_msg != nullptr && prev_msg->return_route == msg.return_route) {
    delivery.set_return_route(prev->return_route());
  } else {
    delivery.set_return_route(msg.return_route.ToString());
  }
  if (!msg.onward.empty()) delivery.set_onward_route(msg.onward.ToString());
  v1::Sender* sender = delivery.mutable_sender();
  switch (msg.sender.origin) {
    case core::SenderInfo::Origin::kLocal:
    case core::SenderInfo::Origin::kApp:
      sender->set_origin(v1::Sender::ORIGIN_LOCAL);
      break;
    case core::SenderInfo::Origin::kTransport:
      sender->set_origin(v1::Sender::ORIGIN_TRANSPORT);
      break;
    case core::SenderInfo::Origin::kSecureChannel:
      sender->set_origin(v1::Sender::ORIGIN_SECURE_CHANNEL);
      sender->set_identifier(msg.sender.identifier);
      sender->set_channel(msg.sender.channel);
      if (msg.sender.attributes != nullptr) {
        sender->mutable_attributes()->insert(msg.sender.attributes->begin(),
                                             msg.sender.attributes->end());
      }
      break;
  }
}

}  // namespace veil::api
