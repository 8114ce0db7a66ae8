// UTF-8 validation, for text that comes from outside and will be shown or compared as text.
//
// Thread-safety: a pure function.
#ifndef VEIL_SIDECAR_COMMON_UTF8_H_
#define VEIL_SIDECAR_COMMON_UTF8_H_

#include "absl/strings/string_view.h"

namespace veil {

// Whether `text` is well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing
// past U+10FFFF, no truncated sequence. NUL bytes are well-formed.
bool IsValidUtf8(absl::string_view text);

}  // namespace veil

#endif  // VEIL_SIDECAR_COMMON_UTF8_H_
