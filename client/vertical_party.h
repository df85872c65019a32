#pragma once
// A party of a vertical job (docs/vertical.md): the process a site runs with its own kit
// and its own columns. It says hello to the server, checks every other party's
// introduction against its kit's CA and agrees a sealed channel with each, finds the rows
// all parties share by private set intersection (crypto/psi.h) without learning any other
// identifier, trains its bottom model by split learning (and, at the label party, the top
// model), evaluates on the held-out aligned rows, and saves its parts under `out_dir`:
//   model.pt     this party's bottom model (state dict; torch.load reads it)
//   top.pt       the top model, at the label party only
//   party.json   what they are: job, party, role, model configs, sizes, final metrics
// Every failure is reported to the server (FAILED, naming this party) before returning.

#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "training/vertical_data.h"

namespace cohort::client {

// What a run measured (benchmarks, logs).
struct VerticalPartyStats {
  double psi_seconds = 0;         // hashing and blinding to the aligned rows, network included
  double train_seconds = 0;       // training batches of every epoch, evaluation excluded
  int64_t train_samples = 0;      // rows trained on, over every epoch
  int64_t intersection_size = 0;
  double eval_accuracy = 0;       // label party: after the last epoch
  uint64_t bytes_sent = 0, bytes_received = 0;  // sealed relay payloads
};

struct VerticalPartyOptions {
  std::string kit_dir;         // this party's startup kit (role site)
  std::string server_address;  // empty: the kit's
  training::VerticalDataSpec data;
  std::filesystem::path out_dir;
  int threads = 0;                  // LibTorch and PSI threads; 0: the job's training_config.threads
  double connect_timeout_s = 60;    // for the server to be reachable
  double reconnect_for_s = 60;      // after the stream breaks
  VerticalPartyStats* stats = nullptr;  // optional: filled as the run goes
};

// Runs the whole job. Aborted with the server's reason when the job was aborted.
absl::Status RunVerticalParty(const VerticalPartyOptions& options);

}  // namespace cohort::client
