#!/usr/bin/env bash
# Everything a GPU session should run, results under ${RESULTS_DIR:-benchmarks/out} (and, with ARCHIVE=file.tgz,
# packed into one archive: the device tool brings back at most 8 files).  Runs from the checkout as it is
# (PYTHONPATH=., nothing installed: the device image has torch, triton, transformers and pytest-benchmark).
#
#   bash benchmarks/gpu_suite.sh tests   # Triton kernels compiled for real: fp32/bf16/fp16 tests, torch.compile
#   bash benchmarks/gpu_suite.sh bench   # the benchmark suite's GPU set (one command, < 10 minutes): shapes a_bert,
#                                        # b_xlmr, c_base, modernbert in bf16, a_bert in fp32; fwd+bwd, CE and TN;
#                                        # eager, torch.compile, F.linear_cross_entropy, Cut Cross-Entropy, Liger,
#                                        # tnops triton; then report.md and the plots
#   bash benchmarks/gpu_suite.sh         # both (may take longer than one 10-minute device command)
#
# Then paste the tables that benchmarks/report.py prints into benchmarks/RESULTS.md with the device and date.
# Cut Cross-Entropy and Liger-Kernel are skipped (with the reason) where they are not installed; on a machine without
# network, put their wheels in $PEER_WHEELS (default benchmarks/out/wheels: git-ignored, so carry it) and they are
# installed from there (pip download --no-deps cut-cross-entropy liger-kernel -d benchmarks/out/wheels).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${RESULTS_DIR:-benchmarks/out}
stage=${1:-all}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TNOPS_TEST_GPU=1
py=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; date -u +%F;
  $py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  $py -c "from tnops.ops.config import Target, tile_capability as t; g = Target.of(0); print(g, 'tiles of sm_%d' % t(g))"; } | tee "$out/device.txt"

if [ "$stage" = tests ] || [ "$stage" = all ]; then
  # The per-target compile checks are CI's stand-in for a GPU; here the kernels compile for real (at this GPU's
  # tiles, config.Target.of).  Their register/spill/shared-memory report under this Triton is still worth keeping.
  $py -m pytest -q -k "not compiles_for_hopper and not compiles_within_every_target" tests/test_ops_triton.py \
    tests/test_ops_triton_logits.py tests/test_triton_rows.py tests/test_triton_targets.py tests/test_triton_inputs.py \
    tests/test_triton_shard.py \
    tests/test_compile.py tests/test_backends.py tests/test_custom_ops.py tests/test_validation.py 2>&1 \
    | tee "$out/gpu_tests.txt"
  $py -m tnops.ops.compile_check --arch 75 80 86 89 90 2>&1 | grep -v -i warn | tee "$out/compile_check.txt"
fi

if [ "$stage" = bench ] || [ "$stage" = all ]; then
  wheels=${PEER_WHEELS:-benchmarks/out/wheels}
  if ls "$wheels"/*.whl >/dev/null 2>&1; then $py -m pip install -q --no-deps --no-index "$wheels"/*.whl || true; fi
  # Set-up (imports, compilation, the first checked call) runs 8 cases at once; the timed rounds one case at a
  # time, interleaved.  Two compile threads per process: 8 processes share the 16 cores.
  TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-2} $py -m pytest benchmarks -p no:cacheprovider -q -rs \
    --bench-device cuda --bench-shapes a_bert,b_xlmr,c_base,modernbert --bench-dtypes bf16,fp32 \
    --bench-providers floor,eager,compiled,linear_ce,cce,liger,tnops_triton -m "bf16 or a_bert" \
    --bench-setup-jobs 8 --bench-rounds 10 --bench-iterations 10 --bench-max-time 420 \
    --benchmark-json "$out/gpu.json" 2>&1 | tail -n 40 | tee "$out/bench.txt"
  $py benchmarks/report.py "$out/gpu.json" --out "$out" | tee "$out/report_gpu.md"
fi
[ -n "${ARCHIVE:-}" ] && tar czf "$ARCHIVE" -C "$out" .
exit 0
