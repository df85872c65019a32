#include "observe/web_assets.h"

namespace cohort::observe {
namespace {

// Served at "/" when the build found no web/dashboard.html: polls /api/state with the
// token from the page's own address (?token=...) and shows it as it changes.
constexpr std::string_view kFallbackPage = R"html(<!doctype html>
<html><head><meta charset="utf-8"><title>Cohort</title>
<style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em;overflow:auto}</style></head>
<body><h1>Cohort</h1><p>Job state, refreshed every 2 s (<a href="metrics">/metrics</a>).</p><pre id="state">loading...</pre>
<script>
const token = new URLSearchParams(location.search).get("token");
async function refresh() {
  try {
    const r = await fetch("api/state", {headers: token ? {"Authorization": "Bearer " + token} : {}});
    document.getElementById("state").textContent = r.ok ? JSON.stringify(await r.json(), null, 2) : r.status + " " + r.statusText;
  } catch (e) { document.getElementById("state").textContent = String(e); }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
)html";

std::string_view ContentType(std::string_view path) {
  const size_t dot = path.rfind('.');
  const std::string_view ext = dot == std::string_view::npos ? "" : path.substr(dot + 1);
  if (ext == "html") return "text/html; charset=utf-8";
  if (ext == "js" || ext == "mjs") return "text/javascript; charset=utf-8";
  if (ext == "css") return "text/css; charset=utf-8";
  if (ext == "json" || ext == "map") return "application/json";
  if (ext == "svg") return "image/svg+xml";
  if (ext == "png") return "image/png";
  return "text/plain; charset=utf-8";
}

}  // namespace

std::optional<WebAsset> FindWebAsset(std::string_view request_path) {
  while (request_path.starts_with('/')) request_path.remove_prefix(1);
  if (request_path.empty()) request_path = "dashboard.html";
  for (unsigned long i = 0; i < internal::kEmbeddedFileCount; ++i) {
    const internal::EmbeddedFile& file = internal::kEmbeddedFiles[i];
    if (request_path == file.path) {
      return WebAsset{file.path, ContentType(file.path),
                      std::string_view(reinterpret_cast<const char*>(file.bytes), file.size)};
    }
  }
  if (request_path == "dashboard.html") return WebAsset{"dashboard.html", ContentType(".html"), kFallbackPage};
  return std::nullopt;
}

}  // namespace cohort::observe
