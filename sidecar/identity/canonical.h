// The one encoding of a signed protobuf message: protobuf's deterministic serialisation. A
// signer signs it; a verifier that decoded signed bytes re-encodes what it decoded and refuses
// any difference, so one meaning has one encoding (no unknown fields, no field twice, nothing
// out of order, no written defaults; a verifier that re-encodes a parsed message discards its
// unknown fields first, or they would be written back).
#ifndef VEIL_SIDECAR_IDENTITY_CANONICAL_H_
#define VEIL_SIDECAR_IDENTITY_CANONICAL_H_

#include <string>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message_lite.h"

namespace veil::identity {

inline std::string CanonicalEncoding(const google::protobuf::MessageLite& message) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  message.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

}  // namespace veil::identity

#endif  // VEIL_SIDECAR_IDENTITY_CANONICAL_H_
