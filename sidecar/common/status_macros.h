// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status and absl::StatusOr (abseil 20220623 has
// neither). The one pair used across the project.
#ifndef VEIL_SIDECAR_COMMON_STATUS_MACROS_H_
#define VEIL_SIDECAR_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status); returns it from the enclosing function if not OK.
#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::absl::Status veil_status_ = (expr);        \
    if (!veil_status_.ok()) return veil_status_; \
  } while (0)

#define VEIL_STATUS_CONCAT_INNER_(a, b) a##b
#define VEIL_STATUS_CONCAT_(a, b) VEIL_STATUS_CONCAT_INNER_(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status, otherwise moves the
// value into `lhs`, which may be a declaration (`auto x`) or an existing variable.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  VEIL_ASSIGN_OR_RETURN_IMPL_(VEIL_STATUS_CONCAT_(veil_statusor_, __LINE__), lhs, rexpr)

#define VEIL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)  \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // VEIL_SIDECAR_COMMON_STATUS_MACROS_H_
