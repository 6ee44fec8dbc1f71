// The word-wise copies between log memory and plain buffers (byte_copy.h):
// every start offset within a word and every length up to several words,
// against memcpy and memcmp. The copy must write exactly the bytes asked
// for (nothing before, nothing after) and read only words that hold them.
//
// White-box: shm/src/byte_copy.h. Built into segment_test.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "byte_copy.h"

namespace cachet {
namespace {

constexpr size_t kWords = 12;
constexpr size_t kMaxLen = 72;

struct Source {
  uint64_t words[kWords];
  Source() {
    auto* bytes = reinterpret_cast<unsigned char*>(words);
    for (size_t i = 0; i < sizeof(words); ++i) bytes[i] = static_cast<unsigned char>(i * 7 + 1);
  }
  const char* bytes() const { return reinterpret_cast<const char*>(words); }
};

TEST(ByteCopyTest, LoadBytesCopiesExactlyTheBytesAskedForAtEveryAlignment) {
  const Source src;
  for (uint64_t offset = 0; offset < 16; ++offset) {
    for (uint64_t len = 0; offset + len <= kMaxLen; ++len) {
      char dst[kMaxLen + 16];
      std::memset(dst, 'G', sizeof(dst));
      detail::LoadBytes(src.words, offset, len, dst + 8);
      ASSERT_EQ(std::memcmp(dst + 8, src.bytes() + offset, len), 0) << "offset " << offset << " len " << len;
      for (size_t i = 0; i < 8; ++i) ASSERT_EQ(dst[i], 'G') << "wrote before the start: offset " << offset;
      for (size_t i = 8 + len; i < sizeof(dst); ++i)
        ASSERT_EQ(dst[i], 'G') << "wrote past the end: offset " << offset << " len " << len;
    }
  }
}

TEST(ByteCopyTest, LoadBytesReadsOnlyTheWordsHoldingTheBytes) {
  // The bytes sit at the end of an exactly sized buffer: a read of one word
  // more is a heap overflow (AddressSanitizer reports it).
  for (uint64_t offset = 0; offset < 16; ++offset) {
    for (uint64_t len = 1; offset + len <= kMaxLen; ++len) {
      const uint64_t words = (offset + len + 7) / 8;
      auto buffer = std::make_unique<uint64_t[]>(words);
      std::memset(buffer.get(), 0x5a, words * 8);
      std::string out(len, '\0');
      detail::LoadBytes(buffer.get(), offset, len, out.data());
      ASSERT_EQ(out, std::string(len, '\x5a')) << "offset " << offset << " len " << len;
    }
  }
}

TEST(ByteCopyTest, BytesEqualComparesExactlyTheKeysBytes) {
  const Source src;
  for (size_t len = 0; len <= kMaxLen; ++len) {
    std::string key(src.bytes(), len);
    ASSERT_TRUE(detail::BytesEqual(src.words, key)) << "len " << len;
    for (size_t i = 0; i < len; ++i) {
      std::string other = key;
      other[i] = static_cast<char>(other[i] ^ 0x20);
      ASSERT_FALSE(detail::BytesEqual(src.words, other)) << "len " << len << " differs at " << i;
    }
  }
}

TEST(ByteCopyTest, BytesEqualIgnoresWhatFollowsTheKeyInItsLastWord) {
  Source src;
  auto* bytes = reinterpret_cast<char*>(src.words);
  for (size_t len = 1; len < 24; ++len) {
    if (len % 8 == 0) continue;
    const std::string key(bytes, len);
    bytes[len] = static_cast<char>(bytes[len] ^ 0x7f);  // the value's first byte, say
    ASSERT_TRUE(detail::BytesEqual(src.words, key)) << "len " << len;
    bytes[len] = static_cast<char>(bytes[len] ^ 0x7f);
  }
}

}  // namespace
}  // namespace cachet
