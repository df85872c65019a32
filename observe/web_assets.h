#pragma once
// The dashboard's files (the repository's web/ folder: dashboard.html, its scripts and the
// vendored chart library), compiled into the binary at build time
// (scripts/embed_web_assets.cmake), so that `cohort server` serves them from any
// directory and no file beside the binary can go missing or be swapped.

#include <optional>
#include <string_view>

namespace cohort::observe {

struct WebAsset {
  std::string_view path;          // relative to web/, e.g. "dashboard.html", "vendor/x.js"
  std::string_view content_type;  // from the extension
  std::string_view bytes;
};

// The asset for a request path ("/" is dashboard.html; a leading "/" is ignored); nullopt
// when there is none. Without a web/dashboard.html at build time, "/" is a built-in page
// that shows /api/state as it changes.
std::optional<WebAsset> FindWebAsset(std::string_view request_path);

namespace internal {
// Defined by the generated web_assets_data.cc.
struct EmbeddedFile {
  const char* path;
  const unsigned char* bytes;
  unsigned long size;
};
extern const EmbeddedFile kEmbeddedFiles[];
extern const unsigned long kEmbeddedFileCount;
}  // namespace internal

}  // namespace cohort::observe
