#include "core/quote.h"

#include <string>

#include <gtest/gtest.h>

namespace cohort::core {
namespace {

TEST(QuotePrefixTest, QuotesAShortValueWhole) { EXPECT_EQ(QuotePrefix("learning_rate"), "\"learning_rate\""); }

TEST(QuotePrefixTest, CutsALongValueAndGivesItsLength) {
  EXPECT_EQ(QuotePrefix(std::string(50'000'000, 'x'), 4), "\"xxxx\"... (50000000 bytes)");
  EXPECT_EQ(QuotePrefix(std::string(200, 'y')).size(), std::string("\"\"... (200 bytes)").size() + 64);
}

TEST(QuotePrefixTest, EscapesWhatATerminalWouldInterpret) {
  EXPECT_EQ(QuotePrefix("a\x1b[2Jb\"\n"), "\"a\\x1b[2Jb\\\"\\n\"");
  EXPECT_EQ(QuotePrefix("caf\xc3\xa9"), "\"caf\\xc3\\xa9\"");
}

TEST(JsonPrefixTest, PrintsAShortValueAsJson) {
  EXPECT_EQ(JsonPrefix(nlohmann::json::array({1, 2})), "[1,2]");
  EXPECT_EQ(JsonPrefix("cosine"), "\"cosine\"");
}

TEST(JsonPrefixTest, CutsALongValueAndEscapesNonAscii) {
  EXPECT_EQ(JsonPrefix(std::string(1000, 'x'), 8), "\"xxxxxxx... (1002 bytes)");
  EXPECT_EQ(JsonPrefix("caf\xc3\xa9"), "\"caf\\u00e9\"");
}

}  // namespace
}  // namespace cohort::core
