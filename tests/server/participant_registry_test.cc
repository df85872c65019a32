// Who may take part in a job: the site-name rule shared with provisioning, enrollment and
// revocation, the declared sample count and its bound, liveness and declines.
#include "server/participant_registry.h"

#include <gtest/gtest.h>

#include "core/names.h"

namespace cohort::server {
namespace {

using namespace std::chrono_literals;

TEST(ParticipantRegistry, SiteNamesFollowTheProvisioningRule) {
  for (const std::string& name : std::vector<std::string>{"hospital-a", "a", "Site_1.eu", std::string(64, 'x')}) {
    EXPECT_TRUE(ParticipantRegistry::CheckName(name).ok()) << name;
    EXPECT_TRUE(core::ValidateName("site", name).ok()) << name;
  }
  for (const std::string& name : std::vector<std::string>{"", "-leading-dash", ".hidden", "has space", "a/b",
                                                          std::string(65, 'x'), "caf\xc3\xa9"}) {
    const absl::Status s = ParticipantRegistry::CheckName(name);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(s, core::ValidateName("site", name)) << name;
  }
}

TEST(ParticipantRegistry, AHostileNameIsQuotedOnlyInPart) {
  const std::string huge(100000, 'x');
  const absl::Status s = ParticipantRegistry::CheckName(huge + " ");
  ASSERT_FALSE(s.ok());
  EXPECT_LT(s.message().size(), 300u);
}

TEST(ParticipantRegistry, ADeclaredCountAboveTheBoundIsRefusedNamingBoth) {
  ParticipantRegistry registry("job", {}, {});
  EXPECT_TRUE(registry.CheckJoin("a", 1000, 1000).ok());
  const absl::Status s = registry.CheckJoin("a", 1001, 1000);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("1001"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("max_samples_per_site (1000)"), std::string::npos) << s.message();
}

TEST(ParticipantRegistry, EnrollmentAndRevocationDecideWhoMayJoin) {
  ParticipantRegistry registry("job", {"a"}, {});
  EXPECT_TRUE(registry.CheckJoin("a", 10, 100).ok());
  EXPECT_EQ(registry.CheckJoin("b", 10, 100).code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(registry.CheckEnroll("b").ok());
  registry.Enroll("b");
  EXPECT_EQ(registry.CheckEnroll("b").code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(registry.CheckJoin("b", 10, 100).ok());
  ASSERT_TRUE(registry.Join("a", 10, nullptr, core::Clock::now()) == false);
  ASSERT_TRUE(registry.CheckRevoke("a").ok());
  registry.Revoke("a");
  EXPECT_EQ(registry.CheckJoin("a", 10, 100).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(registry.CheckEnroll("a").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry.CheckRevoke("a").code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.CheckRevoke("nobody").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry.Find("a")->lost);
  // A revoked site's heartbeat does not bring it back.
  EXPECT_FALSE(registry.Touch("a", core::Clock::now()));
  EXPECT_TRUE(registry.Alive(core::Clock::now(), 10s).empty());
}

TEST(ParticipantRegistry, SilentSitesAreLostAndComeBackWithAHeartbeat) {
  ParticipantRegistry registry("job", {}, {});
  const auto t0 = core::Clock::now();
  registry.Join("a", 10, nullptr, t0);
  registry.Join("b", 10, nullptr, t0);
  EXPECT_TRUE(registry.Join("a", 20, nullptr, t0));  // a re-join
  EXPECT_EQ(registry.Find("a")->declared_samples, 20u);
  registry.Touch("b", t0 + 5s);
  EXPECT_EQ(registry.MarkLost(t0 + 6s, 3s), std::vector<std::string>{"a"});
  EXPECT_TRUE(registry.MarkLost(t0 + 6s, 3s).empty());  // reported once
  EXPECT_EQ(registry.Alive(t0 + 6s, 3s), std::vector<std::string>{"b"});
  EXPECT_TRUE(registry.Touch("a", t0 + 7s));
  EXPECT_EQ(registry.Alive(t0 + 7s, 3s).size(), 2u);
}

TEST(ParticipantRegistry, ADeclinedSiteIsNeverAliveAgain) {
  ParticipantRegistry registry("job", {}, {});
  const auto t0 = core::Clock::now();
  registry.Join("a", 10, nullptr, t0);
  registry.Join("b", 10, nullptr, t0);
  EXPECT_TRUE(registry.Decline("a"));
  EXPECT_FALSE(registry.Decline("a"));
  EXPECT_EQ(registry.declined(), 1u);
  EXPECT_EQ(registry.able(), 1u);
  EXPECT_EQ(registry.Alive(t0, 3s), std::vector<std::string>{"b"});
}

}  // namespace
}  // namespace cohort::server
