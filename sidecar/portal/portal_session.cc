#include "sidecar/portal/portal_session.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "boost/asio/bind_executor.hpp"
#include "boost/asio/connect.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/write.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/common/log_limiter.h"
#include "spdlog/spdlog.h"

namespace veil::portal {
namespace {

// Resets its session when a frame it sent could not be handed on (the channel closed, a queue
// refused it): the byte stream would otherwise have a hole.
class ResetOnFailure final : public core::SendTracker {
 public:
  explicit ResetOnFailure(std::weak_ptr<PortalSession> session) : session_(std::move(session)) {}
  void Complete(uint32_t, absl::Status status) override {
    if (status.ok()) return;
    if (auto session = session_.lock()) {
      session->Reset(ErrorWithReason(
          status.code(), absl::StrCat("a portal frame could not be sent: ", status.message()),
          ReasonOf(status)));
    }
  }

 private:
  std::weak_ptr<PortalSession> session_;
};

absl::Status ProtocolError(absl::string_view what) {
  return ErrorWithReason(absl::StatusCode::kDataLoss,
                         absl::StrCat("portal protocol error from the far end: ", what),
                         reason::kPortalProtocolError);
}

LogLimiter& ResetLog() {
  static LogLimiter limiter;
  return limiter;
}

}  // namespace

PortalSession::PortalSession(core::Strand strand, Role role, std::string name,
                             boost::asio::ip::tcp::socket socket, uint64_t channel_via,
                             SessionOptions options, std::shared_ptr<PortalCounters> counters)
    : Worker(strand),
      role_(role),
      name_(std::move(name)),
      socket_(std::move(socket)),
      options_(options),
      counters_(std::move(counters)),
      timer_(strand),
      resolver_(strand),
      channel_via_(channel_via),
      last_activity_(std::chrono::steady_clock::now()) {
  counters_->total.fetch_add(1, std::memory_order_relaxed);
  counters_->active.fetch_add(1, std::memory_order_relaxed);
}

PortalSession::~PortalSession() {
  if (!ended_flag_) counters_->active.fetch_sub(1, std::memory_order_relaxed);
}

absl::Status PortalSession::Admit(const core::SenderInfo& from) const {
  // Only its own channel: the one the peer session speaks through.
  if (from.origin == core::SenderInfo::Origin::kSecureChannel && from.via == channel_via_ &&
      from.via != 0) {
    return absl::OkStatus();
  }
  return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                         absl::StrCat("/service/", address(),
                                      " takes messages only from its portal session's channel"),
                         reason::kAccessDenied);
}

void PortalSession::StartInlet(core::Route outlet_route) {
  peer_ = std::move(outlet_route);
  tracker_ = std::make_shared<ResetOnFailure>(weak_from_this());
  boost::system::error_code ignored;
  socket_.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
  wire::v1::PortalFrame open;
  open.mutable_open()->set_window(options_.window);
  open.mutable_open()->set_version(kPortalProtocolVersion);
  SendFrame(open);
  timer_.expires_after(options_.open_timeout);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->open_ || self->ended_flag_) return;
    self->ResetNow(ErrorWithReason(absl::StatusCode::kDeadlineExceeded,
                                   absl::StrCat("the outlet did not answer within ",
                                                self->options_.open_timeout.count(), " ms"),
                                   reason::kPortalTimeout),
                   /*tell_peer=*/false);
  });
}

void PortalSession::StartOutlet(core::Route peer, uint32_t peer_window, std::string host,
                                uint16_t port) {
  peer_ = std::move(peer);
  peer_window_ = peer_window;
  tracker_ = std::make_shared<ResetOnFailure>(weak_from_this());
  timer_.expires_after(options_.open_timeout);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->open_ || self->ended_flag_) return;
    self->resolver_.cancel();
    boost::system::error_code ignored;
    self->socket_.cancel(ignored);  // the resolve or connect completes with operation_aborted
  });
  std::string target = core::FormatHostPort(host, port);
  resolver_.async_resolve(
      host, std::to_string(port),
      boost::asio::bind_executor(
          strand(), [self = shared_from_this(), target](
                        const boost::system::error_code& ec,
                        boost::asio::ip::tcp::resolver::results_type endpoints) {
            if (self->ended_flag_) return;
            if (ec) {
              self->ConnectFailed(target, ec == boost::asio::error::operation_aborted
                                              ? "timed out resolving it"
                                              : ec.message());
              return;
            }
            self->Connect(endpoints, target);
          }));
}

void PortalSession::Connect(const boost::asio::ip::tcp::resolver::results_type& endpoints,
                            std::string target) {
  boost::asio::async_connect(
      socket_, endpoints,
      boost::asio::bind_executor(
          strand(), [self = shared_from_this(), target](const boost::system::error_code& ec,
                                                        const boost::asio::ip::tcp::endpoint&) {
            if (self->ended_flag_) return;
            if (ec) {
              self->ConnectFailed(
                  target, ec == boost::asio::error::operation_aborted ? "timed out" : ec.message());
              return;
            }
            self->timer_.cancel();
            boost::system::error_code ignored;
            self->socket_.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
            wire::v1::PortalFrame opened;
            opened.mutable_opened()->set_window(self->options_.window);
            opened.mutable_opened()->set_version(kPortalProtocolVersion);
            self->SendFrame(opened);
            self->Opened();
          }));
}

void PortalSession::ConnectFailed(const std::string& target, const std::string& why) {
  counters_->refused.fetch_add(1, std::memory_order_relaxed);
  ResetNow(ErrorWithReason(absl::StatusCode::kUnavailable,
                           absl::StrCat("the outlet ", name_, " cannot connect to its target ",
                                        target, ": ", why),
                           reason::kConnectionFailed),
           /*tell_peer=*/true);
}

void PortalSession::Opened() {
  open_ = true;
  Touch();
  ArmIdle();
  MaybeRead();
}

void PortalSession::Reset(absl::Status why) {
  boost::asio::post(strand(), [self = shared_from_this(), why = std::move(why)]() mutable {
    self->ResetNow(std::move(why), /*tell_peer=*/true);
  });
}

void PortalSession::HandleMessage(core::Message msg) {
  msg.receipt.Settle(absl::OkStatus());
  if (ended_flag_) return;
  if (!msg.refusal.ok()) {  // the far node could not hand a frame on: the peer session is gone
    ResetNow(ErrorWithReason(
                 msg.refusal.code(),
                 absl::StrCat("the far node refused a portal frame: ", msg.refusal.message()),
                 ReasonOf(msg.refusal)),
             /*tell_peer=*/false);
    return;
  }
  wire::v1::PortalFrame frame;
  if (!frame.ParseFromString(msg.payload)) {
    ResetNow(ProtocolError("not a PortalFrame"), /*tell_peer=*/true);
    return;
  }
  HandleFrame(std::move(frame), msg);
}

void PortalSession::HandleFrame(wire::v1::PortalFrame frame, const core::Message& msg) {
  switch (frame.kind_case()) {
    case wire::v1::PortalFrame::kOpened: {
      if (role_ != Role::kInlet || open_) return ResetNow(ProtocolError("unexpected Opened"), true);
      if (frame.opened().window() == 0) return ResetNow(ProtocolError("a zero window"), true);
      if (msg.return_route.empty()) return ResetNow(ProtocolError("Opened without a route"), false);
      peer_ = msg.return_route;  // the outlet's session, through the channel
      peer_window_ = frame.opened().window();
      timer_.cancel();
      Opened();
      return;
    }
    case wire::v1::PortalFrame::kData: {
      const std::string& bytes = frame.data().bytes();
      if (!open_) return ResetNow(ProtocolError("Data before the session opened"), true);
      if (peer_fin_) return ResetNow(ProtocolError("Data after Fin"), true);
      if (frame.data().offset() != received_) {
        return ResetNow(
            ProtocolError(absl::StrCat("Data at offset ", frame.data().offset(), ", expected ",
                                       received_, " (a frame was lost or repeated)")),
            true);
      }
      if (received_ + bytes.size() - written_ > options_.window) {
        return ResetNow(ProtocolError("Data beyond the window"), true);
      }
      received_ += bytes.size();
      if (!bytes.empty()) writes_.push_back(std::move(*frame.mutable_data()->mutable_bytes()));
      Touch();
      MaybeWrite();
      return;
    }
    case wire::v1::PortalFrame::kAck: {
      const uint64_t consumed = frame.ack().consumed();
      if (consumed < peer_consumed_ || consumed > sent_) {
        return ResetNow(ProtocolError("an Ack for bytes never sent"), true);
      }
      peer_consumed_ = consumed;
      MaybeRead();
      MaybeFinish();
      return;
    }
    case wire::v1::PortalFrame::kFin: {
      if (!open_ || peer_fin_) return ResetNow(ProtocolError("unexpected Fin"), true);
      if (frame.fin().offset() != received_) {
        return ResetNow(ProtocolError("Fin at the wrong offset (a frame was lost)"), true);
      }
      peer_fin_ = true;
      MaybeAck();    // when everything before was written already
      MaybeWrite();  // shuts the writing side down once what came before is written
      MaybeFinish();
      return;
    }
    case wire::v1::PortalFrame::kReset: {
      std::string reason = frame.reset().reason();
      if (reason.empty() || reason.size() > 64) reason = std::string(reason::kPortalReset);
      ResetNow(ErrorWithReason(absl::StatusCode::kAborted,
                               absl::StrCat("the far end reset the session: ",
                                            QuoteInput(frame.reset().message(), 256)),
                               reason),
               /*tell_peer=*/false);
      return;
    }
    case wire::v1::PortalFrame::kOpen:
    case wire::v1::PortalFrame::KIND_NOT_SET:
      break;
  }
  ResetNow(ProtocolError("an unexpected frame"), true);
}

void PortalSession::SendFrame(const wire::v1::PortalFrame& frame) {
  core::Message m;
  m.onward = peer_;
  m.return_route.Append(core::Address::Local(address()));
  m.payload = frame.SerializeAsString();
  m.receipt = core::Receipt(tracker_, 0);
  // The session's window bounds what it has on the way: a secure channel whose far end has not
  // granted more keeps its frames rather than refusing them.
  m.paced = true;
  router().Send(std::move(m));
}

std::string ResetFramePayload(absl::string_view reason, absl::string_view message) {
  wire::v1::PortalFrame frame;
  frame.mutable_reset()->set_reason(std::string(reason));
  frame.mutable_reset()->set_message(std::string(message));
  return frame.SerializeAsString();
}

void PortalSession::SendReset(const absl::Status& why) {
  if (peer_.empty()) return;
  core::Message m;
  m.onward = peer_;
  m.return_route.Append(core::Address::Local(address()));
  m.payload = ResetFramePayload(ReasonOf(why), why.message());
  router().Send(std::move(m));  // no receipt: the session is over either way
}

void PortalSession::MaybeRead() {
  if (!open_ || reading_ || read_closed_ || ended_flag_) return;
  if (peer_consumed_ + peer_window_ == sent_) return;  // no credit: wait for the peer's Ack
  // Wait until the socket is readable, then read into this thread's buffer: an idle session
  // holds no read buffer of its own.
  reading_ = true;
  socket_.async_wait(boost::asio::ip::tcp::socket::wait_read,
                     boost::asio::bind_executor(strand(), [self = shared_from_this()](
                                                              const boost::system::error_code& ec) {
                       self->OnReadable(ec);
                     }));
}

void PortalSession::OnReadable(const boost::system::error_code& wait_error) {
  reading_ = false;
  if (ended_flag_) return;
  if (wait_error) {
    OnRead(wait_error, 0, nullptr);
    return;
  }
  thread_local std::vector<char> buffer(kMaxReadChunk);
  const uint64_t credit = peer_consumed_ + peer_window_ - sent_;
  const size_t n = static_cast<size_t>(
      std::min<uint64_t>({credit, options_.read_chunk, static_cast<uint64_t>(buffer.size())}));
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  const size_t got = ec ? 0 : socket_.read_some(boost::asio::buffer(buffer.data(), n), ec);
  if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
    MaybeRead();  // woken for nothing: wait again
    return;
  }
  OnRead(ec, got, buffer.data());
}

void PortalSession::OnRead(const boost::system::error_code& ec, size_t n, const char* data) {
  if (n > 0) {
    wire::v1::PortalFrame frame;
    frame.mutable_data()->set_offset(sent_);
    frame.mutable_data()->set_bytes(data, n);
    sent_ += n;
    counters_->bytes_in.fetch_add(n, std::memory_order_relaxed);
    Touch();
    SendFrame(frame);
  }
  if (ec == boost::asio::error::eof) {
    read_closed_ = true;
    wire::v1::PortalFrame fin;
    fin.mutable_fin()->set_offset(sent_);
    SendFrame(fin);
    MaybeFinish();
    return;
  }
  if (ec) {
    ResetNow(ErrorWithReason(absl::StatusCode::kUnavailable,
                             absl::StrCat("the TCP connection failed: ", ec.message()),
                             reason::kConnectionLost),
             /*tell_peer=*/true);
    return;
  }
  MaybeRead();
}

void PortalSession::MaybeWrite() {
  if (writing_ || ended_flag_) return;
  if (writes_.empty()) {
    if (peer_fin_ && !write_shut_) {
      boost::system::error_code ignored;
      socket_.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
      write_shut_ = true;
      MaybeFinish();
    }
    return;
  }
  writing_ = true;
  boost::asio::async_write(
      socket_, boost::asio::buffer(writes_.front()),
      boost::asio::bind_executor(
          strand(), [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
            self->OnWritten(ec, n);
          }));
}

void PortalSession::OnWritten(const boost::system::error_code& ec, size_t n) {
  writing_ = false;
  if (ended_flag_) return;
  if (ec) {
    ResetNow(ErrorWithReason(absl::StatusCode::kUnavailable,
                             absl::StrCat("the TCP connection failed: ", ec.message()),
                             reason::kConnectionLost),
             /*tell_peer=*/true);
    return;
  }
  written_ += n;
  counters_->bytes_out.fetch_add(n, std::memory_order_relaxed);
  writes_.pop_front();
  Touch();
  MaybeAck();
  MaybeWrite();
  MaybeFinish();
}

void PortalSession::MaybeAck() {
  // Credit back to the peer every half window: a sender waits only when its whole window is
  // in flight, and then half of it has been written here. So a request/response exchange, far
  // inside the window, sends no Ack at all. Once the peer has sent Fin, the last Ack (when
  // everything is written) is what lets both ends finish.
  if (written_ > acked_ &&
      (written_ - acked_ >= options_.window / 2 || (peer_fin_ && writes_.empty()))) {
    acked_ = written_;
    wire::v1::PortalFrame ack;
    ack.mutable_ack()->set_consumed(written_);
    SendFrame(ack);
  }
}

void PortalSession::MaybeFinish() {
  // Clean end: both directions shut down, everything the peer sent written and acknowledged,
  // everything sent acknowledged by the peer — after that neither end sends the other anything.
  if (ended_flag_ || !read_closed_ || !peer_fin_ || !write_shut_ || writing_ || !writes_.empty() ||
      peer_consumed_ != sent_ || acked_ != written_) {
    return;
  }
  End(/*reset=*/false);
}

void PortalSession::Touch() { last_activity_ = std::chrono::steady_clock::now(); }

void PortalSession::ArmIdle() {
  if (options_.idle_timeout.count() <= 0 || ended_flag_) return;
  const auto deadline = last_activity_ + options_.idle_timeout;
  timer_.expires_at(deadline);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->ended_flag_) return;
    if (std::chrono::steady_clock::now() - self->last_activity_ >= self->options_.idle_timeout) {
      self->ResetNow(ErrorWithReason(absl::StatusCode::kDeadlineExceeded,
                                     absl::StrCat("no byte either way for ",
                                                  self->options_.idle_timeout.count(), " ms"),
                                     reason::kPortalTimeout),
                     /*tell_peer=*/true);
      return;
    }
    self->ArmIdle();
  });
}

void PortalSession::ResetNow(absl::Status why, bool tell_peer) {
  if (ended_flag_) return;
  if (tell_peer) SendReset(why);
  counters_->reset.fetch_add(1, std::memory_order_relaxed);
  if (uint64_t suppressed = 0; ResetLog().ShouldLog(&suppressed)) {
    const std::string reason = ReasonOf(why);
    Log(spdlog::level::info, {{log_field::kPortal, name_}, {log_field::kReason, reason}},
        "portal {} session {} reset: {}{}", name_, address(), why.message(),
        suppressed > 0 ? absl::StrCat(" (and ", suppressed, " more not logged)") : "");
  }
  End(/*reset=*/true);
}

void PortalSession::End(bool reset) {
  ended_flag_ = true;
  counters_->active.fetch_sub(1, std::memory_order_relaxed);
  timer_.cancel();
  boost::system::error_code ignored;
  if (reset && socket_.is_open()) {
    socket_.set_option(boost::asio::socket_base::linger(true, 0), ignored);  // close = RST
  }
  socket_.close(ignored);
  writes_.clear();
  if (!address().empty()) {
    router().StopWorker(address(), this,
                        ErrorWithReason(absl::StatusCode::kNotFound,
                                        absl::StrCat("portal session ", address(), " has ended"),
                                        reason::kPortalReset));
  }
  if (ended_) {
    auto ended = std::move(ended_);
    ended_ = nullptr;
    ended(!reset);
  }
}

void PortalSession::OnStop() {
  // Removed from the router by someone else (the node is shutting down): end here too.
  if (!ended_flag_) {
    ResetNow(ErrorWithReason(absl::StatusCode::kUnavailable, "the portal session was stopped",
                             reason::kPortalReset),
             /*tell_peer=*/true);
  }
}

}  // namespace veil::portal
