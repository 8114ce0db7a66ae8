// veil_sdk: a thin C++ helper over the generated veil.v1 stubs (veil/v1/*.grpc.pb.h).
//
//   veil::sdk::Sidecar bob = veil::sdk::Sidecar::Connect();     // $VEIL_API or the default
//   bob.CreateListener("listener");                             // trust everyone
//   veil::v1::Relay relay = bob.CreateRelay("/tcp/hub:4000");
//   bob.Serve("echoer", [](veil::sdk::Message& m) { m.Reply(m.payload()); });
//
//   auto channel = alice.OpenChannel("/tcp/hub:4000/service/forward_to_bob/service/listener");
//   std::string echo = alice.Request(channel.route() + "/service/echoer", "Hello").payload();
//
// Failures throw veil::sdk::Error (code, message and the google.rpc.ErrorInfo reason).
// Build with the stubs in this directory (or your own from proto/) and gRPC C++.
#ifndef VEIL_SDK_CPP_VEIL_SDK_H_
#define VEIL_SDK_CPP_VEIL_SDK_H_

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

#include "grpcpp/grpcpp.h"
#include "veil/v1/identity.grpc.pb.h"
#include "veil/v1/messaging.grpc.pb.h"
#include "veil/v1/node.grpc.pb.h"
#include "veil/v1/relay.grpc.pb.h"
#include "veil/v1/secure_channel.grpc.pb.h"

namespace veil::sdk {

// A failed call.
class Error : public std::runtime_error {
 public:
  explicit Error(const grpc::Status& status);
  grpc::StatusCode code() const { return code_; }
  // The ErrorInfo reason, e.g. "ROUTE_NOT_FOUND"; "" when none.
  const std::string& reason() const { return reason_; }

 private:
  grpc::StatusCode code_;
  std::string reason_;
};

// Keeps glibc from returning gRPC's large receive buffers to the kernel after every message
// (which makes each receive page-fault fresh memory): raises the trim and mmap thresholds to
// 256 MiB. Connect calls it; call it first in a program that makes its own channels.
void TuneMalloc();

// The google.rpc.ErrorInfo reason of a failed status, e.g. "ROUTE_NOT_FOUND"; "" when none.
std::string ReasonOf(const grpc::Status& status);

// $VEIL_API, else unix:$VEIL_STATE_DIR/api.sock, else unix:$HOME/.veil/api.sock.
std::string DefaultApi();

// A TrustPolicy trusting everyone, or one identifier.
v1::TrustPolicy TrustEveryone();
v1::TrustPolicy TrustIdentifier(const std::string& identifier);

class ServeStream;

// A Serve stream on the sidecar's serve socket (Node.serve_socket; docs/api.md, "The serve
// socket"): the same ServeRequest / ServeResponse messages as MessagingService.Serve, framed on
// a Unix socket without gRPC — several times cheaper per message. One thread may Write while
// another Reads.
//
//   auto s = veil::sdk::ServeSocket::Open(bob.GetNode().serve_socket(), "echoer");
//   veil::v1::ServeResponse r;
//   while (s.Read(&r)) { ... s.Write(ack_or_send); }
//   s.status();  // why it ended
class ServeSocket {
 public:
  // Connects to `path` and opens `address` with `window` (0: the sidecar's default). Throws
  // Error: UNAVAILABLE when nothing answers at `path`; the sidecar's refusal (e.g.
  // ALREADY_EXISTS) when it does not open the address.
  static ServeSocket Open(const std::string& path, const std::string& address, uint32_t window = 0);
  ServeSocket(ServeSocket&& other) noexcept;
  ServeSocket& operator=(ServeSocket&& other) noexcept;
  ~ServeSocket();

  // The sidecar's `opened` answer: address, route, window.
  const v1::ServeResponse::Opened& opened() const { return opened_; }

  // Writes one request (ack or send). False when the connection is gone.
  bool Write(const v1::ServeRequest& request);
  // Writes several in one system call (e.g. a reply and the ack of what it answers): the
  // sidecar reads them together. False when the connection is gone.
  bool Write(std::span<const v1::ServeRequest> requests);
  // Reads the next response (deliveries or a send result). False once the stream has ended:
  // status() then says why.
  bool Read(v1::ServeResponse* response);
  // Half-closes: the sidecar finishes the stream (status OK) once everything is written.
  void WritesDone();
  // How the stream ended (valid once Read returned false): the sidecar's `closed` status, or
  // UNAVAILABLE when the connection broke without one.
  const grpc::Status& status() const { return status_; }

 private:
  explicit ServeSocket(int fd) : fd_(fd) {}
  bool Fill(size_t want);

  int fd_ = -1;
  v1::ServeResponse::Opened opened_;
  std::unique_ptr<char[]> in_;  // read buffer: [in_begin_, in_end_) is unread
  size_t in_capacity_ = 0;
  size_t in_begin_ = 0;
  size_t in_end_ = 0;
  bool version_read_ = false;
  std::string out_;  // write buffer
  grpc::Status status_ = grpc::Status(grpc::UNAVAILABLE, "the serve socket stream is open");
};

// A delivery on a Serve stream.
class Message {
 public:
  const std::string& payload() const { return delivery_.payload(); }
  const v1::Sender& sender() const { return delivery_.sender(); }
  const std::string& return_route() const { return delivery_.return_route(); }
  // Answers along the return route (through the secure channel it came from). If the sidecar
  // has ended the stream, Reply unwinds the handler and Sidecar::Serve throws the sidecar's
  // status (NODE_SHUTTING_DOWN, …).
  void Reply(std::string payload);

 private:
  friend class ServeStream;
  friend class Sidecar;
  Message(ServeStream& stream, v1::Delivery delivery)
      : stream_(stream), delivery_(std::move(delivery)) {}
  ServeStream& stream_;
  v1::Delivery delivery_;
};

class Sidecar {
 public:
  // Connects to `target` ("" = DefaultApi()), waiting up to `wait` for the sidecar to answer
  // (it may still be starting). Throws Error(UNAVAILABLE) when it does not.
  static Sidecar Connect(const std::string& target = "",
                         std::chrono::seconds wait = std::chrono::seconds(60));

  v1::Node GetNode();
  v1::Identity GetIdentity(const std::string& name = "default");
  // A listener at `address`; Error(ALREADY_EXISTS) when one is there.
  v1::SecureChannelListener CreateListener(const std::string& address,
                                           const v1::TrustPolicy& policy = TrustEveryone(),
                                           const std::string& identity = "default");
  // CreateListener that an app can run again: a listener already at `address` with this
  // identity and policy is returned (one that differs is still ALREADY_EXISTS).
  v1::SecureChannelListener EnsureListener(const std::string& address,
                                           const v1::TrustPolicy& policy = TrustEveryone(),
                                           const std::string& identity = "default");
  // Stops the listener; channels it accepted stay up.
  void DeleteListener(const std::string& address);
  v1::SecureChannel OpenChannel(const std::string& route,
                                const v1::TrustPolicy& policy = TrustEveryone(),
                                const std::string& identity = "default");
  // Closes the channel at `address` (SecureChannel::address()) and tells the other end.
  void CloseChannel(const std::string& address);
  // A relay on the hub at `hub_route` ("" name: the hub picks one).
  v1::Relay CreateRelay(const std::string& hub_route, const std::string& name = "",
                        const std::string& identity = "default");
  // CreateRelay that an app can run again: the relay this sidecar already keeps on that hub for
  // `identity` (named `name`, or any when "") is returned, with its forwarding address.
  v1::Relay EnsureRelay(const std::string& hub_route, const std::string& name = "",
                        const std::string& identity = "default");
  // Unregisters relay `name` from its hub (freeing the name) and stops it.
  void DeleteRelay(const std::string& name);
  // Sends one message; returns once it was handed on, or, with `delivered`, once its far app
  // acknowledged it (a delivery receipt, docs/api.md). Otherwise throws Error with the reason,
  // e.g. DELIVERY_UNKNOWN when its secure channel closed before the far end confirmed it,
  // MESSAGE_DROPPED when the app went without acking.
  void Send(const std::string& route, std::string payload, bool delivered = false,
            std::chrono::milliseconds deadline = std::chrono::seconds(30));
  // Send without waiting: a future that becomes ready once the message was delivered (or handed
  // on, without `delivered`); its get() throws Error when it was not.
  std::future<void> SendAsync(const std::string& route, std::string payload, bool delivered = true,
                              std::chrono::milliseconds deadline = std::chrono::seconds(30));
  // Sends and waits (up to `deadline`) for one reply.
  v1::Delivery Request(const std::string& route, std::string payload,
                       std::chrono::milliseconds deadline = std::chrono::seconds(30));
  // Serves `address` until the stream ends (the sidecar stops or `handler` throws): calls
  // `handler` for each delivery and acknowledges each batch once handled. `on_open` is called
  // with the served route once the sidecar confirms. Uses the sidecar's serve socket when it
  // has one this process can reach (GetNode().serve_socket()), else the gRPC Serve call.
  void Serve(const std::string& address, const std::function<void(Message&)>& handler,
             const std::function<void(const std::string&)>& on_open = nullptr);

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  explicit Sidecar(std::shared_ptr<grpc::Channel> channel);
  std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds deadline) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::NodeService::Stub> node_;
  std::unique_ptr<v1::IdentityService::Stub> identities_;
  std::unique_ptr<v1::SecureChannelService::Stub> channels_;
  std::unique_ptr<v1::RelayService::Stub> relays_;
  std::unique_ptr<v1::MessagingService::Stub> messaging_;
};

}  // namespace veil::sdk

#endif  // VEIL_SDK_CPP_VEIL_SDK_H_
