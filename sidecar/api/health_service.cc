#include "sidecar/api/health_service.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "sidecar/api/grpc_status.h"
#include "sidecar/common/error_reason.h"

namespace veil::api {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream: writes the current status, then every change, until ended or cancelled.
class HealthService::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse>,
                                     public std::enable_shared_from_this<Watcher> {
 public:
  static Watcher* Create() {
    std::shared_ptr<Watcher> w(new Watcher());
    w->self_ = w;
    return w.get();
  }
  // Queues `status` if it differs from the last one sent or queued.
  void Update(HealthCheckResponse::ServingStatus status) {
    {
      veil::MutexLock lock(&mu_);
      if (last_ == status) return;
      last_ = status;
      next_ = status;
    }
    Pump();
  }
  void End() {
    {
      veil::MutexLock lock(&mu_);
      ending_ = true;
    }
    Pump();
  }
  void OnWriteDone(bool ok) override {
    {
      veil::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) ending_ = true;
    }
    Pump();
  }
  void OnCancel() override { End(); }
  void OnDone() override { self_.reset(); }

 private:
  Watcher() = default;
  void Pump() {
    bool finish = false;
    {
      veil::MutexLock lock(&mu_);
      if (writing_ || finished_) return;
      if (next_.has_value() && !ending_) {
        response_.set_status(*next_);
        next_.reset();
        writing_ = true;
      } else if (ending_) {
        finished_ = finish = true;
      } else {
        return;
      }
    }
    if (finish) {
      Finish(grpc::Status::OK);
    } else {
      StartWrite(&response_);
    }
  }

  std::shared_ptr<Watcher> self_;
  veil::Mutex mu_;
  std::optional<HealthCheckResponse::ServingStatus> last_ ABSL_GUARDED_BY(mu_);
  std::optional<HealthCheckResponse::ServingStatus> next_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  HealthCheckResponse response_;
};

HealthService::HealthService(std::vector<std::string> services)
    : services_(services.begin(), services.end()) {}

HealthCheckResponse::ServingStatus HealthService::StatusOf(const std::string& service) const {
  if (!service.empty() && !services_.contains(service)) return HealthCheckResponse::SERVICE_UNKNOWN;
  return serving_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  HealthCheckResponse::ServingStatus status;
  {
    veil::MutexLock lock(&mu_);
    status = StatusOf(request->service());
  }
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    reactor->Finish(GrpcError(absl::StatusCode::kNotFound,
                              absl::StrCat("unknown service \"", request->service(), "\""),
                              reason::kServiceUnknown));
    return reactor;
  }
  response->set_status(status);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* context, const HealthCheckRequest* request) {
  Watcher* watcher = Watcher::Create();
  HealthCheckResponse::ServingStatus status;
  bool ended;
  {
    veil::MutexLock lock(&mu_);
    status = StatusOf(request->service());
    ended = ended_;
    std::erase_if(watchers_, [](const auto& w) { return w.expired(); });
    // Only watchers of a known service can ever see a change.
    if (!ended && status != HealthCheckResponse::SERVICE_UNKNOWN) {
      watchers_.push_back(watcher->weak_from_this());
    }
  }
  watcher->Update(status);
  if (ended) watcher->End();
  return watcher;
}

void HealthService::SetServing(bool serving) {
  std::vector<std::pair<std::shared_ptr<Watcher>, HealthCheckResponse::ServingStatus>> updates;
  {
    veil::MutexLock lock(&mu_);
    serving_ = serving;
    for (auto& weak : watchers_) {
      if (auto w = weak.lock()) updates.emplace_back(std::move(w), StatusOf(""));
    }
  }
  for (auto& [w, status] : updates) w->Update(status);
}

void HealthService::EndWatches() {
  std::vector<std::weak_ptr<Watcher>> watchers;
  {
    veil::MutexLock lock(&mu_);
    ended_ = true;
    watchers.swap(watchers_);
  }
  for (auto& weak : watchers) {
    if (auto w = weak.lock()) w->End();
  }
}

}  // namespace veil::api
