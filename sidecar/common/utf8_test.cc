#include "sidecar/common/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace veil {
namespace {

TEST(Utf8Test, AcceptsWellFormedText) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("db-client"));
  EXPECT_TRUE(IsValidUtf8("Zürich"));
  EXPECT_TRUE(IsValidUtf8("日本"));
  EXPECT_TRUE(IsValidUtf8("\xF0\x9F\x94\x92"));  // U+1F512
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF
  EXPECT_TRUE(IsValidUtf8(std::string("a\0b", 3)));
}

TEST(Utf8Test, RefusesMalformedText) {
  EXPECT_FALSE(IsValidUtf8("\x80"));              // a lone continuation byte
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // overlong, three bytes
  EXPECT_FALSE(IsValidUtf8("\xF0\x80\x80\xAF"));  // overlong, four bytes
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // a surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xF5\x80\x80\x80"));
  EXPECT_FALSE(IsValidUtf8("\xE6\x97"));      // truncated at the end
  EXPECT_FALSE(IsValidUtf8("\xE6\x41\xA5"));  // a non-continuation inside
  EXPECT_FALSE(IsValidUtf8("ok\xFF"));
}

}  // namespace
}  // namespace veil
