#pragma once
// The process's read-only HTTP/1.1 listener (cpp-httplib): `/metrics` for Prometheus,
// `/api/state` for the dashboard, and the dashboard's files (observe/web_assets.h).
// docs/operability.md describes the endpoints and the access rule.
//
// Access: a request from a loopback address is served as is. From any other address, the
// routes (`/metrics`, `/api/state`) and any unknown path need the listener's token, as
// `Authorization: Bearer TOKEN` (or `?token=TOKEN`); without it the answer is 401 with an
// empty body. Only the dashboard's own files (observe/web_assets.h: the same for every
// server, nothing of the job) are served without it, so that a browser can load the page
// whose script then sends the token it finds in the address's #fragment.
//
// Handlers run on the listener's own two threads, never on a thread of the job: a slow or
// stuck scraper waits for them, not for a round. Only GET (and HEAD) are served.

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace cohort::observe {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};
using HttpHandler = std::function<HttpResponse()>;

struct HttpListenerOptions {
  // HOST:PORT to bind; PORT 0 picks a free port (see HttpListener::port). HOST is an IPv4
  // or IPv6 literal, or "localhost".
  std::string address = "127.0.0.1:0";
  // What a caller off loopback must present. Empty: such callers are always refused.
  std::string token;
  // Exact paths ("/metrics") to their handlers; any other path is a web asset or 404.
  std::map<std::string, HttpHandler> routes;
};

class HttpListener {
 public:
  // Binds and starts serving; InvalidArgument naming a malformed address, Unavailable
  // naming one that cannot be bound (in use, not an address of this machine).
  static absl::StatusOr<std::unique_ptr<HttpListener>> Start(HttpListenerOptions options);
  ~HttpListener();  // stops serving and joins its threads
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  const std::string& host() const { return host_; }
  int port() const { return port_; }
  // http://HOST:PORT/ (IPv6 hosts in brackets).
  std::string Url() const;

 private:
  struct Impl;
  HttpListener(std::unique_ptr<Impl> impl, std::string host, int port);
  std::unique_ptr<Impl> impl_;
  std::string host_;
  int port_ = 0;
};

// Splits "HOST:PORT" ("[::1]:9478" for IPv6); InvalidArgument naming the value.
absl::Status ParseListenAddress(const std::string& address, std::string* host, int* port);
// True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x.y.z).
bool IsLoopbackAddress(const std::string& remote_address);

}  // namespace cohort::observe
