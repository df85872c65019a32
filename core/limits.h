#pragma once
// Every bound Cohort puts on what it receives or reads, in one place. Each input that
// crosses a trust boundary (a message, a file written by someone else, a value an admin
// sends) is checked against one of these before any work proportional to it is done.
// docs/reliability.md lists each constant with where it is enforced and what a caller
// sees when an input is over it. Header only: every component may include it.

#include <cstddef>
#include <cstdint>

namespace cohort::core {

// ---- Messages, chunks and models -------------------------------------------------

// The largest gRPC message either end accepts (server builder and client channel,
// wire/stream_settings.h). A chunk is at most kMaxChunkBytes plus a sealing overhead
// and framing, so this leaves more than 2x headroom and refuses anything bigger
// before gRPC buffers it.
inline constexpr int kMaxMessageBytes = 8 << 20;

// Plaintext bytes per model chunk: federation.chunk_bytes in a job config and the
// chunk_bytes of an update's header must lie in [kMinChunkBytes, kMaxChunkBytes] and be
// a multiple of 4 (float alignment). Small chunks cost a message each; big ones cost
// a buffer each on both ends.
inline constexpr std::size_t kMinChunkBytes = 4096;
inline constexpr std::size_t kMaxChunkBytes = std::size_t{3} << 20;

// The largest model (and so the largest update: an update has the model's manifest)
// a manifest may describe when it is read from a file or a message. A manifest whose
// shapes multiply past this (or overflow) is refused before a buffer is allocated.
inline constexpr std::uint64_t kMaxModelBytes = std::uint64_t{64} << 30;

// ---- JSON documents ----------------------------------------------------------------

// A bound on one kind of JSON document: refused before parsing when longer than
// max_bytes or nested deeper than max_depth (core/bounded_json.h).
struct JsonLimits {
  std::size_t max_bytes;
  int max_depth;
};

// Nesting depth of any JSON document Cohort reads. The deepest legitimate document (a
// job config with a model spec) nests fewer than 10 levels; copying, comparing or
// printing a parsed tree recurses once per level, so depth, not length, is what
// overflows the stack.
inline constexpr int kMaxJsonDepth = 64;

// A job config file (`cohort server --config`, `cohort run`): a few KiB in practice, a
// model spec of hundreds of layers included.
inline constexpr JsonLimits kJobConfigJson{std::size_t{1} << 20, kMaxJsonDepth};

// The model, training and privacy configs a server sends a client at Join and with
// each task: sections of the job config, so the same bound.
inline constexpr JsonLimits kTaskConfigJson = kJobConfigJson;

// One parameter value sent with Admin.SetParameter (`cohort admin set`): settable
// parameters are numbers and short strings. Shallower than kMaxJsonDepth because the
// audit log records the value inside an entry, which must itself stay within it.
inline constexpr JsonLimits kAdminValueJson{std::size_t{4} << 10, 16};

// One line of the audit log, with its "\n" (audit/entry.h: kMaxEntryLineBytes). The
// writer refuses a longer entry and the reader stops at one.
inline constexpr std::size_t kMaxAuditLineBytes = std::size_t{1} << 20;
inline constexpr JsonLimits kAuditLineJson{kMaxAuditLineBytes, kMaxJsonDepth};

// An exported audit bundle (audit/bundle.h): one JSON object holding every line of a
// log as a string.
inline constexpr JsonLimits kAuditBundleJson{std::size_t{1} << 30, kMaxJsonDepth};

// One line of a site's privacy ledger (privacy/ledger_format.h): a header or a spend
// entry, each a few hundred bytes.
inline constexpr JsonLimits kLedgerLineJson{std::size_t{64} << 10, kMaxJsonDepth};

// The JSON header of a checkpoint (core/checkpoint.h): the manifest and the job's
// summary, which grows by one entry per round. Also the bound on summary.json and on
// the summary the server reports with GetStatus.
inline constexpr JsonLimits kCheckpointHeaderJson{std::size_t{64} << 20, kMaxJsonDepth};

// config.json of a startup kit and federation.json of provisioning: names, addresses
// and file names.
inline constexpr JsonLimits kStartupKitJson{std::size_t{64} << 10, kMaxJsonDepth};

// ---- Data sets -----------------------------------------------------------------------

// The largest data file a site reads (an IDX file after decompression, a CSV file): a
// file over it is refused before it is read whole. Fashion-MNIST's training images are
// 47 MB; the features of an IDX file take 4 bytes per byte read.
inline constexpr std::uint64_t kMaxDataFileBytes = std::uint64_t{4} << 30;

// The most classes a data set may have (integer labels are below it; distinct string
// labels are at most this many): the model's output layer has one unit per class.
inline constexpr std::int64_t kMaxDataClasses = std::int64_t{1} << 16;

// ---- Quoting hostile input -----------------------------------------------------------

// Bytes of a caller's value an error message or log line quotes (core/quote.h); the
// rest is replaced by its length.
inline constexpr std::size_t kQuotedPrefixBytes = 64;

// ---- Call rate -----------------------------------------------------------------------

// Calls per second one client certificate may make to the server, sustained, and the
// burst above it: a site heartbeats every heartbeat_timeout_s / 4 and long-polls for
// tasks, so a well-behaved site makes a few calls per second at most.
inline constexpr int kClientCallsPerSecond = 20;
inline constexpr int kClientCallBurst = 40;

}  // namespace cohort::core
