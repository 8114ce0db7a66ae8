#include "sidecar/api/grpc_status.h"

#include "absl/strings/ascii.h"
#include "google/rpc/error_details.pb.h"
#include "sidecar/common/error_reason.h"

namespace veil::api {

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
