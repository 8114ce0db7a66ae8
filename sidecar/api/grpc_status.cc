#include "sidecar/api/grpc_status.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/descriptor.h"
#include "google/rpc/error_details.pb.h"
#include "sidecar/common/error_reason.h"

namespace veil::api {
namespace {

// The method's descriptor, for "/veil.v1.NodeService/GetNode"; null when it is not ours.
const google::protobuf::MethodDescriptor* MethodNamed(absl::string_view path) {
  if (path.empty() || path.front() != '/') return nullptr;
  return google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
      absl::StrReplaceAll(path.substr(1), {{"/", "."}}));
}

class UnparsableRequestInterceptor final : public grpc::experimental::Interceptor {
 public:
  // `method` is the call's ServerRpcInfo::method(), which outlives the call's interceptors.
  explicit UnparsableRequestInterceptor(const char* method) : method_(method) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      // What gRPC's callback handler sends when the request did not deserialize; our
      // handlers always say what went wrong. (The descriptor is looked up only then: not on
      // every call.)
      const google::protobuf::MethodDescriptor* method = nullptr;
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty() && (method = MethodNamed(method_)) != nullptr) {
        methods->ModifySendStatus(GrpcError(
            absl::StatusCode::kInvalidArgument,
            absl::StrCat("the request does not parse as ", method->input_type()->full_name(),
                         " (the message ", method->full_name(),
                         " takes): a client built from another .proto, or corrupted bytes"),
            reason::kInvalidRequest));
      }
    }
    methods->Proceed();
  }

 private:
  const char* method_;
};

class UnparsableRequestFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (info->type() != grpc::experimental::ServerRpcInfo::Type::UNARY) return nullptr;
    return new UnparsableRequestInterceptor(info->method());
  }
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
UnparsableRequestExplainer() {
  return std::make_unique<UnparsableRequestFactory>();
}

google::rpc::Status ToRpcStatus(const absl::Status& status,
                                const std::map<std::string, std::string>& metadata) {
  google::rpc::Status out;
  out.set_code(static_cast<int>(status.code()));
  out.set_message(std::string(status.message()));
  if (status.ok()) return out;
  google::rpc::ErrorInfo info;
  std::string reason = ReasonOf(status);
  if (reason.empty()) reason = absl::AsciiStrToUpper(absl::StatusCodeToString(status.code()));
  info.set_reason(reason);
  info.set_domain(kErrorDomain);
  for (const auto& [k, v] : metadata) (*info.mutable_metadata())[k] = v;
  out.add_details()->PackFrom(info);
  return out;
}

grpc::Status ToGrpcStatus(const absl::Status& status,
                          const std::map<std::string, std::string>& metadata) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                      ToRpcStatus(status, metadata).SerializeAsString());
}

grpc::Status GrpcError(absl::StatusCode code, absl::string_view message, absl::string_view reason,
                       const std::map<std::string, std::string>& metadata) {
  return ToGrpcStatus(ErrorWithReason(code, message, reason), metadata);
}

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                      const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace veil::api
