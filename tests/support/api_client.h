// Test support: small real gRPC clients of the veil.v1 API, as an app would write them.
//
// Thread-safety: ServeClient's Read and Write may run on two threads at once (one each), as
// gRPC sync streams allow; EchoApp runs its own thread.
#ifndef VEIL_TESTS_SUPPORT_API_CLIENT_H_
#define VEIL_TESTS_SUPPORT_API_CLIENT_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "veil/v1/identity.grpc.pb.h"
#include "veil/v1/messaging.grpc.pb.h"
#include "veil/v1/node.grpc.pb.h"
#include "veil/v1/relay.grpc.pb.h"
#include "veil/v1/secure_channel.grpc.pb.h"

namespace veil::testing {

std::shared_ptr<grpc::Channel> Connect(const std::string& target);

// The ErrorInfo reason in a failed status's details, or "" when absent.
std::string ReasonOf(const grpc::Status& status);
// True when the node's gRPC health service answers SERVING within 5 s.
bool HealthServing(const std::shared_ptr<grpc::Channel>& channel);
// The same for a per-message failure (SendFailure.status).
std::string ReasonOf(const google::rpc::Status& status);
// An ErrorInfo metadata value, or "".
std::string MetadataOf(const grpc::Status& status, const std::string& key);

// GetNode, failing the test on error.
v1::Node GetNode(const std::shared_ptr<grpc::Channel>& channel);

// The node's first TCP listener address ("host:port"), "" when it has none.
std::string TcpListenAddress(const std::shared_ptr<grpc::Channel>& channel);
// The route hop of the node's first listener of `transport` ("tcp", "uds", "ws", "wss"), or "".
std::string ListenerHop(const std::shared_ptr<grpc::Channel>& channel,
                        const std::string& transport);

// Trust policies.
v1::TrustPolicy TrustEveryone();
v1::TrustPolicy TrustIdentifier(const std::string& identifier);

// CreateSecureChannelListener at `address` for `identity` ("" = "default").
grpc::Status CreateListener(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& address, const v1::TrustPolicy& policy,
                            v1::SecureChannelListener* out = nullptr, bool exist_ok = false,
                            const std::string& identity = "");
// CreateSecureChannel to `route` for identity "default".
grpc::Status CreateSecureChannel(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& route, const v1::TrustPolicy& policy,
                                 v1::SecureChannel* out, uint32_t timeout_ms = 10000);
// ListSecureChannels, failing the test on error.
std::vector<v1::SecureChannel> ListSecureChannels(const std::shared_ptr<grpc::Channel>& channel);
// GetIdentity, failing the test on error.
v1::Identity GetIdentity(const std::shared_ptr<grpc::Channel>& channel, const std::string& name);
// The identifier of identity "default".
std::string DefaultIdentifier(const std::shared_ptr<grpc::Channel>& channel);
// Request: send `payload` to `route` and wait for one reply.
grpc::Status Request(const std::shared_ptr<grpc::Channel>& channel, const std::string& route,
                     const std::string& payload, v1::RequestResponse* response,
                     std::chrono::milliseconds deadline = std::chrono::seconds(20));

// CreateRelay on the hub at `hub_route` for identity "default" ("" name: hub-assigned).
grpc::Status CreateRelay(const std::shared_ptr<grpc::Channel>& api, const std::string& hub_route,
                         const std::string& name, v1::Relay* out, bool exist_ok = false);
// GetRelay, failing the test on error.
v1::Relay GetRelay(const std::shared_ptr<grpc::Channel>& api, const std::string& name);
// Waits (bounded) until the relay `name` is UP with at least `registrations` registrations.
bool WaitRelayUp(const std::shared_ptr<grpc::Channel>& api, const std::string& name,
                 uint64_t registrations, std::chrono::seconds limit = std::chrono::seconds(30));

// One Serve stream. Writes (Write, Ack, Send) may come from several threads: they are
// serialised, as a gRPC stream allows one writer at a time. Read from one thread.
class ServeClient {
 public:
  // `accept_unencrypted`: also take messages from other nodes outside secure channels.
  ServeClient(const std::shared_ptr<grpc::Channel>& channel, const std::string& address,
              uint32_t window = 0, bool accept_unencrypted = false);
  ~ServeClient();
  // The first response: `opened` when the open succeeded. nullopt when the stream ended.
  std::optional<v1::ServeResponse> Read();
  bool Write(const v1::ServeRequest& request);
  bool Ack(uint64_t sequence);
  // `delivery_receipts`: results once the far app acked each message (SendBatch).
  bool Send(uint64_t batch_id, const std::vector<std::pair<std::string, std::string>>& messages,
            bool delivery_receipts = false);
  void Cancel() { context_.TryCancel(); }
  // Half-closes and returns the final status.
  grpc::Status Finish();
  grpc::ClientContext& context() { return context_; }

 private:
  std::unique_ptr<v1::MessagingService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ServeRequest, v1::ServeResponse>> stream_;
  std::mutex write_mu_;
  bool finished_ = false;
};

// An app serving `address` that echoes every delivery back to its return route.
class EchoApp {
 public:
  EchoApp(const std::shared_ptr<grpc::Channel>& channel, const std::string& address,
          bool accept_unencrypted = false);
  ~EchoApp();
  // True once `opened` arrived.
  bool WaitOpened();
  uint64_t echoed() const { return echoed_.load(); }
  // The sender of the last delivery.
  v1::Sender last_sender();

 private:
  void Run();
  ServeClient client_;
  std::atomic<uint64_t> echoed_{0};
  std::atomic<int> opened_{0};  // 0 pending, 1 opened, -1 failed
  std::mutex mu_;
  v1::Sender last_sender_;
  std::thread thread_;
};

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_API_CLIENT_H_
