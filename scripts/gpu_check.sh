#!/usr/bin/env bash
# GPU checks on a machine with a GPU, a PyTorch installation and no package registry:
# builds Cohort's training tests and benchmarks against the CUDA LibTorch inside PyTorch,
# runs the GPU tests (which skip, saying why, when no GPU is visible) and the benchmarks
# (CPU against GPU, fp32 against bf16, LibTorch's C++ step against PyTorch's Python step).
#   scripts/gpu_check.sh [BUILD_DIR]      (default: build-gpu); results in BUILD_DIR/gpu-results/
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
python=${PYTHON:-python3}
out="$build/gpu-results"

torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

# PyTorch's wheels are built with the pre-C++11 ABI or the new one: match it, or nothing links.
abi=$("$python" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix" -DTorch_DIR="$torch_prefix/Torch" \
  -DCMAKE_CXX_FLAGS="-D_GLIBCXX_USE_CXX11_ABI=$abi" \
  -DCUDAToolkit_ROOT=/usr/local/cuda
ninja -C "$build" -j"$(nproc)" cohort_device_tests cohort_data_parallel_tests cohort_dp_sgd_tests cohort_data_parallel_bench

mkdir -p "$out"
# Tests: the GPU cases run here; a skip prints its reason.
"$build/tests/training/cohort_device_tests" --gtest_output="xml:$out/device_tests.xml" | tee "$out/device_tests.txt"
"$build/tests/training/cohort_dp_sgd_tests" --gtest_brief=1 | tee "$out/dp_sgd_tests.txt"
"$build/tests/training/cohort_data_parallel_tests" --gtest_brief=1 | tee "$out/data_parallel_tests.txt"

# Benchmarks: samples/s of the Fashion-MNIST CNN and a larger CNN, CPU vs GPU, fp32 vs bf16.
bench="$build/bench/training/cohort_data_parallel_bench"
for model in niid_cnn wide_cnn; do
  "$bench" --model "$model" --device cpu --precision fp32 --workers 1 | tee -a "$out/bench.txt"
  for precision in fp32 bf16 fp16; do
    "$bench" --model "$model" --device cuda --precision "$precision" --workers 1 | tee -a "$out/bench.txt"
  done
done
# The same step in Python PyTorch, same model and batch, on the same GPU (target: C++ no slower).
"$python" bench/training/torch_step_bench.py --device cuda --precision fp32 | tee -a "$out/bench.txt"
"$python" bench/training/torch_step_bench.py --device cuda --precision bf16 | tee -a "$out/bench.txt"
echo "gpu_check: results in $out"
