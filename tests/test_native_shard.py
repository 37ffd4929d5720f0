"""The native kernels on one block of the vocabulary (issue 19): what a rank of the vocabulary-parallel path runs.

``tnops::mlm_shard_stats_native`` gives a block's per-row partial statistics and the best (noisy) score's global id;
``tnops::mlm_head_native_backward`` with ``vocab_start``/``vocab_all`` the block's gradients under the global lse.
Checked here in one process, block by block, against the torch path of ``tnops.distributed`` (the sampled ids bit
for bit: Gumbel noise keyed by the global id, blocks starting anywhere, not only at multiples of 4) and float64
maths; the 2- and 3-rank runs of tests/test_distributed.py check the whole path with these kernels.
"""
import pytest
import torch

from tnops import backends, distributed_kernels
from tnops.distributed_kernels import block_statistics_torch as torch_stats
from tnops.options import MLMOptions

pytestmark = pytest.mark.skipif(backends.unavailable_reason("native") is not None,
                                reason=f"native backend: {backends.unavailable_reason('native')}")

V, N, E = 1100, 37, 16  # several 256-id noise blocks, so the pruned Gumbel-max path runs inside a block
BLOCKS = [(0, 1100), (301, 1003), (2, 259), (1000, 1100), (517, 518)]
OPTIONS = {
    "sample": MLMOptions(prediction="sample", seed=11, temperature=0.7),
    "argmax": MLMOptions(prediction="argmax"),
    "disallow": MLMOptions(prediction="sample", seed=5, disallow_correct=True),
}


def _inputs(confident=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(V, E, generator=g, dtype=torch.float64) * 0.5
    bias = torch.randn(V, generator=g, dtype=torch.float64) * 0.1
    labels = torch.randint(0, V, (N,), generator=g)
    labels[::5] = -100
    hidden = torch.randn(N, E, generator=g, dtype=torch.float64)
    if confident:  # a trained head: hidden ≈ c·W[gold], p(gold) → 1
        hidden = 6.0 * weight[labels.clamp(min=0)] + 0.01 * hidden
    return hidden.to(dtype), weight.to(dtype), bias.to(dtype), labels


def _stats(hidden, weight, bias, labels, options, block, keys):
    lo, hi = block
    w, b = (None, None) if weight is None else (weight[lo:hi], bias[lo:hi])
    return torch.ops.tnops.mlm_shard_stats_native(hidden, w, b, labels, keys, options.seed or 0,
                                                  options.prediction == "sample", options.temperature,
                                                  options.disallow_correct, -100, lo, V, 64)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b[0]}-{b[1]}")
@pytest.mark.parametrize("name", list(OPTIONS))
def test_block_statistics_match_the_torch_path(block, name):
    options = OPTIONS[name]
    hidden, weight, bias, labels = _inputs()
    keys = torch.arange(N) * 3 + 1
    stats, ids = _stats(hidden, weight, bias, labels, options, block, keys)
    lo, hi = block
    want_stats, want_ids = torch_stats(hidden, weight[lo:hi], bias[lo:hi], labels, keys, options,
                                                          options.seed or 0, lo, V)
    masked = labels != -100
    assert torch.equal(ids[masked], want_ids[masked])  # the same noise, the same winner, bit for bit
    assert ((ids[masked] >= lo) & (ids[masked] < hi)).all()
    ignored = torch.tensor([0.0, 0.0, 0.0, 0.0, float("-inf")], dtype=stats.dtype)[:, None]
    assert torch.equal(stats[:, ~masked], ignored.expand(5, int((~masked).sum()))) and (ids[~masked] == V).all()
    # float64: max, Σ_{v≠gold} exp(z − max), gold logit (0: another block's), Σ z, best score
    exact, _ = torch_stats(hidden.double(), weight[lo:hi].double(), bias[lo:hi].double(), labels,
                                              keys, options, options.seed or 0, lo, V)
    for k in range(4):
        torch.testing.assert_close(stats[k, masked].double(), exact[k, masked], rtol=1e-5,
                                   atol=1e-6 * exact[k, masked].abs().max().item())
    if name == "disallow":  # the gold id is never the winner where this block holds it
        assert not (ids[masked] == labels[masked]).any()


def test_given_logits_block():
    """``weight`` None: the inputs are this block's columns of the logits."""
    hidden, weight, bias, labels = _inputs()
    logits = torch.nn.functional.linear(hidden, weight, bias)
    options = OPTIONS["sample"]
    lo, hi = 301, 1003
    stats, ids = torch.ops.tnops.mlm_shard_stats_native(logits[:, lo:hi], None, None, labels, None, 11, True, 0.7,
                                                        False, -100, lo, V, 64)
    want_stats, want_ids = torch_stats(logits[:, lo:hi], None, None, labels, torch.arange(N),
                                                          options, 11, lo, V)
    masked = labels != -100
    assert torch.equal(ids[masked], want_ids[masked])
    torch.testing.assert_close(stats[:4, masked], want_stats[:4, masked], rtol=1e-5, atol=1e-4)


def _coefficients(labels):
    """Random per-row (α, γ, δ) float64 ``[3, N]``, α = γ on every third row, 0 on ignored rows."""
    n, g = labels.shape[0], torch.Generator().manual_seed(1)
    coef = torch.stack([torch.rand(n, generator=g, dtype=torch.float64) + 0.5, torch.ones(n, dtype=torch.float64),
                        torch.rand(n, generator=g, dtype=torch.float64) * 0.1]).to(labels.device)
    coef[0, 1::3] = coef[1, 1::3]  # α = γ: plain cross-entropy rows
    coef[:, labels == -100] = 0
    return coef


def _block_dz(z, labels, coef, block, vocab=V):
    """float64 dz [N, hi − lo] of a block: α·softmax over the whole row − γ·onehot(gold, where it is here) − δ/V,
    and the rows' global lse and 1 − p(gold)."""
    lse = torch.logsumexp(z, 1)
    p_other = torch.exp(z - lse[:, None]).scatter(1, labels.clamp(min=0)[:, None], 0.0).sum(1)
    lo, hi = block
    own = (labels >= lo) & (labels < hi)
    dz = coef[0, :, None] * torch.exp(z[:, lo:hi] - lse[:, None]) - (coef[2] / vocab)[:, None]
    # the gold entry α·p − γ as −α·(1 − p) + (α − γ): float64 itself would cancel on confident rows
    alpha, gamma, delta = coef[:, own]
    dz[own, labels[own] - lo] = -alpha * p_other[own] + (alpha - gamma) - delta / vocab
    dz[labels == -100] = 0
    return dz, lse.float(), p_other.float()


@pytest.mark.parametrize("block", BLOCKS[1:4], ids=lambda b: f"{b[0]}-{b[1]}")
def test_block_backward_under_the_global_lse(block):
    """d hidden, d weight, d bias of one block of the head under the global lse, against float64."""
    hidden, weight, bias, labels = _inputs()
    coef = _coefficients(labels)
    z = torch.nn.functional.linear(hidden.double(), weight.double(), bias.double())
    dz, lse, p_other = _block_dz(z, labels, coef, block)
    lo, hi = block
    want = (dz @ weight[lo:hi].double(), dz.T @ hidden.double(), dz.sum(0))
    got = torch.ops.tnops.mlm_head_native_backward(hidden, weight[lo:hi], bias[lo:hi], labels, lse, coef.float(),
                                                   True, True, True, 64, p_other, lo, V)
    for name, a, b in zip(("d hidden", "d weight", "d bias"), got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5 * b.abs().max().item(), msg=name)


@pytest.mark.parametrize("block", BLOCKS[1:4], ids=lambda b: f"{b[0]}-{b[1]}")
def test_block_backward_on_confident_rows(block):
    """Given logits with p(gold) ≈ 1 − 1e-10: the gold entry of dz = −α·(1 − p) + (α − γ) comes from the row's
    1 − p(gold), each entry within 1e-5 of float64 (α·p − γ in float32 would be off by ~1e-7 ≫ 1e-10)."""
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, V, (N,), generator=g)
    labels[::5] = -100
    z = torch.randn(N, V, generator=g, dtype=torch.float64)
    z[torch.arange(N), labels.clamp(min=0)] += 30.0
    z = z.float().double()  # the float32 inputs, exactly
    coef = _coefficients(labels)
    coef[2] = 0  # no δ/V: it would dwarf the confident rows' 1e-10 entries
    dz, lse, p_other = _block_dz(z, labels, coef, block)
    lo, hi = block
    d_logits, _, _ = torch.ops.tnops.mlm_head_native_backward(z[:, lo:hi].float(), None, None, labels, lse,
                                                              coef.float(), True, False, False, 64, p_other, lo, V)
    torch.testing.assert_close(d_logits.double(), dz, rtol=1e-5, atol=1e-30)


def test_block_errors_are_named():
    hidden, weight, bias, labels = _inputs()
    w, b = weight[:300], bias[:300]
    with pytest.raises(ValueError, match=r"vocab_start: expected the block \[vocab_start, vocab_start \+ 300\) "
                                         r"inside \[0, 1100\)"):
        torch.ops.tnops.mlm_shard_stats_native(hidden, w, b, labels, None, 0, False, 1.0, False, -100, 900, V, 64)
    with pytest.raises(ValueError, match="vocab_start: expected the block"):
        torch.ops.tnops.mlm_shard_stats_native(hidden, w, b, labels, None, 0, False, 1.0, False, -100, -1, V, 64)
    with pytest.raises(ValueError, match="vocab_all: expected the whole vocabulary's size"):
        torch.ops.tnops.mlm_shard_stats_native(hidden, w, b, labels, None, 0, False, 1.0, False, -100, 0, 0, 64)
    bad = labels.clone()
    bad[1] = V
    with pytest.raises(ValueError, match=r"labels: expected ids in \[0, 1100\) or ignore_index=-100, found 1100"):
        torch.ops.tnops.mlm_shard_stats_native(hidden, w, b, bad, None, 0, False, 1.0, False, -100, 0, V, 64)
    with pytest.raises(ValueError, match=r"row_ids: expected values in \[0, 2\^32\)"):
        torch.ops.tnops.mlm_shard_stats_native(hidden, w, b, labels, torch.full((N,), 2**32), 0, True, 1.0, False,
                                               -100, 0, V, 64)
    lse, coef = torch.zeros(N), torch.ones(3, N)
    with pytest.raises(ValueError, match="shard_other: expected it exactly when vocab_all > 0"):
        torch.ops.tnops.mlm_head_native_backward(hidden, w, b, labels.clamp(min=0), lse, coef, True, True, True, 64,
                                                 None, 0, V)
    with pytest.raises(ValueError, match=r"shard_other: expected a CPU tensor \[37\]"):
        torch.ops.tnops.mlm_head_native_backward(hidden, w, b, labels.clamp(min=0), lse, coef, True, True, True, 64,
                                                 torch.zeros(3), 0, V)
    with pytest.raises(ValueError, match="vocab_start: expected 0 without vocab_all"):
        torch.ops.tnops.mlm_head_native_backward(hidden, w, b, labels.clamp(min=0), lse, coef, True, True, True, 64,
                                                 None, 5, 0)


def test_default_backend_of_the_vocabulary_parallel_path(monkeypatch):
    """On CPU the native kernels serve by default; a backend without block kernels is refused by name."""
    monkeypatch.delenv("TNOPS_BACKEND", raising=False)
    assert distributed_kernels.shard_backend(torch.device("cpu"), torch.float32, None) == "native"
    assert distributed_kernels.shard_backend(torch.device("cpu"), torch.float32, "torch") == "torch"
    with pytest.raises(ValueError, match=r"backend: a vocabulary-parallel loss \(process_group\) runs the kernels "
                                         r"of one of torch, native, triton; got 'reference'"):
        distributed_kernels.shard_backend(torch.device("cpu"), torch.float32, "reference")
    monkeypatch.setenv("TNOPS_BACKEND", "reference")
    with pytest.raises(ValueError, match="TNOPS_BACKEND: a vocabulary-parallel loss"):
        distributed_kernels.shard_backend(torch.device("cpu"), torch.float32, None)
