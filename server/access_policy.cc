#include "server/access_policy.h"

#include <google/protobuf/descriptor.h>

#include <array>
#include <map>

#include "absl/strings/str_cat.h"
#include "proto/cohort.grpc.pb.h"

namespace cohort::server {
namespace {

// The services this server serves; their methods come from the generated descriptors.
constexpr std::array<std::string_view, 3> kServedServices = {
    v1::Federation::service_full_name(), v1::Admin::service_full_name(), v1::Vertical::service_full_name()};

struct MethodRule {
  std::string_view service;
  std::string_view method;  // as cohort.proto names it
  Permission permission;
};

// The one place a method is bound to the permission it needs.
constexpr std::array kMethodRules = {
    MethodRule{v1::Federation::service_full_name(), "Join", Permission::kJoin},
    MethodRule{v1::Federation::service_full_name(), "PullTask", Permission::kTrain},
    MethodRule{v1::Federation::service_full_name(), "PushUpdate", Permission::kTrain},
    MethodRule{v1::Federation::service_full_name(), "Heartbeat", Permission::kTrain},
    MethodRule{v1::Federation::service_full_name(), "Decline", Permission::kTrain},
    MethodRule{v1::Admin::service_full_name(), "GetStatus", Permission::kReadStatus},
    MethodRule{v1::Admin::service_full_name(), "ListJobs", Permission::kReadStatus},
    MethodRule{v1::Admin::service_full_name(), "StartJob", Permission::kControlJob},
    MethodRule{v1::Admin::service_full_name(), "StopJob", Permission::kControlJob},
    MethodRule{v1::Admin::service_full_name(), "SetParameter", Permission::kSetParameter},
    MethodRule{v1::Admin::service_full_name(), "ListParticipants", Permission::kReadParticipants},
    MethodRule{v1::Admin::service_full_name(), "AddParticipant", Permission::kManageParticipants},
    MethodRule{v1::Admin::service_full_name(), "RevokeParticipant", Permission::kManageParticipants},
    MethodRule{v1::Admin::service_full_name(), "ReadAuditLog", Permission::kReadAudit},
    MethodRule{v1::Vertical::service_full_name(), "Exchange", Permission::kTrain},
};

// The rules joined with the protocol's methods, once per process.
struct Table {
  std::vector<std::string> known;                // methods with a permission, in protocol order
  std::map<std::string, Permission, std::less<>> permission_of;
  std::vector<std::string> problems;
};

Table BuildTable(const google::protobuf::DescriptorPool& protocol) {
  Table table;
  std::array<int, kMethodRules.size()> uses{};
  for (std::string_view service_name : kServedServices) {
    const google::protobuf::ServiceDescriptor* service = protocol.FindServiceByName(std::string(service_name));
    if (service == nullptr) {
      table.problems.push_back(absl::StrCat("service ", std::string(service_name), " is not in the generated protocol"));
      continue;
    }
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string& method = service->method(i)->name();
      const std::string full_name = FullMethodName(service->full_name(), method);
      const MethodRule* found = nullptr;
      int matches = 0;
      for (size_t r = 0; r < kMethodRules.size(); ++r) {
        if (kMethodRules[r].service == service->full_name() && kMethodRules[r].method == method) {
          found = &kMethodRules[r];
          ++uses[r];
          ++matches;
        }
      }
      if (matches == 0) {
        table.problems.push_back(absl::StrCat(full_name, " has no permission in server/access_policy.cc; ",
                                              "nobody may call it until it gets one"));
      } else if (matches > 1) {
        table.problems.push_back(absl::StrCat(full_name, " is named ", matches,
                                              " times in server/access_policy.cc; give it one permission"));
      } else {
        table.known.push_back(full_name);
        table.permission_of.emplace(full_name, found->permission);
      }
    }
  }
  for (size_t r = 0; r < kMethodRules.size(); ++r) {
    if (uses[r] == 0) {
      table.problems.push_back(absl::StrCat("server/access_policy.cc names ",
                                            FullMethodName(kMethodRules[r].service, kMethodRules[r].method),
                                            ", which the protocol does not define"));
    }
  }
  return table;
}

const Table& TheTable() {
  static const Table table = BuildTable(*google::protobuf::DescriptorPool::generated_pool());
  return table;
}

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

std::string FullMethodName(std::string_view service, std::string_view method) {
  std::string name;
  name.reserve(service.size() + method.size() + 2);
  return name.append("/").append(service).append("/").append(method);
}

std::optional<Permission> RequiredPermission(std::string_view method) {
  const Table& table = TheTable();
  if (auto it = table.permission_of.find(method); it != table.permission_of.end()) return it->second;
  return std::nullopt;
}

std::span<const std::string> KnownMethods() { return TheTable().known; }

std::vector<std::string> PermissionTableProblems() { return TheTable().problems; }

std::vector<std::string> PermissionTableProblems(const google::protobuf::DescriptorPool& protocol) {
  return BuildTable(protocol).problems;
}

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
