#pragma once
// A fresh directory under the test temp dir, removed with everything in it. Shared by
// every suite.

#include <stdlib.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace cohort::testing {

class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "cohort-test-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << pattern;
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace cohort::testing
