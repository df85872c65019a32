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
//   federation.train                     x      Federation.PullTask, PushUpdate, Heartbeat, Decline
//
// The server role (the server's own certificate) holds nothing: it never calls itself.

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "crypto/certificates.h"

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

// The permission a call needs, by its full gRPC method name ("/cohort.v1.Admin/GetStatus");
// nullopt for a method the table does not know (such a call is denied).
std::optional<Permission> RequiredPermission(std::string_view method);

// Every method the table covers, for tests and documentation.
std::span<const std::string_view> KnownMethods();

bool RoleHolds(crypto::Role role, Permission permission);

// OK when `role` may call `method`; PERMISSION_DENIED naming the identity, its role, the
// method and the permission it lacks otherwise.
absl::Status CheckAccess(std::string_view identity, crypto::Role role, std::string_view method);

}  // namespace cohort::server
