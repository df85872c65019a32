#pragma once
// The server's one permission table: which role may make which call.
//
// Every RPC the server serves maps to exactly one Permission, and every role holds a
// fixed set of permissions. The gRPC services ask Authorize() first thing in every
// handler, before reading a request message or touching a job, so a denied call does
// no work. Identities and roles come from verified certificates (crypto/certificates.h),
// never from anything the caller says about itself.
//
//   permission          admin  auditor  site   what it allows
//   job.read_status       x       x             Admin.GetStatus, Admin.ListJobs
//   job.control           x                     Admin.StartJob, Admin.StopJob
//   job.set_parameter     x                     Admin.SetParameter
//   participants.read     x                     Admin.ListParticipants
//   participants.manage   x                     Admin.AddParticipant, Admin.RevokeParticipant
//   audit.read            x       x             Admin.ReadAuditLog
//   federation.join                      x      Federation.Join
//   federation.train                     x      Federation.PullTask, PushUpdate, Heartbeat, Decline,
//                                               Vertical.Exchange (a party of a vertical job)
//
// The server role (the server's own certificate) holds nothing: it never calls itself.
//
// The methods themselves come from the services' descriptors (proto/cohort.proto), not
// from a list of our own: a method added to the protocol without a line in the table is
// denied to everyone and reported by PermissionTableProblems(), which the tests and the
// server's start check.

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "crypto/certificates.h"

namespace google::protobuf {
class DescriptorPool;
}  // namespace google::protobuf

namespace cohort::server {

enum class Permission {
  kReadStatus,
  kControlJob,
  kSetParameter,
  kReadParticipants,
  kManageParticipants,
  kReadAudit,
  kJoin,
  kTrain,
};

// "job.read_status", "federation.train", ...
std::string_view PermissionName(Permission permission);

// The full gRPC name of `method` of `service`, as calls, the table and the audit log name
// it: "/cohort.v1.Federation/Join" for ("cohort.v1.Federation", "Join").
std::string FullMethodName(std::string_view service, std::string_view method);

// The permission a call needs, by its full gRPC method name ("/cohort.v1.Admin/GetStatus");
// nullopt for a method the table does not know (such a call is denied).
std::optional<Permission> RequiredPermission(std::string_view method);

// Every method of the served services (Federation, Admin, Vertical) that holds a permission, by full
// name, in the order of the protocol; for tests and documentation.
std::span<const std::string> KnownMethods();

// What keeps the table from covering the protocol exactly: a method of a served service
// with no permission, a line of the table naming no method, or a method named twice. Each
// problem is one sentence naming the method. Empty when the table is complete.
std::vector<std::string> PermissionTableProblems();
// The same check against another build of the protocol: what a changed cohort.proto
// would leave uncovered.
std::vector<std::string> PermissionTableProblems(const google::protobuf::DescriptorPool& protocol);

bool RoleHolds(crypto::Role role, Permission permission);

// OK when `role` may call `method`; PERMISSION_DENIED naming the identity, its role, the
// method and the permission it lacks otherwise.
absl::Status CheckAccess(std::string_view identity, crypto::Role role, std::string_view method);

}  // namespace cohort::server
