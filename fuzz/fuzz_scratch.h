#pragma once
// What every fuzz target here shares: a scratch directory of its own (under $TMPDIR, which
// scripts/fuzz.sh points at /dev/shm so that a file per input costs no disk I/O) and
// whole-file writes into it. The readers under test take paths, so the harnesses write
// each input to a file and read it back through the real code.

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace cohort::fuzz {

// The process's own directory, made on first use and removed at exit (not after a
// crash: libFuzzer keeps the crashing input itself, so nothing there is needed).
inline const std::filesystem::path& ScratchDir() {
  // Held through a pointer that is never destroyed: the exit handler runs after the
  // destructors of statics made before it was registered, and must still see the path.
  static const std::filesystem::path* const dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    const std::filesystem::path base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    auto* made = new std::filesystem::path(base / ("cohort-fuzz-" + std::to_string(::getpid())));
    std::filesystem::create_directories(*made);
    return made;
  }();
  static const bool cleanup_registered = [] {
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(*dir, ignored);
    });
    return true;
  }();
  (void)cleanup_registered;
  return *dir;
}

// Writes `bytes` as the whole of `path`; aborts on failure (a harness fault, not a finding).
inline void WriteWholeFile(const std::filesystem::path& path, std::string_view bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", path.c_str());
    std::abort();
  }
}

inline std::string_view AsText(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Stops the run with `what`: an input broke a property the code promises.
[[noreturn]] inline void PropertyFailed(std::string_view what) {
  std::fprintf(stderr, "fuzz property failed: %.*s\n", static_cast<int>(what.size()), what.data());
  std::abort();
}

}  // namespace cohort::fuzz
