// The audit actions are listed in three places that must agree: the constants in
// audit/entry.h (audit::action::kAll), the table in docs/audit.md that auditors read, and
// the calls in server/ that write entries. A new action written by the server but missing
// from the catalog or the doc fails here.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "audit/entry.h"

namespace cohort::audit {
namespace {

const std::filesystem::path kSourceDir = COHORT_SOURCE_DIR;

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::set<std::string> Catalog() {
  std::set<std::string> names;
  for (const char* name : action::kAll) names.insert(name);
  return names;
}

TEST(ActionCatalogTest, DocumentedActionsAreExactlyTheCatalog) {
  const std::string doc = ReadAll(kSourceDir / "docs" / "audit.md");
  // The table whose header starts "| action", to its first line that is not a row.
  const size_t header = doc.find("\n| action ");
  ASSERT_NE(header, std::string::npos) << "docs/audit.md has no table headed \"| action\"";
  size_t end = doc.find("\n\n", header + 1);
  if (end == std::string::npos) end = doc.size();
  const std::string table = doc.substr(header, end - header);
  const std::regex row(R"(\n\| `([a-z][a-z0-9_.]*)` +\|)");
  std::set<std::string> documented;
  for (auto it = std::sregex_iterator(table.begin(), table.end(), row); it != std::sregex_iterator(); ++it) {
    documented.insert((*it)[1].str());
  }
  ASSERT_FALSE(documented.empty()) << "no action table found in docs/audit.md";
  EXPECT_EQ(documented, Catalog()) << "docs/audit.md's action table and audit::action::kAll differ";
}

TEST(ActionCatalogTest, CatalogHoldsEveryConstantOnce) {
  const std::string header = ReadAll(kSourceDir / "audit" / "entry.h");
  const std::regex constant(R"re(inline constexpr char (k[A-Za-z]+)\[\] = "([a-z][a-z0-9_.]*)";)re");
  std::set<std::string> declared;
  for (auto it = std::sregex_iterator(header.begin(), header.end(), constant); it != std::sregex_iterator(); ++it) {
    if ((*it)[1].str() == "kZeroHash" || (*it)[1].str() == "kEntrySignatureContext") continue;
    declared.insert((*it)[2].str());
  }
  EXPECT_EQ(declared, Catalog()) << "an action constant in audit/entry.h is missing from audit::action::kAll";
  EXPECT_EQ(std::size(action::kAll), Catalog().size()) << "audit::action::kAll lists an action twice";
  for (const char* name : action::kAll) EXPECT_TRUE(IsValidActionName(name)) << name;
}

// The server names actions only through the constants, and only constants in the catalog.
TEST(ActionCatalogTest, ServerWritesOnlyCatalogActions) {
  const std::string header = ReadAll(kSourceDir / "audit" / "entry.h");
  const std::regex used(R"(audit::action::(k[A-Za-z]+))");
  const std::regex action_literal(R"re("[a-z][a-z0-9_]*\.[a-z0-9_.]*[a-z0-9_]")re");
  size_t uses = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kSourceDir / "server")) {
    if (entry.path().extension() != ".cc" && entry.path().extension() != ".h") continue;
    const std::string source = ReadAll(entry.path());
    // Each Record( call, to the end of its statement, names its action by a constant.
    for (size_t at = source.find("Record("); at != std::string::npos; at = source.find("Record(", at + 1)) {
      const std::string call = source.substr(at, source.find(';', at) - at);
      std::smatch literal;
      EXPECT_FALSE(std::regex_search(call, literal, action_literal))
          << entry.path() << " records the action " << literal.str() << " as a string literal: use an audit::action constant";
    }
    for (auto it = std::sregex_iterator(source.begin(), source.end(), used); it != std::sregex_iterator(); ++it) {
      const std::string name = (*it)[1].str();
      if (name == "kAll") continue;
      ++uses;
      const std::regex declaration("inline constexpr char " + name + R"re(\[\] = "([a-z0-9_.]+)";)re");
      std::smatch match;
      ASSERT_TRUE(std::regex_search(header, match, declaration))
          << entry.path() << " uses audit::action::" << name << ", which audit/entry.h does not declare";
      EXPECT_TRUE(action::IsKnown(match[1].str())) << name << " is not in audit::action::kAll";
    }
  }
  EXPECT_GE(uses, 10u) << "found too few audit actions in server/: has the recorder moved?";
}

TEST(ActionCatalogTest, UnknownNamesAreNotKnown) {
  EXPECT_TRUE(action::IsKnown("model.publish"));
  EXPECT_FALSE(action::IsKnown("model.publishx"));
  EXPECT_FALSE(action::IsKnown(""));
}

}  // namespace
}  // namespace cohort::audit
