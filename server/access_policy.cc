#include "server/access_policy.h"

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"

namespace cohort::server {
namespace {

struct MethodRule {
  std::string_view method;
  Permission permission;
};

constexpr std::array kMethodRules = {
    MethodRule{"/cohort.v1.Federation/Join", Permission::kJoin},
    MethodRule{"/cohort.v1.Federation/PullTask", Permission::kTrain},
    MethodRule{"/cohort.v1.Federation/PushUpdate", Permission::kTrain},
    MethodRule{"/cohort.v1.Federation/Heartbeat", Permission::kTrain},
    MethodRule{"/cohort.v1.Federation/Decline", Permission::kTrain},
    MethodRule{"/cohort.v1.Admin/GetStatus", Permission::kReadStatus},
    MethodRule{"/cohort.v1.Admin/ListJobs", Permission::kReadStatus},
    MethodRule{"/cohort.v1.Admin/StartJob", Permission::kControlJob},
    MethodRule{"/cohort.v1.Admin/StopJob", Permission::kControlJob},
    MethodRule{"/cohort.v1.Admin/SetParameter", Permission::kSetParameter},
    MethodRule{"/cohort.v1.Admin/ListParticipants", Permission::kReadParticipants},
    MethodRule{"/cohort.v1.Admin/AddParticipant", Permission::kManageParticipants},
    MethodRule{"/cohort.v1.Admin/RevokeParticipant", Permission::kManageParticipants},
    MethodRule{"/cohort.v1.Admin/ReadAuditLog", Permission::kReadAudit},
};

constexpr std::array<std::string_view, kMethodRules.size()> MethodNames() {
  std::array<std::string_view, kMethodRules.size()> names{};
  for (size_t i = 0; i < kMethodRules.size(); ++i) names[i] = kMethodRules[i].method;
  return names;
}
constexpr auto kMethodNames = MethodNames();

}  // namespace

std::string_view PermissionName(Permission permission) {
  switch (permission) {
    case Permission::kReadStatus: return "job.read_status";
    case Permission::kControlJob: return "job.control";
    case Permission::kSetParameter: return "job.set_parameter";
    case Permission::kReadParticipants: return "participants.read";
    case Permission::kManageParticipants: return "participants.manage";
    case Permission::kReadAudit: return "audit.read";
    case Permission::kJoin: return "federation.join";
    case Permission::kTrain: return "federation.train";
  }
  return "unknown";
}

std::optional<Permission> RequiredPermission(std::string_view method) {
  for (const MethodRule& rule : kMethodRules) {
    if (rule.method == method) return rule.permission;
  }
  return std::nullopt;
}

std::span<const std::string_view> KnownMethods() { return kMethodNames; }

bool RoleHolds(crypto::Role role, Permission permission) {
  switch (role) {
    case crypto::Role::kAdmin:
      return permission != Permission::kJoin && permission != Permission::kTrain;
    case crypto::Role::kAuditor:
      return permission == Permission::kReadStatus || permission == Permission::kReadAudit;
    case crypto::Role::kSite:
      return permission == Permission::kJoin || permission == Permission::kTrain;
    case crypto::Role::kServer:
      return false;
  }
  return false;
}

absl::Status CheckAccess(std::string_view identity, crypto::Role role, std::string_view method) {
  const std::optional<Permission> needed = RequiredPermission(method);
  if (!needed) {
    return absl::PermissionDeniedError(
        absl::StrCat(std::string(method), " is not in the server's permission table; nobody may call it"));
  }
  if (RoleHolds(role, *needed)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(std::string(identity), " (role ", std::string(crypto::RoleName(role)),
                                                  ") may not call ", std::string(method), ": it lacks permission ",
                                                  std::string(PermissionName(*needed))));
}

}  // namespace cohort::server
