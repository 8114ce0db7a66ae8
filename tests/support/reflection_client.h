// Test support: a generic gRPC client that knows no .proto file of the server, as grpcurl: it
// learns services and messages through server reflection (grpc.reflection.v1alpha), builds
// requests from JSON with the reflected descriptors, and calls unary and bidi-streaming
// methods by name.
//
// Thread-safety: a ReflectionClient is used from one thread; a BidiCall's Write and Read may
// run on two threads at once.
#ifndef VEIL_TESTS_SUPPORT_REFLECTION_CLIENT_H_
#define VEIL_TESTS_SUPPORT_REFLECTION_CLIENT_H_

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor_database.h"
#include "google/protobuf/dynamic_message.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace veil::testing {

class ReflectionClient {
 public:
  explicit ReflectionClient(std::shared_ptr<grpc::Channel> channel);
  ~ReflectionClient();

  std::vector<std::string> ListServices();
  // Loads the file defining `symbol` (a service, message or method) and every file it imports.
  // False when the server does not know it.
  bool LoadSymbol(const std::string& symbol);
  const google::protobuf::DescriptorPool& pool() const { return pool_; }

  // A fresh message of `type` (loaded), filled from `json` (proto field names); nullptr and
  // `error` set when the JSON does not fit the type.
  std::unique_ptr<google::protobuf::Message> FromJson(const google::protobuf::Descriptor* type,
                                                      const std::string& json, std::string* error);
  static std::string ToJson(const google::protobuf::Message& message);

  // Calls the unary `method` ("pkg.Service/Method", loaded) with a JSON request; the JSON
  // response in `*reply_json`.
  grpc::Status CallJson(const std::string& method, const std::string& request_json,
                        std::string* reply_json, std::chrono::milliseconds deadline);

  grpc::Channel& channel() { return *channel_; }

 private:
  grpc::reflection::v1alpha::ServerReflectionResponse Ask(
      const grpc::reflection::v1alpha::ServerReflectionRequest& request);
  bool AddFiles(const grpc::reflection::v1alpha::ServerReflectionResponse& response);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::reflection::v1alpha::ServerReflection::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<grpc::reflection::v1alpha::ServerReflectionRequest,
                                           grpc::reflection::v1alpha::ServerReflectionResponse>>
      stream_;
  std::set<std::string> loaded_;
  google::protobuf::SimpleDescriptorDatabase db_;
  google::protobuf::DescriptorPool pool_{&db_};
  google::protobuf::DynamicMessageFactory factory_{&pool_};
};

// Calls `method` ("/pkg.Service/Method") with serialized `request`; the serialized reply.
grpc::Status CallRaw(std::shared_ptr<grpc::Channel> channel, const std::string& method,
                     const std::string& request, std::string* reply,
                     std::chrono::milliseconds deadline = std::chrono::seconds(10));

// A bidi-streaming call by name, with serialized messages both ways.
class BidiCall final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  BidiCall(grpc::Channel& channel, const std::string& method);  // "/pkg.Service/Method"
  ~BidiCall() override;
  bool Write(const std::string& message);
  // The next message, within `timeout`; nullopt when the stream ended or nothing came.
  std::optional<std::string> Read(std::chrono::milliseconds timeout);
  // Half-closes and waits for the status.
  grpc::Status Finish();
  void Cancel() { context_.TryCancel(); }

  void OnWriteDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  grpc::GenericStub stub_;
  grpc::ClientContext context_;
  grpc::ByteBuffer write_buffer_, read_buffer_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool writing_ = false, write_ok_ = true, ended_ = false, done_ = false;
  std::deque<std::string> received_;
  grpc::Status status_;
};

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_REFLECTION_CLIENT_H_
