#include "veil_sdk.h"

#include <malloc.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "veil_frame.h"

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

namespace {

constexpr unsigned char kServeSocketVersion = 1;
constexpr const char* kClosedWithoutStatus = "the serve socket closed without a status";

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

ServeSocket ServeSocket::Open(const std::string& path, const std::string& address,
                              uint32_t window) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    throw Error(grpc::Status(grpc::INVALID_ARGUMENT, "bad serve socket path \"" + path + "\""));
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(grpc::Status(grpc::UNAVAILABLE, std::strerror(errno)));
  ServeSocket s(fd);
  // Room for a whole batch of requests in the socket (capped by net.core.wmem_max).
  const int buffer = 4 * 1024 * 1024;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof(buffer));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    throw Error(grpc::Status(grpc::UNAVAILABLE, "cannot connect to the serve socket " + path +
                                                    ": " + std::strerror(errno)));
  }
  const char version = static_cast<char>(kServeSocketVersion);
  v1::ServeRequest open;
  open.mutable_open()->set_address(address);
  open.mutable_open()->set_window(window);
  v1::ServeResponse response;
  // A refusal (too many streams, shutting down) can come before the sidecar reads `open`, and its
  // close can then fail this write with EPIPE: the `closed` status is still there to read.
  const bool sent = WriteAll(fd, &version, 1) && s.Write(open);
  const int write_error = errno;
  if (!s.Read(&response)) {
    if (!sent && s.status().error_message() == kClosedWithoutStatus) {
      throw Error(grpc::Status(grpc::UNAVAILABLE, "cannot write to the serve socket " + path +
                                                      ": " + std::strerror(write_error)));
    }
    throw Error(s.status());
  }
  if (!response.has_opened()) {
    throw Error(grpc::Status(grpc::INTERNAL, "the sidecar did not answer `open` with `opened`"));
  }
  s.opened_ = std::move(*response.mutable_opened());
  return s;
}

ServeSocket::ServeSocket(ServeSocket&& other) noexcept { *this = std::move(other); }

ServeSocket& ServeSocket::operator=(ServeSocket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    opened_ = std::move(other.opened_);
    in_ = std::move(other.in_);
    in_capacity_ = std::exchange(other.in_capacity_, 0);
    in_end_ = std::exchange(other.in_end_, 0);
    in_begin_ = std::exchange(other.in_begin_, 0);
    version_read_ = other.version_read_;
    out_ = std::move(other.out_);
    status_ = other.status_;
  }
  return *this;
}

ServeSocket::~ServeSocket() {
  if (fd_ >= 0) ::close(fd_);
}

bool ServeSocket::Write(const v1::ServeRequest& request) {
  return Write(std::span<const v1::ServeRequest>(&request, 1));
}

bool ServeSocket::Write(std::span<const v1::ServeRequest> requests) {
  size_t total = 0;
  for (const auto& r : requests) total += veil::frame::kHeaderBytes + r.ByteSizeLong();
  out_.resize(total);
  char* p = out_.data();
  for (const auto& r : requests) {
    const size_t size = r.GetCachedSize();
    veil::frame::PutLength(p, static_cast<uint32_t>(size));
    r.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(p + veil::frame::kHeaderBytes));
    p += veil::frame::kHeaderBytes + size;
  }
  return WriteAll(fd_, out_.data(), out_.size());
}

void ServeSocket::WritesDone() { ::shutdown(fd_, SHUT_WR); }

// Reads until at least `want` unread bytes are buffered. False at the end of the connection.
bool ServeSocket::Fill(size_t want) {
  if (in_end_ - in_begin_ >= want) return true;
  if (in_begin_ > 0) {  // keep the unread bytes at the start
    std::memmove(in_.get(), in_.get() + in_begin_, in_end_ - in_begin_);
    in_end_ -= in_begin_;
    in_begin_ = 0;
  }
  if (in_capacity_ < want || in_capacity_ == 0) {
    const size_t capacity = std::max<size_t>({want, 2 * in_capacity_, 256 * 1024});
    std::unique_ptr<char[]> bigger(new char[capacity]);  // not zeroed: it is read into
    if (in_end_ > 0) std::memcpy(bigger.get(), in_.get(), in_end_);
    in_ = std::move(bigger);
    in_capacity_ = capacity;
  }
  while (in_end_ < want) {
    ssize_t n = ::recv(fd_, in_.get() + in_end_, in_capacity_ - in_end_, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    in_end_ += static_cast<size_t>(n);
  }
  return true;
}

bool ServeSocket::Read(v1::ServeResponse* response) {
  for (;;) {
    if (fd_ < 0) return false;
    const bool first = !version_read_;
    if (!Fill((first ? 1 : 0) + veil::frame::kHeaderBytes)) break;
    if (first) {
      if (static_cast<unsigned char>(in_[in_begin_]) != kServeSocketVersion) {
        status_ = grpc::Status(grpc::UNIMPLEMENTED,
                               "the sidecar speaks serve socket version " +
                                   std::to_string(static_cast<unsigned char>(in_[in_begin_])));
        return false;
      }
      ++in_begin_;
      version_read_ = true;
    }
    const size_t size = veil::frame::GetLength(in_.get() + in_begin_);
    if (!Fill(veil::frame::kHeaderBytes + size)) break;
    if (!response->ParseFromArray(in_.get() + in_begin_ + veil::frame::kHeaderBytes,
                                  static_cast<int>(size))) {
      status_ =
          grpc::Status(grpc::INTERNAL, "the sidecar sent a frame that is not a ServeResponse");
      return false;
    }
    in_begin_ += veil::frame::kHeaderBytes + size;
    if (!response->has_closed()) return true;
    const google::rpc::Status& closed = response->closed();
    status_ = grpc::Status(static_cast<grpc::StatusCode>(closed.code()), closed.message(),
                           closed.SerializeAsString());
    return false;
  }
  status_ = grpc::Status(grpc::UNAVAILABLE, kClosedWithoutStatus);
  return false;
}

// Thrown by Message::Reply when the stream can no longer be written (the sidecar ended it):
// Sidecar::Serve catches it, reads on to the stream's status and throws that instead.
struct ServeStreamEnded {};

// The Serve stream's writer side, shared by Messages so they can reply: the gRPC call or the
// serve socket.
class ServeStream {
 public:
  explicit ServeStream(grpc::ClientReaderWriter<v1::ServeRequest, v1::ServeResponse>* stream)
      : grpc_(stream) {}
  explicit ServeStream(ServeSocket* socket) : socket_(socket) {}
  void Send(const std::string& route, std::string payload) {
    v1::ServeRequest request;
    request.mutable_send()->set_batch_id(++batch_);
    request.mutable_send()->set_failures_only(true);  // a result only when it failed
    auto* m = request.mutable_send()->add_messages();
    m->set_route(route);
    m->set_payload(std::move(payload));
    if (!Write(request)) throw ServeStreamEnded{};
  }
  bool Write(const v1::ServeRequest& request) {
    return grpc_ != nullptr ? grpc_->Write(request) : socket_->Write(request);
  }
  bool Read(v1::ServeResponse* response) {
    return grpc_ != nullptr ? grpc_->Read(response) : socket_->Read(response);
  }

 private:
  grpc::ClientReaderWriter<v1::ServeRequest, v1::ServeResponse>* grpc_ = nullptr;
  ServeSocket* socket_ = nullptr;
  uint64_t batch_ = 0;
};

void Message::Reply(std::string payload) {
  stream_.Send(delivery_.return_route(), std::move(payload));
}

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
  auto open = [&api](int receive_limit) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(receive_limit);
    return grpc::CreateCustomChannel(api, grpc::InsecureChannelCredentials(), args);
  };
  constexpr int kDefaultReceiveLimit = 64 * 1024 * 1024;  // the sidecar's default
  auto channel = open(kDefaultReceiveLimit);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + wait)) {
    throw Error(grpc::Status(grpc::UNAVAILABLE,
                             "no veil sidecar answers at " + api + "; is veild running?"));
  }
  // A delivery can be as large as the sidecar's own message limit: accept that much.
  v1::Node node;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (v1::NodeService::NewStub(channel)->GetNode(&context, {}, &node).ok() &&
      node.max_message_bytes() > static_cast<uint64_t>(kDefaultReceiveLimit)) {
    channel = open(static_cast<int>(
        std::min<uint64_t>(node.max_message_bytes(), std::numeric_limits<int>::max())));
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

namespace {

v1::CreateSecureChannelListenerRequest ListenerRequest(const std::string& address,
                                                       const v1::TrustPolicy& policy,
                                                       const std::string& identity, bool exist_ok) {
  v1::CreateSecureChannelListenerRequest request;
  request.set_address(address);
  request.set_identity(identity);
  *request.mutable_trust_policy() = policy;
  request.set_exist_ok(exist_ok);
  return request;
}

v1::CreateRelayRequest RelayRequest(const std::string& hub_route, const std::string& name,
                                    const std::string& identity, bool exist_ok) {
  v1::CreateRelayRequest request;
  request.set_hub_route(hub_route);
  request.set_name(name);
  request.set_identity(identity);
  request.set_exist_ok(exist_ok);
  return request;
}

}  // namespace

v1::SecureChannelListener Sidecar::CreateListener(const std::string& address,
                                                  const v1::TrustPolicy& policy,
                                                  const std::string& identity) {
  v1::SecureChannelListener out;
  Check(channels_->CreateSecureChannelListener(Context(std::chrono::seconds(30)).get(),
                                               ListenerRequest(address, policy, identity, false),
                                               &out));
  return out;
}

v1::SecureChannelListener Sidecar::EnsureListener(const std::string& address,
                                                  const v1::TrustPolicy& policy,
                                                  const std::string& identity) {
  v1::SecureChannelListener out;
  Check(channels_->CreateSecureChannelListener(Context(std::chrono::seconds(30)).get(),
                                               ListenerRequest(address, policy, identity, true),
                                               &out));
  return out;
}

void Sidecar::DeleteListener(const std::string& address) {
  v1::DeleteSecureChannelListenerRequest request;
  request.set_address(address);
  v1::DeleteSecureChannelListenerResponse out;
  Check(channels_->DeleteSecureChannelListener(Context(std::chrono::seconds(30)).get(), request,
                                               &out));
}

void Sidecar::CloseChannel(const std::string& address) {
  v1::DeleteSecureChannelRequest request;
  request.set_address(address);
  v1::DeleteSecureChannelResponse out;
  Check(channels_->DeleteSecureChannel(Context(std::chrono::seconds(30)).get(), request, &out));
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
  v1::Relay out;
  Check(relays_->CreateRelay(Context(std::chrono::seconds(30)).get(),
                             RelayRequest(hub_route, name, identity, false), &out));
  return out;
}

v1::Relay Sidecar::EnsureRelay(const std::string& hub_route, const std::string& name,
                               const std::string& identity) {
  v1::Relay out;
  Check(relays_->CreateRelay(Context(std::chrono::seconds(30)).get(),
                             RelayRequest(hub_route, name, identity, true), &out));
  return out;
}

void Sidecar::DeleteRelay(const std::string& name) {
  v1::DeleteRelayRequest request;
  request.set_name(name);
  v1::DeleteRelayResponse out;
  Check(relays_->DeleteRelay(Context(std::chrono::seconds(30)).get(), request, &out));
}

namespace {

v1::SendRequest SendRequestOf(const std::string& route, std::string payload, bool delivered) {
  v1::SendRequest request;
  auto* m = request.add_messages();
  m->set_route(route);
  m->set_payload(std::move(payload));
  request.set_delivery_receipts(delivered);
  return request;
}

}  // namespace

void Sidecar::Send(const std::string& route, std::string payload, bool delivered,
                   std::chrono::milliseconds deadline) {
  v1::SendResponse out;
  Check(messaging_->Send(Context(deadline).get(),
                         SendRequestOf(route, std::move(payload), delivered), &out));
}

std::future<void> Sidecar::SendAsync(const std::string& route, std::string payload, bool delivered,
                                     std::chrono::milliseconds deadline) {
  // What the call needs until it completes, owned by its completion.
  struct Call {
    std::unique_ptr<grpc::ClientContext> context;
    v1::SendRequest request;
    v1::SendResponse response;
    std::promise<void> done;
  };
  auto call = std::make_shared<Call>();
  call->context = Context(deadline);
  call->request = SendRequestOf(route, std::move(payload), delivered);
  std::future<void> result = call->done.get_future();
  messaging_->async()->Send(call->context.get(), &call->request, &call->response,
                            [call](grpc::Status status) {
                              if (status.ok()) {
                                call->done.set_value();
                              } else {
                                call->done.set_exception(std::make_exception_ptr(Error(status)));
                              }
                            });
  return result;
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
  // Deliveries until the stream ends; each batch acknowledged once handled.
  auto run = [&](ServeStream& serve, const std::string& route) {
    if (on_open) on_open(route);
    v1::ServeResponse response;
    try {
      while (serve.Read(&response)) {
        if (!response.has_deliveries() || response.deliveries().deliveries().empty()) continue;
        uint64_t last = 0;
        for (auto& delivery : *response.mutable_deliveries()->mutable_deliveries()) {
          last = delivery.sequence();
          Message message(serve, std::move(delivery));
          handler(message);
        }
        v1::ServeRequest ack;
        ack.mutable_ack()->set_sequence(last);
        if (!serve.Write(ack)) throw ServeStreamEnded{};
      }
    } catch (const ServeStreamEnded&) {
      // A write failed because the sidecar ended the stream: its status (NODE_SHUTTING_DOWN,
      // …) follows what it already sent.
      while (serve.Read(&response)) {
      }
    }
  };
  std::optional<ServeSocket> socket;
  if (const std::string path = GetNode().serve_socket(); !path.empty()) {
    try {
      socket.emplace(ServeSocket::Open(path, address));
    } catch (const Error& e) {
      if (e.code() != grpc::UNAVAILABLE) throw;  // refused: gRPC would refuse alike
      // Not reachable from here (another container, another user): use gRPC.
    }
  }
  if (socket.has_value()) {
    ServeStream serve(&*socket);
    run(serve, socket->opened().route());
    Check(socket->status());
    return;
  }
  grpc::ClientContext context;
  auto stream = messaging_->Serve(&context);
  ServeStream serve(stream.get());
  v1::ServeRequest open;
  open.mutable_open()->set_address(address);
  stream->Write(open);
  v1::ServeResponse opened;
  if (stream->Read(&opened) && opened.has_opened()) run(serve, opened.opened().route());
  Check(stream->Finish());
}

}  // namespace veil::sdk
