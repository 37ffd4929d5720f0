#!/usr/bin/env bash
# Everything a GPU session should run, in one command (results under ${OUT:-benchmarks/out}):
#   GPU tests with real compilation (fp32/bf16/fp16), fwd+bwd timings at the ELECTRA-small generator and
#   ELECTRA-base shapes in bf16 (pytest-benchmark JSON), and peak-memory runs.  Record the figures, with
#   the device and date, in benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
TNOPS_TEST_GPU=1 python -m pytest -q tests/test_ops_triton.py tests/test_mlm_torch.py tests/test_compile.py 2>&1 | tee "$out/gpu_tests.txt"
for shape in "2432 128 small" "20224 768 base"; do
  set -- $shape
  BENCH_N=$1 BENCH_E=$2 BENCH_DTYPE=bfloat16 python -m pytest -q benchmarks/test_bench_mlm.py \
    --benchmark-json "$out/bench_$3_bf16.json" 2>&1 | tee "$out/bench_$3_bf16.txt"
  python benchmarks/memory.py --device cuda --dtype bfloat16 --n "$1" --width "$2" --out "$out" 2>&1 | tee "$out/memory_$3.txt"
done
