#include "server/job_store.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "core/quote.h"

namespace cohort::server {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS job (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parameter_changes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  parameter TEXT NOT NULL,
  value TEXT NOT NULL,
  actor TEXT NOT NULL,
  audit_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS participants (
  site TEXT PRIMARY KEY,
  state TEXT NOT NULL CHECK (state IN ('enrolled', 'revoked')),
  audit_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
  round INTEGER PRIMARY KEY,
  model_version INTEGER NOT NULL,
  model_sha256 TEXT NOT NULL,
  completed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
)sql";

// One prepared statement, finalized when it goes out of scope.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) { status_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  bool ok() const { return status_ == SQLITE_OK; }
  Statement& Bind(int index, const std::string& text) {
    if (ok()) status_ = sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int index, int64_t value) {
    if (ok()) status_ = sqlite3_bind_int64(stmt_, index, value);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE, or an error code.
  int Step() { return ok() ? sqlite3_step(stmt_) : status_; }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) const {
    const unsigned char* text = sqlite3_column_text(stmt_, column);
    return text == nullptr ? std::string()
                           : std::string(reinterpret_cast<const char*>(text),
                                         static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int status_;
};

}  // namespace

absl::Status JobStore::Error(const char* doing) const {
  return absl::InternalError(absl::StrCat("job database ", path_.string(), ": ", doing, ": ", sqlite3_errmsg(db_)));
}

absl::Status JobStore::Exec(const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    absl::Status error = absl::InternalError(
        absl::StrCat("job database ", path_.string(), ": ", message != nullptr ? message : "error"));
    sqlite3_free(message);
    return error;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::filesystem::path& path, const std::string& job) {
  sqlite3* db = nullptr;
  const int opened =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  std::unique_ptr<JobStore> store(new JobStore(path, db));
  if (opened != SQLITE_OK) return store->Error("cannot open");
  sqlite3_busy_timeout(db, 5000);
  // WAL with a full sync at every commit: an acknowledged change survives a crash or a
  // power loss, and readers never block the writer.
  if (absl::Status s = store->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"); !s.ok()) return s;
  if (absl::Status s = store->Exec(kSchema); !s.ok()) {
    return absl::DataLossError(absl::StrCat(s.message(), " (not a Cohort job database? move it away)"));
  }
  Statement name(db, "SELECT value FROM job WHERE key = 'name'");
  const int step = name.Step();
  if (step == SQLITE_ROW) {
    if (name.Text(0) != job) {
      return absl::FailedPreconditionError(absl::StrCat(path.string(), " belongs to job \"", name.Text(0),
                                                        "\", not \"", job, "\"; use another --out directory"));
    }
  } else if (step == SQLITE_DONE) {
    Statement insert(db, "INSERT INTO job (key, value) VALUES ('name', ?1)");
    if (insert.Bind(1, job).Step() != SQLITE_DONE) return store->Error("recording the job's name");
  } else {
    return store->Error("reading the job's name");
  }
  return store;
}

JobStore::~JobStore() { sqlite3_close_v2(db_); }

absl::StatusOr<int64_t> JobStore::AddParameterChange(const std::string& parameter, const nlohmann::json& value,
                                                     const std::string& actor, uint64_t audit_seq) {
  std::lock_guard lock(mu_);
  Statement insert(db_, "INSERT INTO parameter_changes (parameter, value, actor, audit_seq) VALUES (?1, ?2, ?3, ?4)");
  if (insert.Bind(1, parameter).Bind(2, value.dump()).Bind(3, actor).Bind(4, static_cast<int64_t>(audit_seq)).Step() !=
      SQLITE_DONE) {
    return Error("recording a parameter change");
  }
  return sqlite3_last_insert_rowid(db_);
}

absl::Status JobStore::DropParameterChanges(const std::vector<int64_t>& ids) {
  std::lock_guard lock(mu_);
  for (int64_t id : ids) {
    Statement drop(db_, "DELETE FROM parameter_changes WHERE id = ?1");
    if (drop.Bind(1, id).Step() != SQLITE_DONE) return Error("dropping a parameter change");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<JobStore::ParameterChangeRow>> JobStore::ParameterChanges() {
  std::lock_guard lock(mu_);
  Statement select(db_, "SELECT id, parameter, value FROM parameter_changes ORDER BY id");
  std::vector<ParameterChangeRow> rows;
  int step;
  while ((step = select.Step()) == SQLITE_ROW) {
    absl::StatusOr<nlohmann::json> value = core::ParseBoundedJson(select.Text(2), core::kAdminValueJson, "value");
    if (!value.ok()) {
      return absl::DataLossError(absl::StrCat(path_.string(), ": parameter change ", select.Int(0), " (",
                                              core::QuotePrefix(select.Text(1)), "): ", value.status().message()));
    }
    rows.push_back({select.Int(0), select.Text(1), *std::move(value)});
  }
  if (step != SQLITE_DONE) return Error("reading parameter changes");
  return rows;
}

absl::Status JobStore::SetParticipant(const std::string& site, const std::string& state, uint64_t audit_seq) {
  std::lock_guard lock(mu_);
  Statement upsert(db_,
                   "INSERT INTO participants (site, state, audit_seq) VALUES (?1, ?2, ?3) "
                   "ON CONFLICT (site) DO UPDATE SET state = excluded.state, audit_seq = excluded.audit_seq");
  if (upsert.Bind(1, site).Bind(2, state).Bind(3, static_cast<int64_t>(audit_seq)).Step() != SQLITE_DONE) {
    return Error("recording a participant");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<JobStore::ParticipantRow>> JobStore::Participants() {
  std::lock_guard lock(mu_);
  Statement select(db_, "SELECT site, state FROM participants ORDER BY site");
  std::vector<ParticipantRow> rows;
  int step;
  while ((step = select.Step()) == SQLITE_ROW) rows.push_back({select.Text(0), select.Text(1)});
  if (step != SQLITE_DONE) return Error("reading participants");
  return rows;
}

absl::Status JobStore::RecordRound(uint64_t round, uint64_t model_version, const std::string& model_sha256) {
  std::lock_guard lock(mu_);
  Statement insert(db_,
                   "INSERT OR REPLACE INTO rounds (round, model_version, model_sha256) VALUES (?1, ?2, ?3)");
  if (insert.Bind(1, static_cast<int64_t>(round)).Bind(2, static_cast<int64_t>(model_version)).Bind(3, model_sha256).Step() !=
      SQLITE_DONE) {
    return Error("recording a completed round");
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> JobStore::LastRound() {
  std::lock_guard lock(mu_);
  Statement select(db_, "SELECT COALESCE(MAX(round), 0) FROM rounds");
  if (select.Step() != SQLITE_ROW) return Error("reading rounds");
  return static_cast<uint64_t>(select.Int(0));
}

}  // namespace cohort::server
