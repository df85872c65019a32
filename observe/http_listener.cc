#include "observe/http_listener.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/quote.h"
#include "observe/access_token.h"
#include "observe/web_assets.h"

namespace cohort::observe {
namespace {

// Enough for a scraper and a dashboard or two; each request is short (formatting a
// snapshot), so a third caller waits a moment rather than costing a thread.
constexpr size_t kThreads = 2;

bool Authorized(const httplib::Request& request, const std::string& token) {
  if (IsLoopbackAddress(request.remote_addr)) return true;
  if (token.empty()) return false;
  const std::string header = request.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (header.size() > kBearer.size() && std::string_view(header).substr(0, kBearer.size()) == kBearer &&
      TokensEqual(std::string_view(header).substr(kBearer.size()), token)) {
    return true;
  }
  return request.has_param("token") && TokensEqual(request.get_param_value("token"), token);
}

}  // namespace

struct HttpListener::Impl {
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> finished{false};  // the listen loop has returned
  HttpListenerOptions options;
};

bool IsLoopbackAddress(const std::string& remote_address) {
  return remote_address.starts_with("127.") || remote_address == "::1" ||
         remote_address.starts_with("::ffff:127.");
}

absl::Status ParseListenAddress(const std::string& address, std::string* host, int* port) {
  std::string h, p;
  if (address.starts_with('[')) {
    const size_t close = address.find("]:");
    if (close == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen address ", core::QuotePrefix(address), ": expected [IPV6]:PORT, e.g. [::1]:9478"));
    }
    h = address.substr(1, close - 1);
    p = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0 || address.find(':') != colon) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen address ", core::QuotePrefix(address), ": expected HOST:PORT, e.g. 127.0.0.1:9478"));
    }
    h = address.substr(0, colon);
    p = address.substr(colon + 1);
  }
  int value = -1;
  if (!absl::SimpleAtoi(p, &value) || value < 0 || value > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("listen address ", core::QuotePrefix(address),
                                                   ": the port must be a number from 0 to 65535 (0: any free port)"));
  }
  *host = h;
  *port = value;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(HttpListenerOptions options) {
  std::string host;
  int port = 0;
  if (absl::Status s = ParseListenAddress(options.address, &host, &port); !s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  Impl* self = impl.get();
  httplib::Server& server = impl->server;
  server.new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  // SO_REUSEADDR only: the library's default adds SO_REUSEPORT, which would let a second
  // server bind the same port and split the scrapes between two processes.
  server.set_socket_options([](int socket) {
    const int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server.set_read_timeout(5, 0);
  server.set_write_timeout(5, 0);
  server.set_keep_alive_timeout(5);
  server.set_payload_max_length(64 * 1024);  // read-only: no request needs a body
  server.set_pre_routing_handler([self](const httplib::Request& request, httplib::Response& response) {
    if (Authorized(request, self->options.token)) return httplib::Server::HandlerResponse::Unhandled;
    // The page's own files are the same for every server and hold nothing of the job: a
    // browser fetches them before its script can send the token (which it keeps in the
    // address's #fragment, never sent to a server). Everything that shows the job needs it.
    if (!self->options.routes.contains(request.path) && FindWebAsset(request.path)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    response.status = 401;
    response.set_header("WWW-Authenticate", "Bearer");
    return httplib::Server::HandlerResponse::Handled;
  });
  server.Get(".*", [self](const httplib::Request& request, httplib::Response& response) {
    response.set_header("Cache-Control", "no-store");
    if (const auto route = self->options.routes.find(request.path); route != self->options.routes.end()) {
      HttpResponse answer = route->second();
      response.status = answer.status;
      response.set_content(std::move(answer.body), answer.content_type);
      return;
    }
    if (std::optional<WebAsset> asset = FindWebAsset(request.path)) {
      response.set_content(asset->bytes.data(), asset->bytes.size(), std::string(asset->content_type));
      return;
    }
    response.status = 404;
    response.set_content("not found\n", "text/plain; charset=utf-8");
  });
  if (port == 0) {
    port = server.bind_to_any_port(host);
    if (port < 0) port = -1;
  } else if (!server.bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", core::QuotePrefix(impl->options.address),
                                               ": the port is in use or the host is not an address of this machine; "
                                               "pick another, or `none` to serve no metrics"));
  }
  impl->thread = std::thread([self] {
    self->server.listen_after_bind();
    self->finished = true;
  });
  // stop() only stops a server that is already running: wait until it is, so that the
  // destructor can never miss it.
  for (int i = 0; i < 500 && !server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return std::unique_ptr<HttpListener>(new HttpListener(std::move(impl), host, port));
}

HttpListener::HttpListener(std::unique_ptr<Impl> impl, std::string host, int port)
    : impl_(std::move(impl)), host_(std::move(host)), port_(port) {}

HttpListener::~HttpListener() {
  // stop() does nothing to a loop that has not started yet: ask until the loop has ended.
  while (!impl_->finished.load()) {
    impl_->server.stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  impl_->thread.join();
}

std::string HttpListener::Url() const {
  const bool v6 = host_.find(':') != std::string::npos;
  return absl::StrCat("http://", v6 ? "[" : "", host_, v6 ? "]" : "", ":", port_, "/");
}

}  // namespace cohort::observe
