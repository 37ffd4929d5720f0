"""The Triton kernels on one block of the vocabulary (issue 19): what a CUDA rank of the vocabulary-parallel path runs.

``tnops.ops.vocab_block.block_statistics`` (the forward kernel with ``SHARDED``: noise keyed by the global id wherever
the block starts) and ``mlm_head_backward(..., v_offset=, vocab_all=)``, checked block by block against the torch
path of ``tnops.distributed`` (sampled ids bit for bit) and float64 maths, under TRITON_INTERPRET=1 (conftest) at
tiny shapes with tiles small enough for several vocabulary tiles and splits.
"""
import pytest
import torch
from test_native_shard import OPTIONS, _block_dz, _coefficients
from test_ops_triton import DEVICE, pytestmark  # noqa: F401 (skips without a GPU or the interpreter)

from tnops.distributed_kernels import block_statistics_torch as torch_stats
from tnops.ops.config import head_config
from tnops.ops.mlm_head import mlm_head_backward
from tnops.ops.vocab_block import block_statistics

V, N, E = 300, 21, 16
BLOCKS = [(0, 300), (45, 230), (2, 131), (131, 300)]  # blocks starting at ids that are no multiple of 4 or 32


def _config(width=E):
    return head_config(N, V, width, block_n=16, block_v=32, block_e=16, splits=3)


def _inputs():
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(V, E, generator=g) * 0.5
    bias = torch.randn(V, generator=g) * 0.1
    labels = torch.randint(0, V, (N,), generator=g)
    labels[::5] = -100
    return tuple(t.to(DEVICE) for t in (torch.randn(N, E, generator=g), weight, bias, labels))


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b[0]}-{b[1]}")
@pytest.mark.parametrize("name", list(OPTIONS))
def test_block_statistics_match_the_torch_path(block, name):
    options = OPTIONS[name]
    hidden, weight, bias, labels = _inputs()
    keys = torch.arange(N, device=DEVICE) * 3 + 1
    lo, hi = block
    stats, ids = block_statistics(hidden, weight[lo:hi], bias[lo:hi], labels, v_offset=lo, vocab_all=V,
                                  prediction=options.prediction, temperature=options.temperature,
                                  disallow_correct=options.disallow_correct, seed=options.seed or 0, row_ids=keys,
                                  config=_config())
    want_stats, want_ids = torch_stats(hidden, weight[lo:hi], bias[lo:hi], labels, keys, options,
                                                          options.seed or 0, lo, V)
    masked = labels != -100
    assert torch.equal(ids[masked], want_ids[masked])  # the same noise, the same winner, bit for bit
    exact, _ = torch_stats(hidden.double(), weight[lo:hi].double(), bias[lo:hi].double(), labels,
                                              keys, options, options.seed or 0, lo, V)
    for k in range(4):  # max, Σ_{v≠gold} exp(z − max), gold logit (0: another block's), Σ z
        torch.testing.assert_close(stats[k, masked].double(), exact[k, masked], rtol=1e-5,
                                   atol=1e-6 * exact[k, masked].abs().max().item())
    assert (ids[~masked] == V).all()
    ignored = torch.tensor([0.0, 0.0, 0.0, 0.0, float("-inf")], device=stats.device)[:, None]
    assert torch.equal(stats[:, ~masked], ignored.expand(5, int((~masked).sum())))  # the native op's layout


def test_given_logits_block():
    hidden, weight, bias, labels = _inputs()
    logits = torch.nn.functional.linear(hidden, weight, bias)
    options = OPTIONS["sample"]
    lo, hi = 45, 230
    stats, ids = block_statistics(logits[:, lo:hi], None, None, labels, v_offset=lo, vocab_all=V, prediction="sample",
                                  temperature=options.temperature, seed=options.seed, config=_config())
    want_stats, want_ids = torch_stats(logits[:, lo:hi], None, None, labels,
                                                          torch.arange(N, device=DEVICE),
                                                          options, options.seed, lo, V)
    masked = labels != -100
    assert torch.equal(ids[masked], want_ids[masked])
    torch.testing.assert_close(stats[:4, masked], want_stats[:4, masked], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("block", BLOCKS[1:], ids=lambda b: f"{b[0]}-{b[1]}")
def test_block_backward_under_the_global_lse(block):
    hidden, weight, bias, labels = _inputs()
    coef = _coefficients(labels).to(DEVICE)
    z = torch.nn.functional.linear(hidden.double(), weight.double(), bias.double())
    dz, lse, p_other = _block_dz(z, labels, coef, block, V)
    lo, hi = block
    want = (dz @ weight[lo:hi].double(), dz.T @ hidden.double(), dz.sum(0))
    got = mlm_head_backward(hidden, weight[lo:hi], bias[lo:hi], labels, lse, coef.float(), gold_complement=p_other,
                            config=_config(), v_offset=lo, vocab_all=V)
    for name, a, b in zip(("d hidden", "d weight", "d bias"), got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5 * b.abs().max().item(), msg=name)


def test_block_backward_on_confident_rows():
    """Given logits with p(gold) ≈ 1 − 1e-10: the gold entry comes from the row's 1 − p(gold)."""
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, V, (N,), generator=g)
    labels[::5] = -100
    z = torch.randn(N, V, generator=g, dtype=torch.float64)
    z[torch.arange(N), labels.clamp(min=0)] += 30.0
    z, labels = z.float().double().to(DEVICE), labels.to(DEVICE)
    coef = _coefficients(labels).to(DEVICE)
    coef[2] = 0
    lo, hi = 45, 230
    dz, lse, p_other = _block_dz(z, labels, coef, (lo, hi), V)
    d_logits, _, _ = mlm_head_backward(z[:, lo:hi].float(), None, None, labels, lse, coef.float(),
                                       gold_complement=p_other, config=_config(), v_offset=lo, vocab_all=V)
    torch.testing.assert_close(d_logits.double(), dz, rtol=1e-5, atol=1e-30)


def test_block_errors_are_named():
    hidden, weight, bias, labels = _inputs()
    with pytest.raises(ValueError, match=r"v_offset: expected the block \[v_offset, v_offset \+ 100\) inside "
                                         r"\[0, 300\)"):
        block_statistics(hidden, weight[:100], bias[:100], labels, v_offset=250, vocab_all=V, config=_config())
    bad = labels.clone()
    bad[1] = V
    with pytest.raises(ValueError, match=r"labels: expected ids in \[0, 300\) or ignore_index=-100"):
        block_statistics(hidden, weight[:100], bias[:100], bad, v_offset=0, vocab_all=V, config=_config())
    lse, coef = torch.zeros(N, device=DEVICE), torch.ones(3, N, device=DEVICE)
    with pytest.raises(ValueError, match=r"labels: expected ids in \[0, 300\)"):
        mlm_head_backward(hidden, weight[:100], bias[:100], bad.clamp(min=0), lse, coef, config=_config(),
                          v_offset=0, vocab_all=V)
