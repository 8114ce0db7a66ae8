#include "tests/support/api_client.h"

#include <chrono>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "veil/v1/identity.grpc.pb.h"

namespace veil::testing {
namespace {

std::optional<google::rpc::ErrorInfo> InfoOf(const google::rpc::Status& details) {
  for (const auto& any : details.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) return info;
  }
  return std::nullopt;
}

std::optional<google::rpc::ErrorInfo> InfoOf(const grpc::Status& status) {
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) return std::nullopt;
  return InfoOf(details);
}

}  // namespace

bool HealthServing(const std::shared_ptr<grpc::Channel>& channel) {
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckResponse response;
  return health->Check(&context, {}, &response).ok() &&
         response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

std::string ReasonOf(const google::rpc::Status& status) {
  auto info = InfoOf(status);
  return info ? info->reason() : "";
}

std::shared_ptr<grpc::Channel> Connect(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

std::string ReasonOf(const grpc::Status& status) {
  auto info = InfoOf(status);
  return info ? info->reason() : "";
}

std::string MetadataOf(const grpc::Status& status, const std::string& key) {
  auto info = InfoOf(status);
  if (!info) return "";
  auto it = info->metadata().find(key);
  return it == info->metadata().end() ? "" : it->second;
}

v1::Node GetNode(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::NodeService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::Node node;
  grpc::Status status = stub->GetNode(&context, v1::GetNodeRequest(), &node);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return node;
}

std::string TcpListenAddress(const std::shared_ptr<grpc::Channel>& channel) {
  v1::Node node = GetNode(channel);
  return node.tcp_listeners_size() ? node.tcp_listeners(0).address() : "";
}

std::string ListenerHop(const std::shared_ptr<grpc::Channel>& channel,
                        const std::string& transport) {
  const v1::Node node = GetNode(channel);
  for (const auto& l : node.listeners()) {
    if (l.transport() == transport) return l.route();
  }
  return "";
}

v1::TrustPolicy TrustEveryone() {
  v1::TrustPolicy p;
  p.set_trust_everyone(true);
  return p;
}

v1::TrustPolicy TrustIdentifier(const std::string& identifier) {
  v1::TrustPolicy p;
  p.set_trust_identifier(identifier);
  return p;
}

namespace {
std::unique_ptr<grpc::ClientContext> Deadline(std::chrono::milliseconds d) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + d);
  return c;
}
}  // namespace

grpc::Status CreateListener(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& address, const v1::TrustPolicy& policy,
                            v1::SecureChannelListener* out, bool exist_ok,
                            const std::string& identity) {
  auto stub = v1::SecureChannelService::NewStub(channel);
  v1::CreateSecureChannelListenerRequest request;
  request.set_address(address);
  request.set_identity(identity);
  *request.mutable_trust_policy() = policy;
  request.set_exist_ok(exist_ok);
  v1::SecureChannelListener ignored;
  return stub->CreateSecureChannelListener(Deadline(std::chrono::seconds(10)).get(), request,
                                           out ? out : &ignored);
}

grpc::Status CreateSecureChannel(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& route, const v1::TrustPolicy& policy,
                                 v1::SecureChannel* out, uint32_t timeout_ms) {
  auto stub = v1::SecureChannelService::NewStub(channel);
  v1::CreateSecureChannelRequest request;
  request.set_route(route);
  *request.mutable_trust_policy() = policy;
  request.set_timeout_ms(timeout_ms);
  return stub->CreateSecureChannel(Deadline(std::chrono::milliseconds(timeout_ms + 10000)).get(),
                                   request, out);
}

std::vector<v1::SecureChannel> ListSecureChannels(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::SecureChannelService::NewStub(channel);
  grpc::ClientContext context;
  v1::ListSecureChannelsResponse out;
  EXPECT_TRUE(stub->ListSecureChannels(&context, {}, &out).ok());
  return {out.channels().begin(), out.channels().end()};
}

v1::Identity GetIdentity(const std::shared_ptr<grpc::Channel>& channel, const std::string& name) {
  auto stub = v1::IdentityService::NewStub(channel);
  v1::GetIdentityRequest request;
  request.set_name(name);
  v1::Identity id;
  grpc::Status s = stub->GetIdentity(Deadline(std::chrono::seconds(10)).get(), request, &id);
  EXPECT_TRUE(s.ok()) << name << ": " << s.error_message();
  return id;
}

std::string DefaultIdentifier(const std::shared_ptr<grpc::Channel>& channel) {
  return GetIdentity(channel, "default").public_identity().identifier();
}

grpc::Status Request(const std::shared_ptr<grpc::Channel>& channel, const std::string& route,
                     const std::string& payload, v1::RequestResponse* response,
                     std::chrono::milliseconds deadline) {
  auto stub = v1::MessagingService::NewStub(channel);
  v1::RequestRequest request;
  request.mutable_message()->set_route(route);
  request.mutable_message()->set_payload(payload);
  return stub->Request(Deadline(deadline).get(), request, response);
}

ServeClient::ServeClient(const std::shared_ptr<grpc::Channel>& channel, const std::string& address,
                         uint32_t window, bool accept_unencrypted)
    : stub_(v1::MessagingService::NewStub(channel)) {
  stream_ = stub_->Serve(&context_);
  v1::ServeRequest open;
  open.mutable_open()->set_address(address);
  open.mutable_open()->set_window(window);
  open.mutable_open()->set_accept_unencrypted(accept_unencrypted);
  stream_->Write(open);
}

ServeClient::~ServeClient() {
  if (!finished_) {
    context_.TryCancel();
    stream_->Finish();
  }
}

std::optional<v1::ServeResponse> ServeClient::Read() {
  v1::ServeResponse response;
  if (!stream_->Read(&response)) return std::nullopt;
  return response;
}

bool ServeClient::Write(const v1::ServeRequest& request) {
  std::lock_guard<std::mutex> lock(write_mu_);
  return stream_->Write(request);
}

bool ServeClient::Ack(uint64_t sequence) {
  v1::ServeRequest ack;
  ack.mutable_ack()->set_sequence(sequence);
  return Write(ack);
}

bool ServeClient::Send(uint64_t batch_id,
                       const std::vector<std::pair<std::string, std::string>>& messages,
                       bool delivery_receipts) {
  v1::ServeRequest request;
  request.mutable_send()->set_batch_id(batch_id);
  request.mutable_send()->set_delivery_receipts(delivery_receipts);
  for (const auto& [route, payload] : messages) {
    auto* m = request.mutable_send()->add_messages();
    m->set_route(route);
    m->set_payload(payload);
  }
  return Write(request);
}

grpc::Status ServeClient::Finish() {
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    stream_->WritesDone();
  }
  v1::ServeResponse ignored;
  while (stream_->Read(&ignored)) {
  }
  finished_ = true;
  return stream_->Finish();
}

EchoApp::EchoApp(const std::shared_ptr<grpc::Channel>& channel, const std::string& address,
                 bool accept_unencrypted)
    : client_(channel, address, /*window=*/0, accept_unencrypted), thread_([this] { Run(); }) {}

EchoApp::~EchoApp() {
  client_.Cancel();
  thread_.join();
}

bool EchoApp::WaitOpened() {
  for (int i = 0; i < 2000 && opened_.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return opened_.load() == 1;
}

v1::Sender EchoApp::last_sender() {
  std::lock_guard<std::mutex> lock(mu_);
  return last_sender_;
}

void EchoApp::Run() {
  uint64_t batch = 0;
  while (auto response = client_.Read()) {
    if (response->has_opened()) opened_.store(1);
    if (!response->has_deliveries()) continue;
    v1::ServeRequest reply;
    reply.mutable_send()->set_batch_id(++batch);
    uint64_t last = 0;
    for (auto& d : *response->mutable_deliveries()->mutable_deliveries()) {
      auto* m = reply.mutable_send()->add_messages();
      m->set_route(d.return_route());
      m->set_payload(std::move(*d.mutable_payload()));
      last = d.sequence();
      std::lock_guard<std::mutex> lock(mu_);
      last_sender_ = d.sender();
    }
    // Counted before the replies go, so a caller that has its reply sees it counted.
    echoed_ += reply.send().messages_size();
    if (!client_.Write(reply) || !client_.Ack(last)) break;
  }
  if (opened_.load() == 0) opened_.store(-1);
}

grpc::Status CreateRelay(const std::shared_ptr<grpc::Channel>& api, const std::string& hub_route,
                         const std::string& name, v1::Relay* out, bool exist_ok) {
  auto stub = v1::RelayService::NewStub(api);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::CreateRelayRequest request;
  request.set_hub_route(hub_route);
  request.set_name(name);
  request.set_exist_ok(exist_ok);
  return stub->CreateRelay(&context, request, out);
}

v1::Relay GetRelay(const std::shared_ptr<grpc::Channel>& api, const std::string& name) {
  auto stub = v1::RelayService::NewStub(api);
  grpc::ClientContext context;
  v1::GetRelayRequest request;
  request.set_name(name);
  v1::Relay relay;
  EXPECT_TRUE(stub->GetRelay(&context, request, &relay).ok());
  return relay;
}

bool WaitRelayUp(const std::shared_ptr<grpc::Channel>& api, const std::string& name,
                 uint64_t registrations, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    v1::Relay relay = GetRelay(api, name);
    if (relay.state() == v1::Relay::UP && relay.registrations() >= registrations) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace veil::testing
