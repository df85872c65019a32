#pragma once
// The job's durable runtime state, in OUT/job.db (SQLite, WAL, synchronous=FULL: a
// change acknowledged is on disk): parameter changes made while it runs, enrollment and
// revocations, and the rounds completed. A server restarted on the same --out replays
// the changes over the job file, so a change made before the first checkpoint survives
// too. Thread-safe; every call does disk I/O, so callers never hold the job's lock.
//
// Tables:
//   job(key, value)                            "name": the job this database belongs to
//   parameter_changes(id, parameter, value, actor, audit_seq)
//                                              value: the JSON text; replayed in id order
//   participants(site, state, audit_seq)       state: "enrolled" | "revoked"
//   rounds(round, model_version, model_sha256, completed_at)

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

struct sqlite3;

namespace cohort::server {

class JobStore {
 public:
  struct ParameterChangeRow {
    int64_t id = 0;
    std::string parameter;  // full key
    nlohmann::json value;
  };
  struct ParticipantRow {
    std::string site;
    std::string state;  // "enrolled" | "revoked"
  };

  // Opens (creating) the database at `path` for job `job`; FailedPrecondition when it
  // belongs to another job, DataLoss when it is not a Cohort job database.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::filesystem::path& path, const std::string& job);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  absl::StatusOr<int64_t> AddParameterChange(const std::string& parameter, const nlohmann::json& value,
                                             const std::string& actor, uint64_t audit_seq);
  // Forgets queued changes that were dropped at a round boundary (they conflicted).
  absl::Status DropParameterChanges(const std::vector<int64_t>& ids);
  absl::StatusOr<std::vector<ParameterChangeRow>> ParameterChanges();

  absl::Status SetParticipant(const std::string& site, const std::string& state, uint64_t audit_seq);
  absl::StatusOr<std::vector<ParticipantRow>> Participants();

  absl::Status RecordRound(uint64_t round, uint64_t model_version, const std::string& model_sha256);
  // The last round recorded; 0 when none.
  absl::StatusOr<uint64_t> LastRound();

  const std::filesystem::path& path() const { return path_; }

 private:
  JobStore(std::filesystem::path path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  absl::Status Exec(const char* sql);
  absl::Status Error(const char* doing) const;

  const std::filesystem::path path_;
  std::mutex mu_;
  sqlite3* db_;
};

}  // namespace cohort::server
