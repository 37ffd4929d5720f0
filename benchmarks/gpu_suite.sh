#!/usr/bin/env bash
# Everything a GPU session should run, results under ${RESULTS_DIR:-benchmarks/out} (and, with ARCHIVE=file.tgz,
# packed into one archive: the device tool brings back at most 8 files).  Runs from the checkout as it is
# (PYTHONPATH=., nothing installed: the device image has torch, triton, transformers and pytest-benchmark).
#
#   bash benchmarks/gpu_suite.sh tests   # Triton kernels compiled for real: fp32/bf16/fp16 tests, torch.compile
#   bash benchmarks/gpu_suite.sh bench   # fwd+bwd timings and peak memory at the ELECTRA-small and -base shapes
#   bash benchmarks/gpu_suite.sh         # both (may take longer than one 10-minute device command)
#
# Then paste the tables that benchmarks/report.py prints into benchmarks/RESULTS.md with the device and date.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${RESULTS_DIR:-benchmarks/out}
stage=${1:-all}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TNOPS_TEST_GPU=1
py=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; date -u +%F;
  $py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } | tee "$out/device.txt"

if [ "$stage" = tests ] || [ "$stage" = all ]; then
  # The Hopper compile check is CI's stand-in for a GPU; here the kernels compile for real.  Its
  # register/spill report under this Triton is still worth keeping.
  $py -m pytest -q -k "not compiles_for_hopper" tests/test_ops_triton.py tests/test_triton_inputs.py tests/test_compile.py \
    tests/test_backends.py tests/test_custom_ops.py tests/test_validation.py 2>&1 | tee "$out/gpu_tests.txt"
  $py -m tnops.ops.compile_check 2>&1 | grep -v -i warn | tee "$out/compile_check.txt"
fi

if [ "$stage" = bench ] || [ "$stage" = all ]; then
  for shape in "2432 128 small" "20224 768 base"; do
    set -- $shape
    BENCH_N=$1 BENCH_E=$2 BENCH_DTYPE=bfloat16 $py -m pytest -q benchmarks/test_bench_mlm.py \
      --benchmark-json "$out/bench_$3_bf16.json" 2>&1 | tail -n 25 | tee "$out/bench_$3_bf16.txt"
    $py benchmarks/memory.py --device cuda --dtype bfloat16 --n "$1" --width "$2" --out "$out" 2>&1 \
      | tee "$out/memory_$3.txt"
  done
  $py benchmarks/report.py "$out" | tee "$out/report.md"
fi
[ -n "${ARCHIVE:-}" ] && tar czf "$ARCHIVE" -C "$out" .
exit 0
