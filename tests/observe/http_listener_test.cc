#include "observe/http_listener.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <optional>

#include "observe/access_token.h"
#include "observe/web_assets.h"
#include "storage/atomic_write.h"

namespace cohort::observe {
namespace {

constexpr const char* kToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

std::unique_ptr<HttpListener> StartListener(const std::string& address, std::atomic<int>* calls = nullptr) {
  HttpListenerOptions options;
  options.address = address;
  options.token = kToken;
  options.routes["/metrics"] = [calls] {
    if (calls != nullptr) ++*calls;
    return HttpResponse{200, "text/plain; version=0.0.4", "cohort_up 1\n"};
  };
  absl::StatusOr<std::unique_ptr<HttpListener>> listener = HttpListener::Start(options);
  EXPECT_TRUE(listener.ok()) << listener.status();
  return listener.ok() ? std::move(*listener) : nullptr;
}

// An IPv4 address of this machine that is not loopback (eth0's, say), if it has one.
std::optional<std::string> NonLoopbackAddress() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return std::nullopt;
  std::optional<std::string> found;
  for (ifaddrs* a = list; a != nullptr && !found; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN];
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
    if (::inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) == nullptr) continue;
    if (!IsLoopbackAddress(text)) found = text;
  }
  ::freeifaddrs(list);
  return found;
}

TEST(HttpListenerTest, LoopbackCallersNeedNoToken) {
  std::atomic<int> calls = 0;
  std::unique_ptr<HttpListener> listener = StartListener("127.0.0.1:0", &calls);
  ASSERT_NE(listener, nullptr);
  EXPECT_GT(listener->port(), 0);
  EXPECT_EQ(listener->Url(), "http://127.0.0.1:" + std::to_string(listener->port()) + "/");
  httplib::Client client("127.0.0.1", listener->port());
  httplib::Result metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->body, "cohort_up 1\n");
  EXPECT_EQ(metrics->get_header_value("Content-Type"), "text/plain; version=0.0.4");
  EXPECT_EQ(calls, 1);
  httplib::Result page = client.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<html"), std::string::npos);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  httplib::Result missing = client.Get("/etc/passwd");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

TEST(HttpListenerTest, OffLoopbackCallersWithoutTheTokenGet401AndNothingOfTheJob) {
  const std::optional<std::string> address = NonLoopbackAddress();
  if (!address) GTEST_SKIP() << "this machine has no non-loopback IPv4 address to connect from";
  std::atomic<int> calls = 0;
  std::unique_ptr<HttpListener> listener = StartListener("0.0.0.0:0", &calls);
  ASSERT_NE(listener, nullptr);
  httplib::Client client(*address, listener->port());
  for (const char* path : {"/metrics", "/api/state", "/nonexistent", "/metrics/"}) {
    httplib::Result r = client.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 401) << path;
    EXPECT_EQ(r->body, "") << path;
  }
  // The page itself (the same for every server, no job data) loads, so that its script can
  // send the token from the address's #fragment.
  httplib::Result page = client.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->body, std::string(FindWebAsset("/")->bytes));
  httplib::Result wrong = client.Get("/metrics", {{"Authorization", std::string("Bearer ") + std::string(64, '0')}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  httplib::Result wrong_query = client.Get("/metrics?token=abc");
  ASSERT_TRUE(wrong_query);
  EXPECT_EQ(wrong_query->status, 401);
  EXPECT_EQ(calls, 0) << "a refused caller must never reach a handler";

  httplib::Result bearer = client.Get("/metrics", {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_TRUE(bearer);
  EXPECT_EQ(bearer->status, 200);
  EXPECT_EQ(bearer->body, "cohort_up 1\n");
  httplib::Result query = client.Get(std::string("/?token=") + kToken);
  ASSERT_TRUE(query);
  EXPECT_EQ(query->status, 200);
  EXPECT_EQ(calls, 1);
  // The same listener from loopback: no token needed.
  httplib::Client local("127.0.0.1", listener->port());
  httplib::Result from_loopback = local.Get("/metrics");
  ASSERT_TRUE(from_loopback);
  EXPECT_EQ(from_loopback->status, 200);
}

TEST(HttpListenerTest, ABusyPortOrBadAddressIsRefusedNamingIt) {
  std::unique_ptr<HttpListener> first = StartListener("127.0.0.1:0");
  ASSERT_NE(first, nullptr);
  HttpListenerOptions options;
  options.address = "127.0.0.1:" + std::to_string(first->port());
  absl::StatusOr<std::unique_ptr<HttpListener>> second = HttpListener::Start(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(options.address), std::string::npos) << second.status();
  for (const char* bad : {"9478", "127.0.0.1:http", "127.0.0.1:70000", "[::1]9478", ":9478"}) {
    options.address = bad;
    absl::StatusOr<std::unique_ptr<HttpListener>> r = HttpListener::Start(options);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(HttpListenerTest, StopsPromptlyEvenRightAfterStart) {
  for (int i = 0; i < 20; ++i) {
    std::unique_ptr<HttpListener> listener = StartListener("127.0.0.1:0");
    ASSERT_NE(listener, nullptr);
  }
}

TEST(HttpListenerTest, LoopbackRecognition) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackAddress("127.8.9.10"));
  EXPECT_TRUE(IsLoopbackAddress("::1"));
  EXPECT_TRUE(IsLoopbackAddress("::ffff:127.0.0.1"));
  EXPECT_FALSE(IsLoopbackAddress("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackAddress("::ffff:10.0.0.1"));
  EXPECT_FALSE(IsLoopbackAddress("1270.0.0.1"));
  EXPECT_FALSE(IsLoopbackAddress(""));
}

TEST(AccessTokenTest, TokensAreFreshHexAndTheFileIsPrivate) {
  absl::StatusOr<std::string> a = NewAccessToken(), b = NewAccessToken();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 64u);
  EXPECT_EQ(a->find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(*a, *b);
  EXPECT_TRUE(TokensEqual(*a, *a));
  EXPECT_FALSE(TokensEqual(*a, *b));
  EXPECT_FALSE(TokensEqual(*a, a->substr(1)));
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("cohort-token-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(WriteAccessTokenFile(dir / "dashboard.token", *a).ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir / "dashboard.token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_EQ(*storage::ReadFile(dir / "dashboard.token"), *a + "\n");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cohort::observe
