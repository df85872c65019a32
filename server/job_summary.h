#pragma once
// A horizontal job's summary as the server keeps it while the job runs: what summary.json
// will hold (less its "config") and what GetStatus and every checkpoint carry.
//
// The summary gains an entry per round, with every site's metrics, and lives as long as
// the job. Kept as a JSON tree it cost about 10 KiB a round with 8 sites, and every status
// call and checkpoint copied and serialized the whole tree, so the server's memory grew
// by about 70 KiB a round (docs/reliability.md, "Soak"). Here each round's entry is kept
// as its compact JSON text, serialized once when it is recorded (again only if it
// changes, which only the last rounds do), so the summary costs about its text's size
// (2.2 KB a round with 8 sites). The other top-level members ("job", "status",
// "ended_early", "failure") are few and small, and stay a tree.
//
// A Snapshot shares the rounds' texts, which are never changed in place (a changed entry
// gets a new text): taking one copies a pointer per round, and the checkpoint writes it
// part by part, so no copy of the whole text is made but the one a status reply carries.
//
// Not thread-safe: the owner (server/round_recorder.h) holds a lock around every call. A
// Snapshot may be used without it.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace cohort::server {

class JobSummary {
 public:
  // The summary's compact JSON at one moment: `head`, the rounds' texts separated by
  // commas, `tail`. Valid however the summary changes after it was taken.
  struct Snapshot {
    std::string head;  // `{`, the members that sort before "rounds", `"rounds":[`
    std::vector<std::shared_ptr<const std::string>> rounds;
    std::string tail;  // `]`, the members that sort after "rounds" ("status"), `}`

    // The text in order, as views into this snapshot.
    std::vector<std::string_view> Parts() const;
    // The text in one string of its exact size.
    std::string Text() const;
  };

  // `summary`: what a resumed job recorded so far (its checkpoint's summary, whose "rounds"
  // is an array), or anything else for a new job, which starts as {"job": job, "status":
  // "running", "rounds": []}.
  JobSummary(const std::string& job, nlohmann::json summary);

  // Sets a top-level member other than "rounds" ("status", "ended_early", ...).
  void SetMember(const std::string& key, nlohmann::json value);
  // Appends a round's entry (an object with a "round" number).
  void AppendRound(const nlohmann::json& entry);
  size_t round_count() const { return rounds_.size(); }
  // The last round's entry; null when there is none.
  nlohmann::json LastRound() const;
  // Applies `change` to the last round's entry and keeps its new text; false when there is
  // no round.
  bool UpdateLastRound(const std::function<void(nlohmann::json& entry)>& change);
  // Applies `change` to the entry of round `round` (searched from the last entry back,
  // since rounds are appended in order); false when no entry has that number.
  bool UpdateRound(uint64_t round, const std::function<void(nlohmann::json& entry)>& change);

  // The summary as compact JSON, in parts that share the rounds' texts: its text is byte
  // for byte Tree().dump().
  Snapshot Take() const;
  // The summary as a tree, parsed from the rounds' texts: for the job's start and end and
  // the dashboard, not for every status call.
  nlohmann::json Tree() const;

 private:
  nlohmann::json members_ = nlohmann::json::object();  // every top-level member but "rounds"
  std::vector<std::shared_ptr<const std::string>> rounds_;  // each entry's compact JSON, in order
};

}  // namespace cohort::server
