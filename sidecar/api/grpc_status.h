// Conversion of absl::Status (with its veil reason, see common/error_reason.h) into gRPC
// statuses that carry a google.rpc.Status with one google.rpc.ErrorInfo detail.
//
// Thread-safety: pure functions.
#ifndef VEIL_SIDECAR_API_GRPC_STATUS_H_
#define VEIL_SIDECAR_API_GRPC_STATUS_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status.h"

namespace veil::api {

inline constexpr char kErrorDomain[] = "veil.dev";

// The google.rpc.Status for `status`: same code and message, an ErrorInfo with the status's
// reason (or one derived from the code when it has none) and `metadata`.
google::rpc::Status ToRpcStatus(const absl::Status& status,
                                const std::map<std::string, std::string>& metadata = {});

// The gRPC status for `status`, with ToRpcStatus() serialized as its details.
grpc::Status ToGrpcStatus(const absl::Status& status,
                          const std::map<std::string, std::string>& metadata = {});

// Shorthand: a gRPC error of `code` with `message` and `reason`.
grpc::Status GrpcError(absl::StatusCode code, absl::string_view message, absl::string_view reason,
                       const std::map<std::string, std::string>& metadata = {});

// Finishes a unary call with `status` (OK or the error, as ToGrpcStatus) and returns its reactor.
grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                      const absl::Status& status);

// For the API server's builder: turns gRPC's bare UNIMPLEMENTED (no message, no details) for a
// unary request whose bytes do not parse as its method's request message into INVALID_ARGUMENT
// (INVALID_REQUEST) naming the message it should have been. Unary calls only: streams are not
// intercepted, so their messages pay nothing.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> UnparsableRequestExplainer();

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_GRPC_STATUS_H_
