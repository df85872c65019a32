#include "cli/metrics_listener.h"

#include <spdlog/spdlog.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "observe/access_token.h"

namespace cohort::cli {

absl::StatusOr<std::unique_ptr<observe::HttpListener>> StartMetricsListener(
    const std::string& address, const std::filesystem::path& token_file,
    std::map<std::string, observe::HttpHandler> routes) {
  if (address.empty() || address == "none") return std::unique_ptr<observe::HttpListener>();
  absl::StatusOr<std::string> token = observe::NewAccessToken();
  if (!token.ok()) return token.status();
  std::error_code ec;
  if (token_file.has_parent_path()) std::filesystem::create_directories(token_file.parent_path(), ec);
  if (absl::Status s = observe::WriteAccessTokenFile(token_file, *token); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("--metrics-listen: cannot write the access token: ", s.message()));
  }
  observe::HttpListenerOptions options;
  options.address = address;
  options.token = *token;
  options.routes = std::move(routes);
  absl::StatusOr<std::unique_ptr<observe::HttpListener>> listener = observe::HttpListener::Start(std::move(options));
  if (!listener.ok()) {
    return absl::Status(listener.status().code(), absl::StrCat("--metrics-listen: ", listener.status().message()));
  }
  const std::string url = (*listener)->Url();
  spdlog::info("dashboard {} and metrics {}metrics (read-only; callers off this machine need the token in {})", url,
               url, token_file.string());
  if (!observe::IsLoopbackAddress((*listener)->host()) && (*listener)->host() != "localhost") {
    // Off loopback the token is what lets a browser in: show it to whoever started the
    // process (on its terminal, not in the log).
    // In the #fragment: the browser keeps it, the page's script sends it as a bearer
    // token, and it never reaches a server's or a proxy's request log.
    std::printf("dashboard: %s#token=%s\n", url.c_str(), token->c_str());
    std::fflush(stdout);
  }
  return listener;
}

}  // namespace cohort::cli
