// `cohort admin`: the admin and auditor client of a running server.
//
//   cohort admin --kit DIR [--server HOST:PORT] [--job ID] [--json] COMMAND
//     status                        job state, round, clients, audit head and entry count
//     jobs                          the jobs the server runs
//     start | stop [--reason TEXT]  start a held job; stop a job at the next round boundary
//     set PARAMETER VALUE           change a running job's parameter (applies next round)
//     participants                  enrolled, joined and revoked sites
//     add SITE | revoke SITE        enroll a site; exclude a site at once
//     audit-log --out FILE          download the audit log (auditors and admins)
//
// Exit codes: 0 done, 1 the server refused or could not be reached, 2 bad input (a
// parameter, value or site the server rejected as invalid, a missing kit).
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "core/bounded_json.h"
#include "crypto/startup_kit.h"
#include "proto/cohort.grpc.pb.h"
#include "storage/atomic_write.h"
#include "wire/credentials.h"

namespace cohort::cli {
namespace {

// A value the server echoed, for --json: as parsed when it is JSON within the bounds,
// otherwise the text it sent, as a string.
nlohmann::json ShownValue(const std::string& text) {
  absl::StatusOr<nlohmann::json> value = core::ParseBoundedJson(text, core::kAdminValueJson, "value");
  return value.ok() ? *value : nlohmann::json(text);
}

struct AdminFlags {
  std::string kit, server, job, reason, out;
  bool insecure = false, json = false;
  std::string parameter, value, site;
};

int ExitCodeFor(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK: return 0;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::FAILED_PRECONDITION: return 2;
    default: return 1;
  }
}

// A downloaded audit log keeps the mode the server gives its own.
constexpr mode_t kAuditLogCopyMode = 0640;

int Report(const grpc::Status& status, const std::string& what) {
  if (status.ok()) return 0;
  std::cerr << "cohort admin " << what << ": " << status.error_message() << "\n";
  return ExitCodeFor(status);
}

class AdminClient {
 public:
  static absl::StatusOr<AdminClient> Connect(const AdminFlags& flags) {
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    std::string address = flags.server;
    if (flags.insecure) {
      if (address.empty()) return absl::InvalidArgumentError("--insecure needs --server HOST:PORT");
      credentials = grpc::InsecureChannelCredentials();
    } else {
      if (flags.kit.empty()) return absl::InvalidArgumentError("pass --kit DIR (an admin or auditor kit) or --insecure");
      absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(flags.kit);
      if (!kit.ok()) return absl::InvalidArgumentError(absl::StrCat("--kit ", flags.kit, ": ", kit.status().message()));
      if (address.empty()) address = kit->server_address;
      credentials = wire::ChannelCredentialsFromKit(*kit);
    }
    return AdminClient(v1::Admin::NewStub(grpc::CreateChannel(address, credentials)), address);
  }

  v1::Admin::Stub& stub() { return *stub_; }
  const std::string& address() const { return address_; }
  // Every call carries a deadline: an unreachable server is an error, not a hang.
  void Prepare(grpc::ClientContext& context) const {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  }

 private:
  AdminClient(std::unique_ptr<v1::Admin::Stub> stub, std::string address)
      : stub_(std::move(stub)), address_(std::move(address)) {}
  std::unique_ptr<v1::Admin::Stub> stub_;
  std::string address_;
};

int RunStatus(AdminClient& client, const AdminFlags& flags) {
  grpc::ClientContext context;
  client.Prepare(context);
  v1::StatusReply reply;
  const grpc::Status s = client.stub().GetStatus(&context, v1::StatusRequest{}, &reply);
  if (!s.ok()) return Report(s, "status");
  nlohmann::json clients = nlohmann::json::array();
  for (const v1::ClientStatus& c : reply.clients()) {
    clients.push_back({{"site", c.client_id()}, {"state", c.state()}, {"num_samples", c.num_samples()},
                       {"last_seen_ms_ago", c.last_seen_ms_ago()}});
  }
  if (flags.json) {
    std::cout << nlohmann::json{{"job_id", reply.job_id()},         {"state", reply.state()},
                                {"round", reply.round()},           {"total_rounds", reply.total_rounds()},
                                {"clients", clients},               {"audit_head", reply.audit_head()},
                                {"audit_entries", reply.audit_entries()}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "job " << reply.job_id() << ": " << reply.state() << ", round " << reply.round() << "/"
            << reply.total_rounds() << "\n";
  for (const v1::ClientStatus& c : reply.clients()) {
    std::cout << "  " << c.client_id() << "  " << c.state() << "  " << c.num_samples() << " samples, seen "
              << c.last_seen_ms_ago() << " ms ago\n";
  }
  std::cout << "audit log: " << reply.audit_entries() << " entries, head " << reply.audit_head() << "\n";
  return 0;
}

int RunJobs(AdminClient& client, const AdminFlags& flags) {
  grpc::ClientContext context;
  client.Prepare(context);
  v1::ListJobsReply reply;
  const grpc::Status s = client.stub().ListJobs(&context, v1::ListJobsRequest{}, &reply);
  if (!s.ok()) return Report(s, "jobs");
  nlohmann::json jobs = nlohmann::json::array();
  for (const v1::JobSummary& j : reply.jobs()) {
    jobs.push_back({{"job_id", j.job_id()}, {"state", j.state()}, {"round", j.round()}, {"total_rounds", j.total_rounds()}});
    if (!flags.json) std::cout << j.job_id() << "  " << j.state() << "  round " << j.round() << "/" << j.total_rounds() << "\n";
  }
  if (flags.json) std::cout << jobs.dump(2) << "\n";
  return 0;
}

int RunControl(AdminClient& client, const AdminFlags& flags, bool start) {
  grpc::ClientContext context;
  client.Prepare(context);
  v1::JobControlRequest request;
  request.set_job_id(flags.job);
  request.set_reason(flags.reason);
  v1::JobControlReply reply;
  const grpc::Status s =
      start ? client.stub().StartJob(&context, request, &reply) : client.stub().StopJob(&context, request, &reply);
  if (!s.ok()) return Report(s, start ? "start" : "stop");
  std::cout << reply.message() << "\n";
  return 0;
}

int RunSet(AdminClient& client, const AdminFlags& flags) {
  // A value that is not JSON is taken as a string, so `set lr_scheduler cosine` works;
  // one over the server's bounds is refused here rather than sent.
  if (absl::Status s = core::CheckJsonBounds(flags.value, core::kAdminValueJson, "value"); !s.ok()) {
    std::cerr << "cohort admin set: " << s.message() << "\n";
    return 2;
  }
  const absl::StatusOr<nlohmann::json> parsed = core::ParseBoundedJson(flags.value, core::kAdminValueJson, "value");
  const std::string value_json = parsed.ok() ? parsed->dump() : nlohmann::json(flags.value).dump();
  grpc::ClientContext context;
  client.Prepare(context);
  v1::SetParameterRequest request;
  request.set_job_id(flags.job);
  request.set_parameter(flags.parameter);
  request.set_value_json(value_json);
  request.set_reason(flags.reason);
  v1::SetParameterReply reply;
  const grpc::Status s = client.stub().SetParameter(&context, request, &reply);
  if (!s.ok()) return Report(s, "set");
  if (flags.json) {
    std::cout << nlohmann::json{{"parameter", reply.parameter()},
                                {"old", ShownValue(reply.old_value_json())},
                                {"new", ShownValue(reply.new_value_json())},
                                {"applies_at_round", reply.applies_at_round()},
                                {"audit_seq", reply.audit_seq()}}
                     .dump(2)
              << "\n";
  } else {
    std::cout << reply.parameter() << ": " << reply.old_value_json() << " -> " << reply.new_value_json()
              << ", from round " << reply.applies_at_round() << " (audit entry " << reply.audit_seq() << ")\n";
  }
  return 0;
}

int RunParticipants(AdminClient& client, const AdminFlags& flags) {
  grpc::ClientContext context;
  client.Prepare(context);
  v1::ListParticipantsRequest request;
  request.set_job_id(flags.job);
  v1::ListParticipantsReply reply;
  const grpc::Status s = client.stub().ListParticipants(&context, request, &reply);
  if (!s.ok()) return Report(s, "participants");
  nlohmann::json list = nlohmann::json::array();
  for (const v1::Participant& p : reply.participants()) {
    list.push_back({{"site", p.site()}, {"state", p.state()}, {"num_samples", p.num_samples()},
                    {"last_seen_ms_ago", p.last_seen_ms_ago()}});
  }
  if (flags.json) {
    std::cout << nlohmann::json{{"participants", list}, {"open_enrollment", reply.open_enrollment()}}.dump(2) << "\n";
    return 0;
  }
  std::cout << (reply.open_enrollment() ? "enrollment: open (any site of the federation may join)\n"
                                        : "enrollment: listed sites only\n");
  for (const v1::Participant& p : reply.participants()) {
    std::cout << "  " << p.site() << "  " << p.state() << "  " << p.num_samples() << " samples\n";
  }
  return 0;
}

int RunParticipantChange(AdminClient& client, const AdminFlags& flags, bool add) {
  grpc::ClientContext context;
  client.Prepare(context);
  v1::ParticipantRequest request;
  request.set_job_id(flags.job);
  request.set_site(flags.site);
  request.set_reason(flags.reason);
  v1::ParticipantReply reply;
  const grpc::Status s = add ? client.stub().AddParticipant(&context, request, &reply)
                             : client.stub().RevokeParticipant(&context, request, &reply);
  if (!s.ok()) return Report(s, add ? "add" : "revoke");
  std::cout << reply.message() << " (audit entry " << reply.audit_seq() << ")\n";
  return 0;
}

int RunAuditLog(AdminClient& client, const AdminFlags& flags) {
  grpc::ClientContext context;
  client.Prepare(context);
  std::unique_ptr<grpc::ClientReader<v1::AuditLogChunk>> reader =
      client.stub().ReadAuditLog(&context, v1::AuditLogRequest{});
  // The copy appears under --out whole or not at all: an interrupted download leaves
  // nothing that could pass for a shorter log.
  uint64_t bytes = 0;
  grpc::Status stream = grpc::Status::OK;
  const absl::Status written = storage::WriteFileAtomically(
      flags.out,
      [&](const storage::ByteSink& sink) -> absl::Status {
        v1::AuditLogChunk chunk;
        while (reader->Read(&chunk)) {
          const std::string& data = chunk.data();
          if (absl::Status s = sink(std::as_bytes(std::span(data.data(), data.size()))); !s.ok()) {
            context.TryCancel();
            reader->Finish();
            return s;
          }
          bytes += data.size();
        }
        stream = reader->Finish();
        return stream.ok() ? absl::OkStatus() : absl::AbortedError("the audit log stream failed");
      },
      kAuditLogCopyMode);
  if (!stream.ok()) return Report(stream, "audit-log");
  if (!written.ok()) {
    std::cerr << "cohort admin audit-log: " << written.message() << "\n";
    return 1;
  }
  std::cout << "wrote " << bytes << " bytes of audit log to " << flags.out
            << "; verify it with: cohort audit verify " << flags.out << " --key AUDIT.pub\n";
  return 0;
}

}  // namespace

void AddAdminCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("admin", "Administer a running server: status, jobs, start, stop, set, participants");
  cmd->require_subcommand(1);
  auto flags = std::make_shared<AdminFlags>();
  cmd->add_option("--kit", flags->kit, "An admin's or auditor's startup kit (mutual TLS)");
  cmd->add_option("--server", flags->server, "HOST:PORT of the server (default: the kit's)");
  cmd->add_flag("--insecure", flags->insecure, "Plaintext gRPC to a server started with --insecure");
  cmd->add_option("--job", flags->job, "Job id (default: the server's job)");
  cmd->add_flag("--json", flags->json, "Machine-readable output");

  auto run = [flags, exit_code](auto body) {
    return [flags, exit_code, body] {
      absl::StatusOr<AdminClient> client = AdminClient::Connect(*flags);
      if (!client.ok()) {
        std::cerr << "cohort admin: " << client.status().message() << "\n";
        *exit_code = 2;
        return;
      }
      *exit_code = body(*client, *flags);
    };
  };
  cmd->add_subcommand("status", "Job state, round, clients, audit head hash and entry count")
      ->callback(run([](AdminClient& c, const AdminFlags& f) { return RunStatus(c, f); }));
  cmd->add_subcommand("jobs", "The jobs this server runs")
      ->callback(run([](AdminClient& c, const AdminFlags& f) { return RunJobs(c, f); }));
  auto* start = cmd->add_subcommand("start", "Start a job the server holds (cohort server --hold)");
  start->add_option("--reason", flags->reason, "Why, for the audit log");
  start->callback(run([](AdminClient& c, const AdminFlags& f) { return RunControl(c, f, true); }));
  auto* stop = cmd->add_subcommand("stop", "Stop the job at the next round boundary");
  stop->add_option("--reason", flags->reason, "Why, for the audit log");
  stop->callback(run([](AdminClient& c, const AdminFlags& f) { return RunControl(c, f, false); }));
  auto* set = cmd->add_subcommand("set", "Change a parameter of the running job; applies from the next round");
  set->add_option("parameter", flags->parameter, "e.g. learning_rate, local_epochs, clients_per_round, rounds")
      ->required();
  set->add_option("value", flags->value, "The new value (JSON: 0.05, 3, true, or a plain word)")->required();
  set->add_option("--reason", flags->reason, "Why, for the audit log");
  set->callback(run([](AdminClient& c, const AdminFlags& f) { return RunSet(c, f); }));
  cmd->add_subcommand("participants", "Enrolled, joined and revoked sites")
      ->callback(run([](AdminClient& c, const AdminFlags& f) { return RunParticipants(c, f); }));
  auto* add = cmd->add_subcommand("add", "Enroll a site in the job");
  add->add_option("site", flags->site, "Site name")->required();
  add->add_option("--reason", flags->reason, "Why, for the audit log");
  add->callback(run([](AdminClient& c, const AdminFlags& f) { return RunParticipantChange(c, f, true); }));
  auto* revoke = cmd->add_subcommand("revoke", "Exclude a site from the job at once");
  revoke->add_option("site", flags->site, "Site name")->required();
  revoke->add_option("--reason", flags->reason, "Why, for the audit log");
  revoke->callback(run([](AdminClient& c, const AdminFlags& f) { return RunParticipantChange(c, f, false); }));
  auto* log = cmd->add_subcommand("audit-log", "Download the server's audit log");
  log->add_option("--out", flags->out, "Where to write it")->required();
  log->callback(run([](AdminClient& c, const AdminFlags& f) { return RunAuditLog(c, f); }));
}

}  // namespace cohort::cli
