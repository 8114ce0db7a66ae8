#include "sidecar/vault/state_file.h"

#include <sys/stat.h>

#include <fstream>

#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "tests/support/veild_process.h"

namespace veil::vault {
namespace {

void WriteRaw(const std::string& path, const std::string& bytes, mode_t mode = 0600) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  ::chmod(path.c_str(), mode);
}

TEST(StateFileTest, RoundTripAtomicAndPrivate) {
  veil::testing::TempDir dir;
  std::string path = dir.path() + "/x.identity";
  ASSERT_TRUE(WriteFileAtomically(path, EncodeStateFile("IDNT", "payload")).ok());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto read = ReadStateFile(path, "IDNT");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, "payload");
  // Overwrite replaces whole; no temp files left behind.
  ASSERT_TRUE(WriteFileAtomically(path, EncodeStateFile("IDNT", "second")).ok());
  EXPECT_EQ(*ReadStateFile(path, "IDNT"), "second");
  EXPECT_EQ(ListFiles(dir.path(), "")->size(), 1u);
}

TEST(StateFileTest, EveryTruncationIsDetectedAndNamesTheFile) {
  std::string good = EncodeStateFile("IDNT", "some payload bytes");
  for (size_t n = 0; n < good.size(); ++n) {
    auto r = DecodeStateFile("/s/bob.identity", "IDNT", good.substr(0, n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(ReasonOf(r.status()), "CORRUPT_STATE_FILE");
    EXPECT_NE(r.status().message().find("/s/bob.identity"), std::string::npos);
  }
}

TEST(StateFileTest, EveryFlippedByteIsDetected) {
  std::string good = EncodeStateFile("IDNT", "some payload bytes");
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x04;
    EXPECT_FALSE(DecodeStateFile("f", "IDNT", bad).ok()) << i;
  }
}

TEST(StateFileTest, WrongKindAndAppendedBytesAreRefused) {
  std::string good = EncodeStateFile("IDNT", "p");
  auto kind = DecodeStateFile("f", "TRST", good);
  ASSERT_FALSE(kind.ok());
  EXPECT_NE(kind.status().message().find("holds a \"IDNT\" record"), std::string::npos);
  EXPECT_FALSE(DecodeStateFile("f", "IDNT", good + "x").ok());
  EXPECT_FALSE(
      DecodeStateFile("f", "IDNT", "garbage garbage garbage garbage garbage garbage").ok());
}

TEST(StateFileTest, UnsafeModeIsRefused) {
  veil::testing::TempDir dir;
  std::string path = dir.path() + "/k";
  WriteRaw(path, EncodeStateFile("IDNT", "p"), 0644);
  auto r = ReadStateFile(path, "IDNT");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(r.status()), "UNSAFE_PERMISSIONS");
  EXPECT_NE(r.status().message().find("mode 0644"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find(path), std::string::npos);
}

TEST(StateFileTest, MissingIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(ReadStateFile("/nonexistent/veil/x", "IDNT").status()));
}

TEST(StateFileTest, RemoveAndEnsureDirectory) {
  veil::testing::TempDir dir;
  std::string sub = dir.path() + "/a/b";
  ASSERT_TRUE(EnsurePrivateDirectory(sub).ok());
  struct stat st;
  ASSERT_EQ(::stat(sub.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ::chmod(sub.c_str(), 0755);
  ASSERT_TRUE(EnsurePrivateDirectory(sub).ok());
  ::stat(sub.c_str(), &st);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  std::string file = sub + "/f";
  ASSERT_TRUE(WriteFileAtomically(file, "x").ok());
  EXPECT_TRUE(RemoveFileDurably(file).ok());
  EXPECT_TRUE(RemoveFileDurably(file).ok());  // already gone
}

}  // namespace
}  // namespace veil::vault
