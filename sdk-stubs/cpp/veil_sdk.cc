#include "veil_sdk.h"

#include <malloc.h>

#include <cstdlib>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace veil::sdk {
void TuneMalloc() {
  // Setting one threshold turns glibc's dynamic mmap threshold off, so set both: otherwise
  // every buffer over 128 KiB is a fresh mmap, page-faulted in and unmapped again.
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
  mallopt(M_MMAP_THRESHOLD, 256 * 1024 * 1024);
}

std::string ReasonOf(const grpc::Status& status) {
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) return "";
  for (const auto& any : details.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) return info.reason();
  }
  return "";
}

namespace {

void Check(const grpc::Status& status) {
  if (!status.ok()) throw Error(status);
}

}  // namespace

Error::Error(const grpc::Status& status)
    : std::runtime_error(status.error_message()),
      code_(status.error_code()),
      reason_(ReasonOf(status)) {}

std::string DefaultApi() {
  if (const char* api = std::getenv("VEIL_API"); api != nullptr && *api != '\0') return api;
  if (const char* dir = std::getenv("VEIL_STATE_DIR"); dir != nullptr && *dir != '\0') {
    return std::string("unix:") + dir + "/api.sock";
  }
  const char* home = std::getenv("HOME");
  return std::string("unix:") + (home != nullptr ? home : ".") + "/.veil/api.sock";
}

v1::TrustPolicy TrustEveryone() {
  v1::TrustPolicy policy;
  policy.set_trust_everyone(true);
  return policy;
}

v1::TrustPolicy TrustIdentifier(const std::string& identifier) {
  v1::TrustPolicy policy;
  policy.set_trust_identifier(identifier);
  return policy;
}

// The Serve stream's writer side, shared by Messages so they can reply.
class ServeStream {
 public:
  explicit ServeStream(grpc::ClientReaderWriter<v1::ServeRequest, v1::ServeResponse>& stream)
      : stream_(stream) {}
  void Send(const std::string& route, std::string payload) {
    v1::ServeRequest request;
    request.mutable_send()->set_batch_id(++batch_);
    auto* m = request.mutable_send()->add_messages();
    m->set_route(route);
    m->set_payload(std::move(payload));
    if (!stream_.Write(request)) throw Error(grpc::Status(grpc::UNAVAILABLE, "the Serve stream ended"));
  }
  grpc::ClientReaderWriter<v1::ServeRequest, v1::ServeResponse>& stream() { return stream_; }

 private:
  grpc::ClientReaderWriter<v1::ServeRequest, v1::ServeResponse>& stream_;
  uint64_t batch_ = 0;
};

void Message::Reply(std::string payload) { stream_.Send(delivery_.return_route(), std::move(payload)); }

Sidecar::Sidecar(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)),
      node_(v1::NodeService::NewStub(channel_)),
      identities_(v1::IdentityService::NewStub(channel_)),
      channels_(v1::SecureChannelService::NewStub(channel_)),
      relays_(v1::RelayService::NewStub(channel_)),
      messaging_(v1::MessagingService::NewStub(channel_)) {}

Sidecar Sidecar::Connect(const std::string& target, std::chrono::seconds wait) {
  TuneMalloc();
  std::string api = target.empty() ? DefaultApi() : target;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  auto channel = grpc::CreateCustomChannel(api, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + wait)) {
    throw Error(grpc::Status(grpc::UNAVAILABLE,
                             "no veil sidecar answers at " + api + "; is veild running?"));
  }
  return Sidecar(std::move(channel));
}

std::unique_ptr<grpc::ClientContext> Sidecar::Context(std::chrono::milliseconds deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + deadline);
  return context;
}

v1::Node Sidecar::GetNode() {
  v1::Node out;
  Check(node_->GetNode(Context(std::chrono::seconds(30)).get(), {}, &out));
  return out;
}

v1::Identity Sidecar::GetIdentity(const std::string& name) {
  v1::GetIdentityRequest request;
  request.set_name(name);
  v1::Identity out;
  Check(identities_->GetIdentity(Context(std::chrono::seconds(30)).get(), request, &out));
  return out;
}

v1::SecureChannelListener Sidecar::CreateListener(const std::string& address,
                                                  const v1::TrustPolicy& policy,
                                                  const std::string& identity) {
  v1::CreateSecureChannelListenerRequest request;
  request.set_address(address);
  request.set_identity(identity);
  *request.mutable_trust_policy() = policy;
  v1::SecureChannelListener out;
  Check(channels_->CreateSecureChannelListener(Context(std::chrono::seconds(30)).get(), request, &out));
  return out;
}

v1::SecureChannel Sidecar::OpenChannel(const std::string& route, const v1::TrustPolicy& policy,
                                       const std::string& identity) {
  v1::CreateSecureChannelRequest request;
  request.set_route(route);
  request.set_identity(identity);
  *request.mutable_trust_policy() = policy;
  v1::SecureChannel out;
  Check(channels_->CreateSecureChannel(Context(std::chrono::seconds(40)).get(), request, &out));
  return out;
}

v1::Relay Sidecar::CreateRelay(const std::string& hub_route, const std::string& name,
                               const std::string& identity) {
  v1::CreateRelayRequest request;
  request.set_hub_route(hub_route);
  request.set_name(name);
  request.set_identity(identity);
  v1::Relay out;
  Check(relays_->CreateRelay(Context(std::chrono::seconds(30)).get(), request, &out));
  return out;
}

void Sidecar::Send(const std::string& route, std::string payload) {
  v1::SendRequest request;
  auto* m = request.add_messages();
  m->set_route(route);
  m->set_payload(std::move(payload));
  v1::SendResponse out;
  Check(messaging_->Send(Context(std::chrono::seconds(30)).get(), request, &out));
}

v1::Delivery Sidecar::Request(const std::string& route, std::string payload,
                              std::chrono::milliseconds deadline) {
  v1::RequestRequest request;
  request.mutable_message()->set_route(route);
  request.mutable_message()->set_payload(std::move(payload));
  v1::RequestResponse out;
  Check(messaging_->Request(Context(deadline).get(), request, &out));
  return std::move(*out.mutable_reply());
}

void Sidecar::Serve(const std::string& address, const std::function<void(Message&)>& handler,
                    const std::function<void(const std::string&)>& on_open) {
  grpc::ClientContext context;
  auto stream = messaging_->Serve(&context);
  ServeStream serve(*stream);
  v1::ServeRequest open;
  open.mutable_open()->set_address(address);
  stream->Write(open);
  v1::ServeResponse response;
  while (stream->Read(&response)) {
    if (response.has_opened()) {
      if (on_open) on_open(response.opened().route());
      continue;
    }
    if (!response.has_deliveries() || response.deliveries().deliveries().empty()) continue;
    uint64_t last = 0;
    for (auto& delivery : *response.mutable_deliveries()->mutable_deliveries()) {
      last = delivery.sequence();
      Message message(serve, std::move(delivery));
      handler(message);
    }
    v1::ServeRequest ack;
    ack.mutable_ack()->set_sequence(last);
    if (!stream->Write(ack)) break;
  }
  Check(stream->Finish());
}

}  // namespace veil::sdk
