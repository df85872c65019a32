// Upload throughput of one 100M-parameter update (400 MB of float32) from a client to a
// real server over loopback gRPC, beside raw loopback TCP measured in the same run, with
// every piece of the sealed path timed alone on the same bytes.
//
// The gRPC path is the one a deployment runs: a server::FederatedJob (one round, one
// client, 4 tensors of 25M float32) served by server::ServeJob on 127.0.0.1:0; a client
// (wire/federation_client.h, as the agent) joins (agreeing session keys), pulls its task (downloading
// and opening the 400 MB sealed global model), and streams its update exactly as
// client/agent.cc does: each chunk sealed (AES-256-GCM, wire/sealing.h) straight into its
// message. Variants: plaintext transport (the --insecure mode; the chunks are sealed all
// the same) in chunks of each --chunk-kib size, and mutual TLS with kits from a throwaway
// federation (bench/server/bench_pki.h), as a provisioned deployment runs. Upload time
// runs from opening the PushUpdate call to holding the server's receipt, so it covers
// sealing, serialization, HTTP/2 (and TLS), parsing, opening each chunk, the server's
// checks (order, NaN/Inf scan, L2 norm) and the spool write of the sealed chunk. The fold
// (which opens the spool again) happens after the receipt and is not timed. Each run
// serves a job of two rounds and times both: round 1 lands on a fresh process (every
// buffer and spool page new), round 2 on one that has run a round, as every later round
// of a job does (the client refills its model buffer, the server writes over the kept
// spool file of round 1).
//
// "unsealed" is the update path as it ran before sealing (issue 2's measurement): a
// bench-only server (bench/server/unsealed_upload_server.h) whose PushUpdate runs
// core::UpdateReceiver on plaintext chunks, with ServeJob's gRPC settings; two uploads
// to one server, timed apart, the second writing over the first's spool file as every
// later round's upload does in the shipped server.
//
// The raw baselines: one TCP socket on 127.0.0.1, the same 400 MB written with write() in
// 1 MiB pieces, a receiver thread reading into a 1 MiB buffer and discarding; timed from
// the first write to the last byte read. The same through OpenSSL TLS 1.3 (the server's
// kit certificate, TLS_AES_256_GCM_SHA384, handshake not timed): what TLS costs alone.
//
// Pieces alone, on the same bytes in chunks of the first --chunk-kib size (no network,
// one thread each):
//   seal          SealedSession::SealChunk of every chunk into a reused message field
//   open          the server's codec opening every sealed chunk into a reused buffer
//   AddChunk      core::UpdateReceiver Open + AddChunk per chunk + Finish: plaintext
//                 (checks, scan, spool write), and sealed (open, checks, scan, spool write)
//   spool write   write() of the chunks to a file in the same directory
//   checks+scan   AddChunk with its spool file a symlink to /dev/null: the order and size
//                 checks and the NaN/Inf count and sum of squares, in the library's own code
//   protobuf      set_data + SerializeToString + ParseFromString of each chunk message
//   memcpy        each chunk copied into one reused buffer: the price of one copy
//
// --grpc=TUNING[,TUNING...] (bdp, no-bdp, window=MiB, quota=MB) adds the same sealed gRPC
// upload, in chunks of the first --chunk-kib size, against a server with that one setting
// changed (bench/server/tuned_server.h), to price a memory fix in throughput.
//
// --skip=GROUP[,GROUP...] leaves rows out (for profiling one path): raw (the raw TLS
// baseline; raw TCP always runs), unsealed, plain (sealed uploads without TLS), tls, pieces.
//
// Usage: cohort_upload_bench [--params=100000000] [--repeats=3] [--chunk-kib=1024] [--grpc=TUNINGS] [--skip=GROUPS]
// Each round of the repeat loop runs every variant once, so load drifts hit all alike;
// the table gives the median and every run. MB = 10^6 bytes.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/server/bench_pki.h"
#include "bench/server/bench_support.h"
#include "bench/server/tuned_server.h"
#include "bench/server/unsealed_upload_server.h"
#include "core/chunking.h"
#include "core/fedavg.h"
#include "crypto/key_agreement.h"
#include "crypto/provisioning.h"
#include "observe/process_stats.h"
#include "proto/cohort.pb.h"
#include "wire/sealing.h"
#include "server/federated_job.h"
#include "server/server.h"
#include "wire/federation_client.h"

namespace cohort::bench {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

struct Flags {
  size_t params = 100'000'000;
  int repeats = 3;
  std::vector<size_t> chunk_kib = {1024};
  std::vector<std::string> grpc;  // also run the upload against each of these tuned servers
  std::set<std::string> skip;     // groups of rows left out: raw, unsealed, plain, tls, pieces
};

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    bool ok = true;
    if (key == "--params") {
      ok = absl::SimpleAtoi(value, &flags.params) && flags.params >= 4 && flags.params % 4 == 0;
    } else if (key == "--repeats") {
      ok = absl::SimpleAtoi(value, &flags.repeats) && flags.repeats >= 1;
    } else if (key == "--chunk-kib" || key == "--chunk-mib") {
      const size_t unit = key == "--chunk-mib" ? 1024 : 1;
      flags.chunk_kib.clear();
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        size_t size = 0;
        ok = ok && absl::SimpleAtoi(part, &size) && size * unit >= 64 && size * unit <= 3072;
        flags.chunk_kib.push_back(size * unit);
      }
    } else if (key == "--skip") {
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        ok = ok && (part == "raw" || part == "unsealed" || part == "plain" || part == "tls" || part == "pieces");
        flags.skip.emplace(part);
      }
    } else if (key == "--grpc") {
      flags.grpc.clear();
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        ok = ok && !part.empty() && IsGrpcTuning(std::string(part));
        flags.grpc.emplace_back(part);
      }
    } else {
      ok = false;
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad argument \"", arg,
                       "\": expected --params=N (a multiple of 4), --repeats=N (>= 1), "
                       "--chunk-kib=256,1024 (each 64-3072; or --chunk-mib=1,2,3), --grpc=T[,T...] with T bdp, no-bdp, window=MiB or quota=MB, "
                       "or --skip=G[,G...] with G raw, unsealed, plain, tls, pieces"));
    }
  }
  return flags;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

// CPU time of this whole process (every thread: the client's, the server's, gRPC's and
// the kernel's work on their behalf), for the CPU a transfer costs beside its wall time.
double ProcessCpuSeconds() { return observe::ReadProcessStats().cpu_seconds; }

// Seconds per round of one run: [0] round 1 on a fresh server, [1] round 2.
struct GrpcRun {
  double upload_seconds[2] = {};
  double upload_cpu_seconds[2] = {};
  double download_seconds[2] = {};
};

// One fresh job and server per run, with two rounds: the first upload lands on a fresh
// process (every buffer and spool page new), the second on one that has run a round,
// as every later round of a job does; the client reuses its model buffer in round 2.
// `pki` null: plaintext; otherwise mutual TLS as site "bench-site".
absl::StatusOr<GrpcRun> GrpcUploadOnce(const core::ParameterSet& update, size_t chunk_bytes, const std::string& tuning,
                                       const BenchPki* pki) {
  std::shared_ptr<grpc::ChannelCredentials> client_credentials;
  std::shared_ptr<grpc::ServerCredentials> server_credentials;
  if (pki) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> client = pki->SiteCredentials("bench-site");
    if (!client.ok()) return client.status();
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> server = pki->ServerCredentials();
    if (!server.ok()) return server.status();
    client_credentials = *client;
    server_credentials = *server;
  }
  TempDir out("cohort-upload-bench");
  server::JobOptions options;
  options.config = OneRoundJob("upload-bench", 1, chunk_bytes);
  options.config.federation.rounds = 2;
  options.initial_model = core::ParameterSet(update.manifest());
  options.out_dir = out.path();
  absl::StatusOr<std::unique_ptr<server::FederatedJob>> job = server::FederatedJob::Create(std::move(options));
  if (!job.ok()) return job.status();

  std::promise<int> port_promise;
  std::future<int> port_future = port_promise.get_future();
  absl::Status served;
  std::thread server_thread([&] {
    bool listening = false;
    server::ServerOptions server_options;
    server_options.listen_address = "127.0.0.1:0";
    server_options.linger_seconds = 0;
    server_options.credentials = server_credentials;
    server_options.on_listening = [&](int port) {
      listening = true;
      port_promise.set_value(port);
    };
    served = ServeJobTuned(**job, server_options, tuning);
    if (!listening) port_promise.set_value(0);
  });
  auto fail = [&](absl::Status why) {
    (*job)->Cancel();
    server_thread.join();
    return why;
  };
  const int port = port_future.get();
  if (port == 0) return fail(absl::UnavailableError("the server did not start"));

  wire::FederationClient client(
      wire::Connection{absl::StrCat("127.0.0.1:", port), client_credentials, /*own_connection=*/true});
  absl::StatusOr<wire::Session> session = client.Join(
      "bench-site", 1000, wire::JoinOptions{.timeout = std::chrono::seconds(60), .wait_for_ready = true});
  if (!session.ok()) return fail(session.status());
  core::ParameterSet global;
  GrpcRun run;
  for (int round = 0; round < 2; ++round) {
    absl::StatusOr<wire::PulledTask> task = client.PullTrainTask(*session, &global);
    if (!task.ok()) return fail(task.status());
    if (task->header.chunk_bytes() != chunk_bytes || task->header.round() != static_cast<uint64_t>(round + 1)) {
      return fail(absl::InternalError(absl::StrCat("the task is round ", task->header.round(), " in chunks of ",
                                                   task->header.chunk_bytes(), ", expected round ", round + 1,
                                                   " in chunks of ", chunk_bytes)));
    }
    run.download_seconds[round] = task->download_seconds;
    const Clock::time_point start = Clock::now();
    const double cpu_start = ProcessCpuSeconds();
    if (absl::Status s = client.PushUpdate(*session, wire::UpdateInfoFor(task->header, 1000), update); !s.ok()) {
      return fail(s);
    }
    run.upload_seconds[round] = SecondsSince(start);
    run.upload_cpu_seconds[round] = ProcessCpuSeconds() - cpu_start;
  }
  server_thread.join();
  if (!served.ok()) return served;
  return run;
}

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

absl::Status WriteFully(int fd, const std::byte* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno("write");
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// A TCP listener on a free port of 127.0.0.1, its address in `addr`.
absl::StatusOr<int> ListenOnLoopback(sockaddr_in* addr) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  *addr = sockaddr_in{};
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(*addr);
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(addr), sizeof(*addr)) != 0 ||
      ::listen(listener, 1) != 0 || ::getsockname(listener, reinterpret_cast<sockaddr*>(addr), &len) != 0) {
    const absl::Status failed = Errno("loopback listener");
    if (listener >= 0) ::close(listener);
    return failed;
  }
  return listener;
}

// Seconds from the first write() to the receiver holding the last byte; `cpu_seconds`
// gets the process's CPU time over the same transfer (both ends).
absl::StatusOr<double> RawTcpOnce(std::span<const std::byte> data, size_t piece, double* cpu_seconds) {
  sockaddr_in addr{};
  absl::StatusOr<int> listening = ListenOnLoopback(&addr);
  if (!listening.ok()) return listening.status();
  const int listener = *listening;
  size_t received = 0;
  Clock::time_point received_at;
  std::thread receiver([&] {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    std::vector<char> buffer(piece);
    while (fd >= 0 && received < data.size()) {
      const ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      received += static_cast<size_t>(n);
    }
    received_at = Clock::now();
    if (fd >= 0) ::close(fd);
  });
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  absl::Status sent = fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0
                          ? absl::OkStatus()
                          : Errno("connect");
  const Clock::time_point start = Clock::now();
  const double cpu_start = ProcessCpuSeconds();
  for (size_t off = 0; sent.ok() && off < data.size(); off += piece) {
    sent = WriteFully(fd, data.data() + off, std::min(piece, data.size() - off));
  }
  if (fd >= 0) ::shutdown(fd, SHUT_WR);
  if (!sent.ok()) ::shutdown(listener, SHUT_RDWR);  // wakes the receiver if it never got a connection
  receiver.join();
  *cpu_seconds = ProcessCpuSeconds() - cpu_start;
  if (fd >= 0) ::close(fd);
  ::close(listener);
  if (!sent.ok()) return sent;
  if (received != data.size()) return absl::DataLossError(absl::StrCat("received ", received, " of ", data.size()));
  return std::chrono::duration<double>(received_at - start).count();
}

// `spool` is the receiver's spool file, removed afterwards (a symlink to /dev/null gives
// the checks and the scan alone: only the link is removed).
absl::StatusOr<double> AddChunkOnce(const core::ParameterSet& update, size_t chunk_bytes,
                                    const std::filesystem::path& spool) {
  const std::span<const std::byte> bytes = update.bytes();
  const uint32_t count = core::ChunkCount(bytes.size(), chunk_bytes);
  const Clock::time_point start = Clock::now();
  absl::StatusOr<core::UpdateReceiver> receiver =
      core::UpdateReceiver::Open(update.manifest(), count, chunk_bytes, spool, {});
  if (!receiver.ok()) return receiver.status();
  for (uint32_t i = 0; i < count; ++i) {
    if (absl::Status s = receiver->AddChunk(i, count, core::ChunkOf(bytes, i, chunk_bytes)); !s.ok()) return s;
  }
  absl::StatusOr<core::SpooledUpdate> spooled = receiver->Finish(1000, "bench-site");
  if (!spooled.ok()) return spooled.status();
  const double seconds = SecondsSince(start);
  std::filesystem::remove(spooled->path);
  return seconds;
}

// AddChunkOnce with the spool a fresh symlink to /dev/null in `dir` (removed again by it).
absl::StatusOr<double> AddChunkToNullOnce(const core::ParameterSet& update, size_t chunk_bytes,
                                          const std::filesystem::path& dir) {
  const std::filesystem::path link = dir / "null.update";
  std::error_code error;
  std::filesystem::create_symlink("/dev/null", link, error);
  if (error) return absl::InternalError(absl::StrCat("linking ", link.string(), " to /dev/null: ", error.message()));
  return AddChunkOnce(update, chunk_bytes, link);
}

absl::StatusOr<double> SpoolWriteOnce(const core::ParameterSet& update, size_t chunk_bytes,
                                      const std::filesystem::path& dir) {
  const std::span<const std::byte> bytes = update.bytes();
  const std::filesystem::path path = dir / "write.update";
  const Clock::time_point start = Clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("open");
  absl::Status s = absl::OkStatus();
  for (uint32_t i = 0; s.ok() && i < core::ChunkCount(bytes.size(), chunk_bytes); ++i) {
    const std::span<const std::byte> piece = core::ChunkOf(bytes, i, chunk_bytes);
    s = WriteFully(fd, piece.data(), piece.size());
  }
  if (::close(fd) != 0 && s.ok()) s = Errno("close");
  const double seconds = SecondsSince(start);
  std::filesystem::remove(path);
  if (!s.ok()) return s;
  return seconds;
}

volatile double g_sink = 0;  // keeps the protobuf loop from being optimized away

// What protobuf adds per chunk on the two ends: the client copies the piece into its
// message and serializes it; the server parses it (copying the bytes out again).
double ProtobufOnce(const core::ParameterSet& update, size_t chunk_bytes) {
  const std::span<const std::byte> bytes = update.bytes();
  const uint32_t count = core::ChunkCount(bytes.size(), chunk_bytes);
  v1::UpdateMessage message, parsed;
  std::string wire;
  const Clock::time_point start = Clock::now();
  for (uint32_t i = 0; i < count; ++i) {
    const std::span<const std::byte> piece = core::ChunkOf(bytes, i, chunk_bytes);
    v1::Chunk* chunk = message.mutable_chunk();
    chunk->set_index(i);
    chunk->set_count(count);
    chunk->set_data(reinterpret_cast<const char*>(piece.data()), piece.size());
    message.SerializeToString(&wire);
    parsed.ParseFromString(wire);
  }
  g_sink = static_cast<double>(parsed.chunk().data().size());
  return SecondsSince(start);
}

// The unsealed path of issue 2: two plaintext uploads to one bench-only server, timed
// apart (as the two rounds of a sealed run).
// `cpu_seconds` gets each upload's CPU time (the process's, both ends).
absl::StatusOr<std::array<double, 2>> UnsealedUploadTwice(const core::ParameterSet& update, size_t chunk_bytes,
                                                          std::array<double, 2>* cpu_seconds) {
  TempDir spool("cohort-upload-bench-unsealed");
  absl::StatusOr<std::unique_ptr<UnsealedUploadServer>> server =
      UnsealedUploadServer::Start(update.manifest(), spool.path());
  if (!server.ok()) return server.status();
  wire::FederationClient client(
      wire::Connection{absl::StrCat("127.0.0.1:", (*server)->port()), nullptr, /*own_connection=*/true});
  // Connected before timing, as the sealed runs are by their Join.
  if (absl::Status s = client.WaitForConnection(std::chrono::seconds(30)); !s.ok()) return s;
  wire::UpdateInfo info;
  info.round = 1;
  info.num_samples = 1000;
  info.chunk_bytes = chunk_bytes;
  std::array<double, 2> seconds{};
  for (size_t i = 0; i < seconds.size(); ++i) {
    const Clock::time_point start = Clock::now();
    const double cpu_start = ProcessCpuSeconds();
    if (absl::Status s = client.PushUnsealedUpdate("bench-site", info, update); !s.ok()) return s;
    seconds[i] = SecondsSince(start);
    (*cpu_seconds)[i] = ProcessCpuSeconds() - cpu_start;
  }
  return seconds;
}

// Raw TLS 1.3 over one loopback socket: the server's kit certificate and key, the client
// verifying nothing (only the transport is priced). Timed from the first SSL_write after
// the handshake to the receiver holding the last byte.
absl::StatusOr<double> RawTlsOnce(std::span<const std::byte> data, size_t piece, const std::filesystem::path& kit,
                                  double* cpu_seconds) {
  SSL_CTX* server_ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  auto free_contexts = [&] {
    SSL_CTX_free(server_ctx);
    SSL_CTX_free(client_ctx);
  };
  if (server_ctx == nullptr || client_ctx == nullptr ||
      SSL_CTX_use_certificate_chain_file(server_ctx, (kit / "cert.pem").c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(server_ctx, (kit / "key.pem").c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_set_min_proto_version(client_ctx, TLS1_3_VERSION) != 1) {
    free_contexts();
    return absl::InternalError("setting up the TLS contexts failed");
  }
  sockaddr_in addr{};
  absl::StatusOr<int> listening = ListenOnLoopback(&addr);
  if (!listening.ok()) {
    free_contexts();
    return listening.status();
  }
  const int listener = *listening;
  size_t received = 0;
  Clock::time_point received_at;
  std::string cipher;
  std::thread receiver([&] {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    SSL* ssl = fd >= 0 ? SSL_new(server_ctx) : nullptr;
    if (ssl != nullptr && SSL_set_fd(ssl, fd) == 1 && SSL_accept(ssl) == 1) {
      std::vector<char> buffer(piece);
      while (received < data.size()) {
        const int n = SSL_read(ssl, buffer.data(), static_cast<int>(buffer.size()));
        if (n <= 0) break;
        received += static_cast<size_t>(n);
      }
      received_at = Clock::now();
      cipher = SSL_get_cipher_name(ssl);
    }
    if (ssl != nullptr) SSL_free(ssl);
    if (fd >= 0) ::close(fd);
  });
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  SSL* ssl = nullptr;
  absl::Status sent = absl::OkStatus();
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    sent = Errno("connect");
  } else {
    ssl = SSL_new(client_ctx);
    if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1) {
      sent = absl::InternalError("TLS handshake failed");
    }
  }
  const Clock::time_point start = Clock::now();
  const double cpu_start = ProcessCpuSeconds();
  for (size_t off = 0; sent.ok() && off < data.size(); off += piece) {
    const int n = static_cast<int>(std::min(piece, data.size() - off));
    if (SSL_write(ssl, data.data() + off, n) != n) sent = absl::InternalError("SSL_write failed");
  }
  if (ssl != nullptr) SSL_free(ssl);
  if (fd >= 0) ::shutdown(fd, SHUT_WR);
  if (!sent.ok()) ::shutdown(listener, SHUT_RDWR);
  receiver.join();
  *cpu_seconds = ProcessCpuSeconds() - cpu_start;
  if (fd >= 0) ::close(fd);
  ::close(listener);
  free_contexts();
  if (!sent.ok()) return sent;
  if (received != data.size()) return absl::DataLossError(absl::StrCat("TLS received ", received, " of ", data.size()));
  if (cipher != "TLS_AES_256_GCM_SHA384") return absl::InternalError(absl::StrCat("negotiated ", cipher));
  return std::chrono::duration<double>(received_at - start).count();
}

// Both ends of one session, agreed locally, for the pieces timed alone.
struct LocalSessions {
  std::shared_ptr<wire::SealedSession> client;
  std::shared_ptr<wire::SealedSession> server;
};

absl::StatusOr<LocalSessions> AgreeLocally() {
  const crypto::X25519KeyPair client = crypto::GenerateX25519KeyPair();
  const crypto::X25519KeyPair server = crypto::GenerateX25519KeyPair();
  auto as_string = [](const crypto::X25519PublicKey& key) {
    return std::string(reinterpret_cast<const char*>(key.data()), key.size());
  };
  absl::StatusOr<std::shared_ptr<wire::SealedSession>> c = wire::SealedSession::Agree(
      client, as_string(server.public_key), crypto::Side::kClient, "upload-bench", "bench-site");
  absl::StatusOr<std::shared_ptr<wire::SealedSession>> s = wire::SealedSession::Agree(
      server, as_string(client.public_key), crypto::Side::kServer, "upload-bench", "bench-site");
  if (!c.ok()) return c.status();
  if (!s.ok()) return s.status();
  return LocalSessions{*c, *s};
}

// Every chunk of `update` sealed by `client` (round 1, model version 0), as sent.
absl::StatusOr<std::vector<std::string>> SealAll(const core::ParameterSet& update, size_t chunk_bytes,
                                                 wire::SealedSession& client) {
  const uint32_t count = core::ChunkCount(update.bytes().size(), chunk_bytes);
  std::vector<std::string> sealed(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (absl::Status s = client.SealChunk(1, 0, i, count, core::ChunkOf(update.bytes(), i, chunk_bytes), &sealed[i]);
        !s.ok()) {
      return s;
    }
  }
  return sealed;
}

absl::StatusOr<double> SealOnce(const core::ParameterSet& update, size_t chunk_bytes, wire::SealedSession& client) {
  const uint32_t count = core::ChunkCount(update.bytes().size(), chunk_bytes);
  v1::Chunk chunk;
  const Clock::time_point start = Clock::now();
  for (uint32_t i = 0; i < count; ++i) {
    if (absl::Status s =
            client.SealChunk(1, 0, i, count, core::ChunkOf(update.bytes(), i, chunk_bytes), chunk.mutable_data());
        !s.ok()) {
      return s;
    }
  }
  return SecondsSince(start);
}

absl::StatusOr<double> OpenOnce(const std::vector<std::string>& sealed, size_t chunk_bytes,
                                const wire::SealedSession& server) {
  const uint32_t count = static_cast<uint32_t>(sealed.size());
  const std::shared_ptr<const core::ChunkCodec> codec = server.StreamOpener(1, 0, count);
  std::vector<std::byte> plain(chunk_bytes);
  const Clock::time_point start = Clock::now();
  for (uint32_t i = 0; i < count; ++i) {
    const std::span<const std::byte> in = std::as_bytes(std::span(sealed[i].data(), sealed[i].size()));
    if (absl::Status s = codec->Open(i, in, std::span(plain).first(in.size() - codec->overhead())); !s.ok()) return s;
  }
  return SecondsSince(start);
}

absl::StatusOr<double> AddSealedChunksOnce(const core::Manifest& manifest, const std::vector<std::string>& sealed,
                                           size_t chunk_bytes, const wire::SealedSession& server,
                                           const std::filesystem::path& spool) {
  const uint32_t count = static_cast<uint32_t>(sealed.size());
  const Clock::time_point start = Clock::now();
  absl::StatusOr<core::UpdateReceiver> receiver =
      core::UpdateReceiver::Open(manifest, count, chunk_bytes, spool, {}, server.StreamOpener(1, 0, count));
  if (!receiver.ok()) return receiver.status();
  for (uint32_t i = 0; i < count; ++i) {
    if (absl::Status s = receiver->AddChunk(i, count, std::as_bytes(std::span(sealed[i].data(), sealed[i].size())));
        !s.ok()) {
      return s;
    }
  }
  absl::StatusOr<core::SpooledUpdate> spooled = receiver->Finish(1000, "bench-site");
  if (!spooled.ok()) return spooled.status();
  const double seconds = SecondsSince(start);
  std::filesystem::remove(spooled->path);
  return seconds;
}

double MemcpyOnce(const core::ParameterSet& update, size_t chunk_bytes) {
  std::vector<std::byte> target(chunk_bytes);
  const uint32_t count = core::ChunkCount(update.bytes().size(), chunk_bytes);
  const Clock::time_point start = Clock::now();
  for (uint32_t i = 0; i < count; ++i) {
    const std::span<const std::byte> piece = core::ChunkOf(update.bytes(), i, chunk_bytes);
    std::memcpy(target.data(), piece.data(), piece.size());
    g_sink = g_sink + static_cast<double>(target[piece.size() / 2]);
  }
  return SecondsSince(start);
}

// "1 MiB chunks", "512 KiB chunks": the row names of earlier runs stay as they were.
std::string ChunkLabel(size_t kib) {
  return kib % 1024 == 0 ? absl::StrCat(kib / 1024, " MiB chunks") : absl::StrCat(kib, " KiB chunks");
}

struct Row {
  std::string name;
  std::vector<double> seconds;
  std::vector<double> cpu_seconds;  // the transfers' rows only
};

int Main(int argc, char** argv) {
  absl::StatusOr<Flags> flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    std::cerr << flags.status().message() << "\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::err);  // the plaintext runs would each warn that they are insecure
  const core::ParameterSet update = FilledUpdate(FloatManifest(flags->params, 4));
  const size_t total = update.bytes().size();
  const std::time_t now = std::time(nullptr);
  std::cout << "cohort_upload_bench: " << flags->params << " float32 parameters (" << total / 1e6 << " MB), "
            << flags->repeats << " repeats, started " << std::asctime(std::gmtime(&now))
            << "load average at start: " << LoadAverage() << "\n";

  std::vector<std::string> order;
  std::map<std::string, Row> rows;
  std::map<std::string, std::vector<double>> downloads;
  auto record = [&](const std::string& name, absl::StatusOr<double> seconds, double cpu_seconds = -1) {
    if (!seconds.ok()) {
      std::cerr << name << " failed: " << seconds.status() << "\n";
      std::exit(1);
    }
    if (!rows.contains(name)) order.push_back(name);
    rows[name].name = name;
    rows[name].seconds.push_back(*seconds);
    if (cpu_seconds >= 0) rows[name].cpu_seconds.push_back(cpu_seconds);
  };
  TempDir scratch("cohort-upload-bench-scratch");
  absl::StatusOr<BenchPki> pki = BenchPki::Provision(scratch.path() / "pki", {"bench-site"});
  if (!pki.ok()) {
    std::cerr << "provisioning the benchmark federation failed: " << pki.status() << "\n";
    return 1;
  }
  absl::StatusOr<LocalSessions> sessions = AgreeLocally();
  if (!sessions.ok()) {
    std::cerr << "agreeing local session keys failed: " << sessions.status() << "\n";
    return 1;
  }
  // The pieces timed alone run in chunks of the first --chunk-kib size, as its uploads do.
  const size_t piece = flags->chunk_kib.front() << 10;
  const std::string piece_label = ChunkLabel(flags->chunk_kib.front());
  const absl::StatusOr<std::vector<std::string>> sealed = SealAll(update, piece, *sessions->client);
  if (!sealed.ok()) {
    std::cerr << "sealing the update failed: " << sealed.status() << "\n";
    return 1;
  }
  for (int r = 0; r < flags->repeats; ++r) {
    double cpu = 0;
    absl::StatusOr<double> raw_tcp = RawTcpOnce(update.bytes(), kMiB, &cpu);
    record("raw TCP, 1 MiB writes", raw_tcp, cpu);
    struct Variant {
      size_t kib;
      std::string tuning;
      bool tls;
    };
    std::vector<Variant> variants;
    if (!flags->skip.contains("plain")) {
      for (size_t kib : flags->chunk_kib) variants.push_back({kib, "", false});
    }
    if (!flags->skip.contains("tls")) variants.push_back({flags->chunk_kib.front(), "", true});
    for (const std::string& tuning : flags->grpc) variants.push_back({flags->chunk_kib.front(), tuning, false});
    if (!flags->skip.contains("raw")) {
      absl::StatusOr<double> raw_tls =
          RawTlsOnce(update.bytes(), kMiB, pki->kit_dir(std::string(crypto::kServerParticipantName)), &cpu);
      record("raw TLS 1.3 (OpenSSL, AES-256-GCM), 1 MiB writes", raw_tls, cpu);
    }
    if (!flags->skip.contains("unsealed")) {
      std::array<double, 2> unsealed_cpu{};
      absl::StatusOr<std::array<double, 2>> unsealed =
          UnsealedUploadTwice(update, flags->chunk_kib.front() << 10, &unsealed_cpu);
      const std::string name =
          absl::StrCat("gRPC upload, unsealed (before sealing), ", ChunkLabel(flags->chunk_kib.front()));
      for (int i = 0; i < 2; ++i) {
        record(absl::StrCat(name, i == 0 ? ", 1st" : ", 2nd"),
               unsealed.ok() ? absl::StatusOr<double>((*unsealed)[i]) : unsealed.status(), unsealed_cpu[i]);
      }
    }
    for (const auto& [kib, tuning, tls] : variants) {
      absl::StatusOr<GrpcRun> run = GrpcUploadOnce(update, kib << 10, tuning, tls ? &*pki : nullptr);
      if (!run.ok()) {
        std::cerr << "gRPC upload failed: " << run.status() << "\n";
        return 1;
      }
      const std::string suffix =
          absl::StrCat(ChunkLabel(kib), tls ? ", mutual TLS" : ", no TLS", tuning.empty() ? "" : ", server " + tuning);
      for (int round = 0; round < 2; ++round) {
        const std::string which = round == 0 ? ", round 1" : ", round 2";
        record(absl::StrCat("gRPC upload, sealed, ", suffix, which), run->upload_seconds[round],
               run->upload_cpu_seconds[round]);
        downloads[absl::StrCat("gRPC download (sealed model), ", suffix, which)].push_back(run->download_seconds[round]);
      }
    }
    if (flags->skip.contains("pieces")) {
      std::cerr << "repeat " << r + 1 << "/" << flags->repeats << " done\n";
      continue;
    }
    record(absl::StrCat("seal alone (SealedSession::SealChunk), ", piece_label), SealOnce(update, piece, *sessions->client));
    record(absl::StrCat("open alone (the server's codec), ", piece_label), OpenOnce(*sealed, piece, *sessions->server));
    record("AddChunk sealed (open, checks, scan, spool write)",
           AddSealedChunksOnce(update.manifest(), *sealed, piece, *sessions->server, scratch.path() / "sealed.update"));
    record("AddChunk plaintext (checks, scan, spool write)",
           AddChunkOnce(update, piece, scratch.path() / "addchunk.update"));
    record("  spool write() alone", SpoolWriteOnce(update, piece, scratch.path()));
    record("  AddChunk with its spool at /dev/null (checks, scan)", AddChunkToNullOnce(update, piece, scratch.path()));
    record(absl::StrCat("protobuf set_data+serialize+parse, ", piece_label), ProtobufOnce(update, piece));
    record(absl::StrCat("memcpy of each chunk into one reused buffer, ", piece_label), MemcpyOnce(update, piece));
    std::cerr << "repeat " << r + 1 << "/" << flags->repeats << " done\n";
  }
  for (auto& [name, seconds] : downloads) {
    order.push_back(name);
    rows[name] = {name, seconds, {}};
  }

  const double raw = total / Median(rows["raw TCP, 1 MiB writes"].seconds) / 1e6;
  // CPU: the process's CPU-seconds over the transfer (median), and that over its wall time:
  // how many of the machine's cores it kept busy on average.
  std::cout << absl::StrFormat("%-66s %10s %9s %15s  %s\n", "variant", "MB/s (med)", "vs raw", "CPU s (cores)",
                               "runs (MB/s)");
  for (const std::string& name : order) {
    const Row& row = rows[name];
    const double mbps = total / Median(row.seconds) / 1e6;
    std::string runs;
    for (double s : row.seconds)
      absl::StrAppend(&runs, runs.empty() ? "" : " ", absl::StrFormat("%.0f", total / s / 1e6));
    const std::string cpu =
        row.cpu_seconds.empty()
            ? "-"
            : absl::StrFormat("%.3f (%.2f)", Median(row.cpu_seconds), Median(row.cpu_seconds) / Median(row.seconds));
    std::cout << absl::StrFormat("%-66s %10.0f %8.0f%% %15s  %s\n", name, mbps, 100 * mbps / raw, cpu, runs);
  }
  std::cout << "load average at end: " << LoadAverage() << "\n";
  return 0;
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) { return cohort::bench::Main(argc, argv); }
