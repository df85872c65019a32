#pragma once
// Documents an attacker sends to crash a JSON reader: nesting far past any sane depth.
// Shared by the suites that feed them to each reader at a trust boundary.

#include <cstddef>
#include <string>

namespace cohort::testing {

// What an error about hostile input may cost: a fixed message plus a 64-byte quote.
inline constexpr std::size_t kShortMessageBytes = 300;

// [[[...]]] nested `depth` deep.
inline std::string NestedArrays(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// {"a":{"a":...1...}} nested `depth` deep.
inline std::string NestedObjects(int depth) {
  std::string text;
  for (int i = 0; i < depth; ++i) text += "{\"a\":";
  text += "1";
  return text + std::string(depth, '}');
}

}  // namespace cohort::testing
