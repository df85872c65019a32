// DP-SGD step cost against the non-private step, for the niid_cnn on Fashion-MNIST, same
// batch, same process, interleaved repetitions:
//   plain  forward, backward (mean loss), optimizer step
//   dp     Cohort's DP-SGD step: vectorized per-example norms, clipped sum, noise
//          (training/dp_sgd_step.h), optimizer step
//   loop   the same DP-SGD step by the textbook method: one forward and backward per
//          example, clip, accumulate, noise, optimizer step
// Time: wall clock of each step. Memory: a counting allocator installed as LibTorch's CPU
// allocator records bytes held by tensors; a step's "extra memory" is the peak during the
// step minus what was held when it started (model, optimizer, batch). Scratch that OpenBLAS or
// oneDNN allocate themselves is not counted.
//
//   cohort_dp_sgd_bench [--reps 20] [--batches 64,256] [--threads 1] [--data DIR] [--model JSON]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/torch.h>

#include "training/data_readers.h"
#include "training/dp_sgd_step.h"
#include "training/model_spec.h"
#include "training/per_example_grads.h"
#include "training/torch_model.h"

namespace {

using namespace cohort::training;
using Clock = std::chrono::steady_clock;

// Counts the bytes of every live CPU tensor allocation, and the peak since ResetPeak(). The
// size sits in a 64-byte header before the data (keeping LibTorch's 64-byte alignment), so
// the data pointer is its own context: oneDNN allocates through raw_allocate(), which needs
// that.
class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    auto* base = static_cast<char*>(c10::alloc_cpu(n + kHeader));
    std::memcpy(base, &n, sizeof(n));
    const int64_t now = current_.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    void* data = base + kHeader;
    return {data, data, &Release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Release; }

  int64_t current() const { return current_.load(); }
  int64_t peak() const { return peak_.load(); }
  void ResetPeak() { peak_.store(current_.load()); }

 private:
  static constexpr size_t kHeader = 64;
  static void Release(void* data) {
    char* base = static_cast<char*>(data) - kHeader;
    size_t n;
    std::memcpy(&n, base, sizeof(n));
    current_.fetch_sub(static_cast<int64_t>(n));
    c10::free_cpu(base);
  }

  static inline std::atomic<int64_t> current_{0}, peak_{0};
};

CountingAllocator* counter = nullptr;

struct Sample {
  double ms;
  double extra_mib;
};

template <typename Step>
Sample Measure(Step&& step) {
  const int64_t before = counter->current();
  counter->ResetPeak();
  const auto start = Clock::now();
  step();
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return {ms, static_cast<double>(counter->peak() - before) / (1 << 20)};
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string Arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == name) return argv[i + 1];
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  static CountingAllocator allocator;
  counter = &allocator;
  c10::SetCPUAllocator(&allocator, /*priority=*/100);

  const int reps = std::atoi(Arg(argc, argv, "--reps", "20").c_str());
  const int threads = std::atoi(Arg(argc, argv, "--threads", "1").c_str());
  const std::string data_dir = Arg(argc, argv, "--data", COHORT_FASHION_MNIST_DIR);
  const std::string model_path = Arg(argc, argv, "--model", COHORT_MODELS_DIR "/niid_cnn.json");
  std::vector<int64_t> batches;
  {
    const std::string list = Arg(argc, argv, "--batches", "64,256");
    size_t pos = 0;
    while (pos < list.size()) {
      const size_t comma = list.find(',', pos);
      batches.push_back(std::atoll(list.substr(pos, comma - pos).c_str()));
      pos = comma == std::string::npos ? list.size() : comma + 1;
    }
  }
  torch::set_num_threads(threads);

  std::ifstream in(model_path);
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(nlohmann::json::parse(in));
  absl::StatusOr<Dataset> train = ReadFashionMnist(data_dir, Split::kTrain);
  if (!spec.ok() || !train.ok()) {
    std::fprintf(stderr, "cannot load the model or the data: %s %s\n", std::string(spec.status().message()).c_str(),
                 std::string(train.status().message()).c_str());
    return 1;
  }
  std::vector<std::string> labels;
  for (size_t i = 0; i < spec->layers.size(); ++i) labels.push_back("layer " + std::to_string(i));

  std::printf("model %s (%lld parameters), %d torch thread(s), %d interleaved repetitions\n", spec->name.c_str(),
              static_cast<long long>(spec->num_parameters()), threads, reps);
  std::printf("%6s %-6s %10s %10s %10s %12s %8s %8s\n", "batch", "step", "median ms", "min ms", "max ms",
              "extra MiB", "x time", "x mem");
  for (const int64_t b : batches) {
    Dataset d = train->Head(static_cast<size_t>(b));
    const torch::Tensor x = torch::from_blob(d.features.data(), {b, 1, 28, 28}).clone();
    const torch::Tensor y = torch::from_blob(d.labels.data(), {b}, torch::kInt64).clone();
    torch::manual_seed(1);
    CohortNet net(*spec);
    net->train();
    std::vector<torch::Tensor> params = net->parameters();
    torch::optim::SGD optimizer(params, torch::optim::SGDOptions(0.01));
    absl::StatusOr<PerExampleGradients> engine = PerExampleGradients::Create(net->layers(), labels);
    absl::StatusOr<SecureGenerator> random = SecureGenerator::Create();
    if (!engine.ok() || !random.ok()) return 1;
    DpSgdSpend spend;
    spend.noise_multiplier = 1.0;
    spend.clip_norm = 1.0;
    spend.expected_batch_size = static_cast<double>(b);
    spend.sampling_rate = 0.01;

    auto plain = [&] {
      optimizer.zero_grad();
      torch::nn::functional::cross_entropy(net->forward(x), y).backward();
      optimizer.step();
    };
    auto dp = [&] {
      std::vector<torch::Tensor> g = PrivatizedGradient(*engine, params, x, y, spend, random->generator(), nullptr);
      for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = std::move(g[i]);
      optimizer.step();
    };
    auto loop = [&] {
      std::vector<torch::Tensor> sum;
      for (const torch::Tensor& p : params) sum.push_back(torch::zeros_like(p));
      for (int64_t n = 0; n < b; ++n) {
        optimizer.zero_grad();
        torch::nn::functional::cross_entropy(net->forward(x.slice(0, n, n + 1)), y.slice(0, n, n + 1)).backward();
        torch::NoGradGuard no_grad;
        double squared = 0;
        for (const torch::Tensor& p : params) squared += p.grad().pow(2).sum().item<double>();
        const double factor = std::min(1.0, spend.clip_norm / (std::sqrt(squared) + 1e-6));
        for (size_t i = 0; i < params.size(); ++i) sum[i].add_(params[i].grad(), factor);
      }
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) {
        sum[i].add_(torch::empty_like(sum[i]).normal_(0, spend.noise_multiplier * spend.clip_norm,
                                                      random->generator()));
        params[i].mutable_grad() = sum[i].div_(spend.expected_batch_size);
      }
      optimizer.step();
    };

    if (Arg(argc, argv, "--breakdown", "0") == "1") {
      // Where a DP step's time goes, phase by phase (medians over the repetitions).
      std::vector<double> t_backward, t_norms, t_sum, t_noise;
      for (int r = 0; r < reps + 3; ++r) {
        auto t0 = Clock::now();
        engine->Backward(x, y);
        auto t1 = Clock::now();
        torch::Tensor norms = engine->SquaredNorms().sqrt();
        auto t2 = Clock::now();
        std::vector<torch::Tensor> sums = engine->WeightedSum(ClipFactors(norms, 1.0));
        auto t3 = Clock::now();
        for (torch::Tensor& t : sums) t.add_(torch::empty_like(t).normal_(0, 1.0, random->generator()));
        auto t4 = Clock::now();
        if (r < 3) continue;
        auto ms = [](auto a, auto z) { return std::chrono::duration<double, std::milli>(z - a).count(); };
        t_backward.push_back(ms(t0, t1)), t_norms.push_back(ms(t1, t2)), t_sum.push_back(ms(t2, t3));
        t_noise.push_back(ms(t3, t4));
      }
      std::printf("%6lld breakdown: forward+backward to layer outputs %.2f ms, norms %.2f ms, clipped sums %.2f ms, "
                  "noise %.2f ms\n",
                  static_cast<long long>(b), Median(t_backward), Median(t_norms), Median(t_sum), Median(t_noise));
    }
    for (int w = 0; w < 3; ++w) {
      plain();
      dp();
      loop();
    }
    std::vector<double> t_plain, t_dp, t_loop, m_plain, m_dp, m_loop;
    for (int r = 0; r < reps; ++r) {
      // Rotate the order so that none of the three always runs first after the others.
      for (int k = 0; k < 3; ++k) {
        switch ((r + k) % 3) {
          case 0: {
            const Sample s = Measure(plain);
            t_plain.push_back(s.ms), m_plain.push_back(s.extra_mib);
            break;
          }
          case 1: {
            const Sample s = Measure(dp);
            t_dp.push_back(s.ms), m_dp.push_back(s.extra_mib);
            break;
          }
          default: {
            const Sample s = Measure(loop);
            t_loop.push_back(s.ms), m_loop.push_back(s.extra_mib);
          }
        }
      }
    }
    const double base_t = Median(t_plain), base_m = Median(m_plain);
    auto row = [&](const char* name, const std::vector<double>& t, const std::vector<double>& m) {
      std::printf("%6lld %-6s %10.2f %10.2f %10.2f %12.2f %8.2f %8.2f\n", static_cast<long long>(b), name, Median(t),
                  *std::min_element(t.begin(), t.end()), *std::max_element(t.begin(), t.end()), Median(m),
                  Median(t) / base_t, Median(m) / base_m);
    };
    row("plain", t_plain, m_plain);
    row("dp", t_dp, m_dp);
    row("loop", t_loop, m_loop);
  }
  return 0;
}
