#include "sidecar/common/error_reason.h"

#include "gtest/gtest.h"
#include "sidecar/common/status_macros.h"

namespace veil {
namespace {

TEST(ErrorReasonTest, AttachesAndReadsBack) {
  absl::Status s =
      ErrorWithReason(absl::StatusCode::kNotFound, "no worker", reason::kRouteNotFound);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no worker");
  EXPECT_EQ(ReasonOf(s), "ROUTE_NOT_FOUND");
}

TEST(ErrorReasonTest, OkStaysOkWithoutReason) {
  absl::Status s = WithReason(absl::OkStatus(), reason::kRouteNotFound);
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(ReasonOf(s), "");
}

TEST(ErrorReasonTest, StatusWithoutReasonReadsEmpty) {
  EXPECT_EQ(ReasonOf(absl::InternalError("x")), "");
}

absl::StatusOr<int> Half(int v) {
  if (v % 2) return absl::InvalidArgumentError("odd");
  return v / 2;
}

absl::StatusOr<int> Quarter(int v) {
  ASSIGN_OR_RETURN(int h, Half(v));
  ASSIGN_OR_RETURN(h, Half(h));
  return h;
}

absl::Status CheckQuarter(int v) {
  RETURN_IF_ERROR(Quarter(v).status());
  return absl::OkStatus();
}

TEST(StatusMacrosTest, PropagateErrorsAndValues) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckQuarter(4).ok());
  EXPECT_FALSE(CheckQuarter(2).ok());
}

}  // namespace
}  // namespace veil
