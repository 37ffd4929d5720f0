"""Forward+backward time of the MLM loss, tnops against the eager reference and PyTorch's chunked peer.

    python -m pytest benchmarks/test_bench_mlm.py --benchmark-group-by=param:objective \
        --benchmark-json benchmarks/out/bench_mlm.json

Read the ratios inside one group (same shape, same run); absolute times depend on the machine.
Shape: ``BENCH_N`` × ``BENCH_V`` × ``BENCH_E`` and ``BENCH_DTYPE`` from the environment (default 1024 × 30522 ×
256, float32).  ELECTRA-small generator: N=2432 E=128; ELECTRA-base: N=20224 E=768 (bfloat16 on a GPU).
"""
import os

import pytest
import torch
import torch.nn.functional as F

import tnops
from tnops import reference

N = int(os.environ.get("BENCH_N", 1024))
V = int(os.environ.get("BENCH_V", 30522))
E = int(os.environ.get("BENCH_E", 256))
DTYPE = getattr(torch, os.environ.get("BENCH_DTYPE", "float32"))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(0)
    hidden = torch.randn(N, E, device=DEVICE, dtype=DTYPE, requires_grad=True)
    weight = (torch.randn(V, E, device=DEVICE) * E**-0.5).to(DTYPE).requires_grad_()
    bias = torch.zeros(V, device=DEVICE, dtype=DTYPE, requires_grad=True)
    labels = torch.randint(0, V, (N,), device=DEVICE)
    pairs = torch.randint(0, V, (2, 20 * V))
    table = tnops.SynonymTable.from_pairs(pairs[0], pairs[1], V).to(DEVICE)
    return hidden, weight, bias, labels, table


def _step(fn):
    def run():
        fn().backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
    return run


IMPLS = {
    "reference": lambda h, w, b, y, **kw: reference.linear_mlm_loss(h, w, y, bias=b, **kw).loss,
    "tnops": lambda h, w, b, y, **kw: tnops.linear_mlm_loss(h, w, y, bias=b, **kw).loss,
}


@pytest.mark.parametrize("objective", ["plain-ce", "true-negative"])
@pytest.mark.parametrize("impl", ["reference", "tnops", "torch-linear-ce"])
def test_mlm_fwd_bwd(benchmark, inputs, impl, objective):
    hidden, weight, bias, labels, table = inputs
    if impl == "torch-linear-ce":
        if objective != "plain-ce":
            pytest.skip("F.linear_cross_entropy has no hard correction, sampling or SR")
        fn = lambda: F.linear_cross_entropy(hidden, weight, labels, linear_bias=bias,
                                            options=torch.nn.LinearCrossEntropyOptions())
    else:
        kw = dict(synonyms=table, prediction="sample", seed=1, sr_weight=0.5) if objective == "true-negative" else {}
        fn = lambda: IMPLS[impl](hidden, weight, bias, labels, **kw)
    benchmark.extra_info.update(N=N, V=V, E=E, dtype=str(DTYPE), device=DEVICE)
    if DEVICE == "cuda":
        benchmark.extra_info["tflop"] = 6 * N * V * E / 1e12  # forward + backward matmuls of the LM head
    benchmark.pedantic(_step(fn), rounds=3, warmup_rounds=1)
