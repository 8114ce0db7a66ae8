// Files in the state directory: written atomically, private to their owner, and wrapped in an
// envelope that detects truncation and corruption.
//
//   envelope = "VEIL" version:u8(=1) kind:4 bytes length:u32-BE payload sha256(everything before)
//
// `kind` ("META", "IDNT", "TRST") keeps one kind of file from being read as another. A damaged
// file is reported with its path and never rewritten by the reader.
//
// Thread-safety: free functions; callers serialise writes to the same path.
#ifndef VEIL_SIDECAR_VAULT_STATE_FILE_H_
#define VEIL_SIDECAR_VAULT_STATE_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace veil::vault {

// DATA_LOSS, reason CORRUPT_STATE_FILE: "state file <path> is damaged: <why>".
absl::Status DamagedStateFile(absl::string_view path, absl::string_view why);

// The largest state file read.
inline constexpr size_t kMaxStateFileBytes = 1024 * 1024;

std::string EncodeStateFile(absl::string_view kind, absl::string_view payload);
// The payload of an envelope read from `path` (named in errors). DATA_LOSS (reason
// CORRUPT_STATE_FILE) for: too short or truncated, bad magic, unknown version, other kind,
// checksum mismatch.
absl::StatusOr<std::string> DecodeStateFile(absl::string_view path, absl::string_view kind,
                                            absl::string_view contents);

// Writes `contents` to `path` atomically: a temp file in the same directory (mode 0600),
// write, fsync, rename over `path`, fsync of the directory. On failure `path` is untouched and
// the temp file removed. INTERNAL/FAILED_PRECONDITION/RESOURCE_EXHAUSTED (disk full) naming
// the path and the system error.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// Reads `path`, which must be a regular file owned by this user with no group or other
// permissions (FAILED_PRECONDITION, reason UNSAFE_PERMISSIONS, otherwise) and at most
// kMaxStateFileBytes long. NOT_FOUND when absent.
absl::StatusOr<std::string> ReadPrivateFile(const std::string& path);

// Reads and decodes an envelope file: ReadPrivateFile then DecodeStateFile.
absl::StatusOr<std::string> ReadStateFile(const std::string& path, absl::string_view kind);

// Removes `path` and fsyncs its directory. OK if it was already absent.
absl::Status RemoveFileDurably(const std::string& path);

// Creates directory `path` mode 0700 if missing (parents too). An existing one must be a
// directory owned by this user; a looser mode is tightened to 0700.
absl::Status EnsurePrivateDirectory(const std::string& path);

// Names of the regular files in `dir` ending in `suffix`, sorted. Empty when `dir` is absent.
absl::StatusOr<std::vector<std::string>> ListFiles(const std::string& dir,
                                                   absl::string_view suffix);

}  // namespace veil::vault

#endif  // VEIL_SIDECAR_VAULT_STATE_FILE_H_
