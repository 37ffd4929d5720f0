"""Forward+backward time of the MLM loss: tnops against eager PyTorch, the reference and PyTorch's chunked peer.

    python -m pytest benchmarks/test_bench_mlm.py --benchmark-group-by=param:objective \
        --benchmark-json benchmarks/out/bench_mlm.json

Read the ratios inside one group (same shape, same run); absolute times depend on the machine.
Shape: ``BENCH_N`` × ``BENCH_V`` × ``BENCH_E`` and ``BENCH_DTYPE`` from the environment (default 1024 × 30522 ×
256, float32).  ELECTRA-small generator: N=2432 E=128; ELECTRA-base: N=20224 E=768 (bfloat16 on a GPU).
The implementations are described in ``benchmarks/cases.py``.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import cases  # noqa: E402

N = int(os.environ.get("BENCH_N", 1024))
V = int(os.environ.get("BENCH_V", 30522))
E = int(os.environ.get("BENCH_E", 256))
DTYPE = getattr(torch, os.environ.get("BENCH_DTYPE", "float32"))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def inputs():
    return cases.make_inputs(N, V, E, DEVICE, DTYPE)


def _step(fn):
    def run():
        fn().backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
    return run


@pytest.mark.parametrize("objective", ["plain-ce", "true-negative"])
@pytest.mark.parametrize("impl", ["eager", "reference", "tnops", "torch-linear-ce"])
def test_mlm_fwd_bwd(benchmark, inputs, impl, objective):
    fn = cases.loss_fn(impl, objective == "true-negative", *inputs)
    if fn is None:
        pytest.skip(f"{impl} does not serve the {objective} case here")
    benchmark.extra_info.update(N=N, V=V, E=E, dtype=str(DTYPE), device=DEVICE)
    # forward + backward matmuls of the LM head (the fused path recomputes the logits once more)
    benchmark.extra_info["tflop"] = 6 * N * V * E / 1e12
    benchmark.pedantic(_step(fn), rounds=5 if DEVICE == "cuda" else 3, warmup_rounds=1)
