"""Triton kernels against the reference, on CPU under TRITON_INTERPRET=1 (set in conftest) or on a GPU.

Every comparison gives the reference the kernel's own predictions, so loss and gradients are checked row
by row; the predictions themselves are checked against the shared Philox stream separately.
"""
import os
import subprocess
import sys

import pytest
import torch
from backend_check import _assert_same_or_near_tie

import tnops
from tnops import reference
from tnops.ops.config import head_config
from tnops.ops.mlm_head import mlm_head_backward, mlm_head_forward

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="Triton kernels need a GPU or TRITON_INTERPRET=1")


@pytest.fixture(autouse=True)
def _triton_backend(monkeypatch):
    monkeypatch.setenv("TNOPS_BACKEND", "triton")


@pytest.fixture(autouse=True)
def _poisoned_empty(monkeypatch):
    """torch.empty returns NaN (floats) or a sentinel (ints): any output a kernel forgets to write fails a test."""
    real_empty = torch.empty

    def poisoned(*size, dtype=None, **kwargs):
        out = real_empty(*size, dtype=dtype, **kwargs)
        if out.dtype.is_floating_point:
            return out.fill_(float("nan"))
        return out.fill_(True if out.dtype == torch.bool else 77)

    monkeypatch.setattr(torch, "empty", poisoned)


def ce_coef(c):
    """``mlm_head_backward``'s ``coef [3, N]`` for the plain CE weighted by ``c`` per row: α = γ = c, δ = 0."""
    return torch.stack([c, c, torch.zeros_like(c)])


def rel_err(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() if b.numel() else 0.0


def inputs(n, vocab, width, dtype=torch.float32, bias=True, every=3):
    g = torch.Generator().manual_seed(n * 7 + vocab)
    h = torch.randn(n, width, generator=g).to(DEVICE, dtype)
    w = (torch.randn(vocab, width, generator=g) * width**-0.5).to(DEVICE, dtype)
    b = (torch.randn(vocab, generator=g) * 0.1).to(DEVICE, dtype) if bias else None
    y = torch.randint(0, vocab, (n,), generator=g).to(DEVICE)
    y[::every] = -100
    return h, w, b, y


def compare(h, w, b, y, tol=1e-5, sr_embedding=None, **kw):
    """Fused vs fp64 reference with the fused predictions: loss, SR, corrected, every gradient."""
    leaves = [t for t in (h, w, b, sr_embedding) if t is not None]
    fused_in = [t.detach().requires_grad_() for t in leaves]  # detach keeps the strides; clone might not
    ref_in = [t.detach().double().requires_grad_() for t in leaves]

    def split(ts):
        it = iter(ts)
        return next(it), next(it), next(it) if b is not None else None, next(it) if sr_embedding is not None else None

    fh, fw, fb, fe = split(fused_in)
    out = tnops.linear_mlm_loss(fh, fw, y, bias=fb, sr_embedding=fe, **kw)
    rh, rw, rb, re = split(ref_in)
    ref = reference.linear_mlm_loss(rh, rw, y, bias=rb, sr_embedding=re, predictions=out.predictions,
                                    **{k: v for k, v in kw.items() if k not in ("prediction", "seed")})
    assert torch.equal(out.corrected.cpu(), ref.corrected.cpu())
    assert rel_err(out.loss, ref.loss) < tol and rel_err(out.sr_loss, ref.sr_loss) < tol
    up = torch.randn(ref.loss.shape, dtype=torch.float64, device=DEVICE)
    grads = torch.autograd.grad((out.loss * up.float()).sum(), fused_in)
    ref_grads = torch.autograd.grad((ref.loss * up).sum(), ref_in)
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) < tol
    return out, ref


def compare_with_config(h, w, b, y, cfg, prediction="sample", seed=0):
    """The launchers at the tiles ``cfg`` vs the fp64 reference: per-row NLL and every gradient (1e-5)."""
    out = mlm_head_forward(h, w, b, y, prediction=prediction, seed=seed, config=cfg)
    up = torch.rand(y.shape, device=DEVICE, dtype=torch.float64)
    coef = torch.where(y != -100, up.float(), 0.0)  # no synonym table: every masked row keeps its CE
    grads = mlm_head_backward(h, w, b, y, out["lse"], ce_coef(coef), gold_complement=out["gold_complement"],
                              config=cfg)
    exact = [t.detach().double().requires_grad_() for t in (h, w, b)]
    ref = reference.linear_mlm_loss(*exact[:2], y, bias=exact[2], predictions=out["predictions"], reduction="none")
    assert rel_err(out["nll"], ref.loss) < 1e-5
    for g, r in zip(grads, torch.autograd.grad((ref.loss * up).sum(), exact), strict=True):
        assert rel_err(g, r) < 1e-5
    return out["predictions"]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("prediction", ["argmax", "sample"])
@pytest.mark.parametrize("sr_weight", [0.0, 0.5])
def test_fused_head_fp32(make_table, bias, prediction, sr_weight):
    h, w, b, y = inputs(33, 300, 40, bias=bias)
    kw = {"prediction": prediction, "seed": 11, "sr_weight": sr_weight}
    first = tnops.linear_mlm_loss(h, w, y, bias=b, **kw)
    pairs = [(int(g), int(p)) for g, p in zip(y.cpu(), first.predictions.cpu()) if g >= 0 and g != p][::2]
    out, _ = compare(h, w, b, y, synonyms=make_table(pairs, 300), **kw)
    assert out.corrected.sum() == len(pairs)


def test_predictions_follow_the_shared_philox_stream():
    """The kernel predicts what the spec predicts from the same seed, row for row.  A row may differ only at a
    float32 near-tie (scores of the two ids within 1e-5): the kernel sums the logits in another order."""
    h, w, b, y = inputs(40, 257, 24)
    for kw in ({"prediction": "sample", "seed": 3}, {"prediction": "sample", "seed": 3, "temperature": 0.5},
               {"prediction": "sample", "seed": 4, "disallow_correct": True}, {"prediction": "argmax"}):
        fused = tnops.linear_mlm_loss(h, w, y, bias=b, **kw).predictions
        spec = reference.predict(torch.nn.functional.linear(h, w, b), y, **kw)
        assert torch.equal(fused == -100, y == -100)  # ignored rows, and only they, predict ignore_index
        _assert_same_or_near_tie(fused.cpu(), spec.cpu(), h.cpu(), w.cpu(), b.cpu(), y.cpu(), kw)


def test_argmax_ties_go_to_the_lowest_id():
    w = torch.zeros(200, 16, device=DEVICE)
    w[[7, 70, 150]] = 1.0  # three identical best rows
    h = torch.ones(5, 16, device=DEVICE)
    out = tnops.linear_mlm_loss(h, w, torch.zeros(5, dtype=torch.long, device=DEVICE))
    assert (out.predictions == 7).all()


@pytest.mark.parametrize("blocks", [(16, 64, 32, 1), (16, 32, 16, 3), (32, 128, 32, 2)])
def test_samples_do_not_depend_on_block_sizes_or_splits(blocks):
    h, w, b, y = inputs(40, 300, 40)
    bn, bv, be, splits = blocks
    base = mlm_head_forward(h, w, b, y, prediction="sample", seed=9,
                            config=head_config(40, 300, 40, block_n=16, block_v=64, block_e=32, splits=2))
    other = mlm_head_forward(h, w, b, y, prediction="sample", seed=9,
                             config=head_config(40, 300, 40, block_n=bn, block_v=bv, block_e=be, splits=splits))
    assert torch.equal(base["predictions"], other["predictions"])
    torch.testing.assert_close(base["lse"], other["lse"])


def test_sampling_chi_square():
    scipy_stats = pytest.importorskip("scipy.stats")
    vocab, draws = 8, 2000
    w = torch.eye(vocab, device=DEVICE)[:, :vocab] * 1.0
    z = torch.tensor([1.5, 0.5, 0.0, -0.5, 1.0, 0.2, -1.0, 0.8], device=DEVICE)
    h = z.expand(draws, -1).contiguous()
    w16 = torch.cat([w, torch.zeros(vocab, 8, device=DEVICE)], 1)
    h16 = torch.cat([h, torch.zeros(draws, 8, device=DEVICE)], 1)
    pred = tnops.linear_mlm_loss(h16, w16, torch.zeros(draws, dtype=torch.long, device=DEVICE),
                                 prediction="sample", seed=77).predictions
    counts = torch.bincount(pred.cpu(), minlength=vocab).double().numpy()
    expected = (torch.softmax(z.double().cpu(), 0) * draws).numpy()
    assert scipy_stats.chisquare(counts, expected).pvalue > 1e-3


def test_hand_made_table_and_all_ignored_rows(make_table):
    h, w, b, y = inputs(20, 100, 16)
    first = tnops.linear_mlm_loss(h, w, y, bias=b)
    table = make_table([(int(g), int(p)) for g, p in zip(y.cpu(), first.predictions.cpu()) if g >= 0], 100)
    out = tnops.linear_mlm_loss(h, w, y, bias=b, synonyms=table)
    assert torch.equal(out.corrected, (y != -100) & (first.predictions != y))
    none = torch.full_like(y, -100)
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    out = tnops.linear_mlm_loss(hh, ww, none, bias=b, sr_weight=1.0)
    out.loss.backward()
    assert out.loss.item() == 0.0 and hh.grad.abs().sum() == 0 and ww.grad.abs().sum() == 0


def test_large_vocabulary_non_contiguous_and_leading_shape():
    vocab, width = 30522, 32
    wide = (torch.randn(vocab, 2 * width, device=DEVICE) * width**-0.5)[:, ::2]  # strided weight
    b = torch.randn(vocab, device=DEVICE) * 0.1
    h = torch.randn(width, 2, 3, device=DEVICE).permute(1, 2, 0)  # [2, 3, E], non-contiguous
    y = torch.randint(0, vocab, (2, 3), device=DEVICE)
    y[0, 1] = -100
    assert not h.is_contiguous() and not wide.is_contiguous()
    out, _ = compare(h, wide, b, y, prediction="sample", seed=2, sr_weight=0.3)
    assert out.predictions.shape == (2, 3)


def test_separate_sr_table_and_reductions():
    h, w, b, y = inputs(24, 120, 16)
    emb = torch.randn(120, 8, device=DEVICE)
    for reduction in ("mean", "sum", "none"):
        compare(h, w, b, y, sr_embedding=emb, sr_weight=1.0, prediction="sample", seed=5, reduction=reduction)


# The interpreter computes float32 only (its bf16 tl.dot is broken upstream, triton-lang/triton#11584; the
# launchers refuse other dtypes there, tests/test_triton_inputs.py): half precision is checked on a GPU.
HALF_DTYPES = [torch.float16, torch.bfloat16] if DEVICE == "cuda" else []


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_precision_error_at_most_twice_eager(dtype):
    """Loss and every gradient: |fused - fp64| <= 2 |eager in dtype - fp64| + atol, with the fused predictions."""
    h, w, b, y = inputs(48, 500, 64, dtype=dtype)
    leaves = [t.detach().requires_grad_() for t in (h, w, b)]
    out = tnops.linear_mlm_loss(*leaves[:2], y, bias=leaves[2], prediction="sample", seed=3, sr_weight=0.5)
    grads = torch.autograd.grad(out.loss, leaves)
    exact = [t.detach().double().requires_grad_() for t in (h, w, b)]
    ref = reference.linear_mlm_loss(*exact[:2], y, bias=exact[2], predictions=out.predictions, sr_weight=0.5)
    ref_grads = torch.autograd.grad(ref.loss, exact)
    eager_in = [t.detach().requires_grad_() for t in (h, w, b)]
    eager = reference.linear_mlm_loss(*eager_in[:2], y, bias=eager_in[2], predictions=out.predictions, sr_weight=0.5)
    eager_grads = torch.autograd.grad(eager.loss, eager_in)
    atol = 1e-3
    assert abs(out.loss.item() - ref.loss.item()) <= 2 * abs(eager.loss.item() - ref.loss.item()) + atol
    for g, r, e in zip(grads, ref_grads, eager_grads):
        assert g.dtype == dtype
        assert (g.double() - r).abs().max() <= 2 * (e.double() - r).abs().max() + atol


def test_rtd_kernel_matches_reference():
    n = 3000
    x = torch.randn(n, device=DEVICE, requires_grad=True)
    corrupted = torch.randint(0, 4, (n,), device=DEVICE)
    original = torch.randint(0, 4, (n,), device=DEVICE)
    mask = torch.randint(0, 2, (n,), device=DEVICE)
    corrected = torch.rand(n, device=DEVICE) < 0.3
    for args in ((mask, corrected), (None, None), (mask, None)):
        fused = tnops.rtd_loss(x, corrupted, original, *args)
        ref = reference.rtd_loss(x, corrupted, original, *args)
        assert rel_err(fused, ref) < 1e-6
        assert rel_err(torch.autograd.grad(fused, x)[0], torch.autograd.grad(ref, x)[0]) < 1e-6


@pytest.mark.slow
def test_every_kernel_compiles_for_hopper():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "tnops.ops.compile_check", "--arch", "90", "--max-spill", "0"],
                         env=env, capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all kernels compiled for cuda:90" in run.stdout
    assert "wgmma" in run.stdout  # the half-precision dots really use Hopper's tensor-core instructions
    # the backward adds gradients with vectorised relaxed reductions, not fenced value-returning atomics
    assert all(" red.v" in line for line in run.stdout.splitlines()
               if line.startswith("ok    _mlm_bwd") and "logits" not in line)  # given logits: plain stores
    for kernel in ("_mlm_fwd_kernel", "_mlm_bwd_kernel"):  # the given-logits variants (mlm_loss) are built too
        assert all(f"ok    {kernel}[{dtype}, logits" in run.stdout for dtype in ("fp32", "bf16", "fp16"))
    assert " atom" not in run.stdout
    # ptxas reported registers for every kernel, and none spilled at the tiles head_config picks
    assert run.stdout.count("spill    0") == run.stdout.count("ok    ") > 0


def test_row_ids_split_invariance_in_the_kernel():
    h, w, b, y = inputs(40, 300, 16, every=2)
    whole = tnops.linear_mlm_loss(h, w, y, bias=b, prediction="sample", seed=6)
    ids = torch.arange(40, device=DEVICE)
    masked = y != -100
    compact = tnops.linear_mlm_loss(h[masked], w, y[masked], bias=b, prediction="sample", seed=6, row_ids=ids[masked])
    assert torch.equal(compact.predictions, whole.predictions[masked])


def test_xlmr_vocabulary_without_padding():
    """V = 250002 (XLM-R) is no multiple of any block: the ragged last tile is masked, nothing is padded."""
    vocab, width = 250002, 16
    h, w, b, _ = inputs(4, vocab, width)
    y = torch.tensor([vocab - 1, -100, 3, vocab - 2], device=DEVICE)  # gold ids inside the ragged tile
    w[vocab - 1] = h[0] * 2  # row 0's argmax is the very last id
    # Wide tiles keep the interpreter quick (tiling does not change results, tested above); a GPU, whose
    # shared memory could not hold them, uses its own tiles.
    cfg = head_config(4, vocab, width, block_n=16, block_v=8192, block_e=16, splits=3) if DEVICE == "cpu" else None
    pred = compare_with_config(h, w, b, y, cfg, prediction="argmax")
    assert pred[0].item() == vocab - 1 and pred[1].item() == -100


def test_sum_reduction_accumulates_like_one_batch_in_the_kernel(make_table):
    """Gradient accumulation on the fused path: Σ_micro sum-loss / global kept count = the big batch's mean."""
    h, w, b, y = inputs(40, 200, 16, every=4)
    kw = {"prediction": "sample", "seed": 8, "sr_weight": 0.5}
    first = tnops.linear_mlm_loss(h, w, y, bias=b, **kw)
    pairs = [(int(g), int(p)) for g, p in zip(y.cpu(), first.predictions.cpu()) if g >= 0 and g != p][::2]
    kw["synonyms"] = make_table(pairs, 200)
    w1 = w.clone().requires_grad_()
    big = tnops.linear_mlm_loss(h, w1, y, bias=b, **kw)
    big.mlm_loss.backward()
    assert big.corrected.any()
    kept = ((y != -100) & ~big.corrected).sum()
    w2 = w.clone().requires_grad_()
    ids = torch.arange(40, device=DEVICE)
    for s in (slice(0, 13), slice(13, 40)):
        part = tnops.linear_mlm_loss(h[s], w2, y[s], bias=b, reduction="sum", row_ids=ids[s], **kw)
        (part.mlm_loss / kept).backward()
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-5, atol=1e-7)


def test_head_config_rejects_a_block_v_philox_cannot_fill():
    with pytest.raises(ValueError, match="block_v: expected a multiple of 4"):
        head_config(8, 100, 16, block_v=30)
    cfg = head_config(8, 100, 16, block_n=16, block_v=64, block_e=32)
    # explicit tiles apply to the forward and backward kernels alike; K-steps never exceed the width's power of two
    tiles = (cfg.block_n, cfg.block_v, cfg.block_e)
    assert (cfg.bwd_block_n, cfg.bwd_block_v, cfg.bwd_block_e) == (16, 64, 16) == tiles


def test_backward_program_groups_cover_every_tile_once():
    """13 row blocks in groups of 8 (one ragged group) × 4 vocabulary tiles: every gradient tile written once."""
    h, w, b, y = inputs(200, 100, 16, every=5)
    cfg = head_config(200, 100, 16, block_n=16, block_v=32, block_e=16, splits=2)  # tl.dot needs M, N, K >= 16
    assert cfg.bwd_group_n == 8 and -(-200 // cfg.bwd_block_n) == 13
    compare_with_config(h, w, b, y, cfg, seed=4)


def test_unmasked_and_corrected_rows_cost_no_work(make_table):
    """18 masked rows scattered over 128: the kernels visit them first, so only ⌈18/16⌉ = 2 row blocks do
    work (8 if visited in place); in backward the 3 corrected rows drop out too: ⌈15/16⌉ = 1 block."""
    h, w, b, _ = inputs(128, 300, 16)
    y = torch.full((128,), -100, dtype=torch.long, device=DEVICE)
    masked_rows = torch.arange(3, 128, 7, device=DEVICE)  # 18 rows, in every row block
    y[masked_rows] = torch.randint(0, 300, (18,), device=DEVICE)
    cfg = head_config(128, 300, 16, block_n=16, block_v=32, block_e=16, splits=2)
    first = mlm_head_forward(h, w, b, y, prediction="sample", seed=5, config=cfg)
    wrong = [(int(y[r]), int(first["predictions"][r])) for r in masked_rows if y[r] != first["predictions"][r]]
    table = make_table(wrong[:3], 300)
    counter = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    out = mlm_head_forward(h, w, b, y, offsets=table.offsets.to(DEVICE), syn_ids=table.ids.to(DEVICE),
                           prediction="sample", seed=5, config=cfg, tile_counter=counter)
    assert counter.item() == 2 * 2  # 2 live row blocks × 2 vocabulary splits
    assert out["corrected"].sum().item() == 3 and torch.equal(out["predictions"], first["predictions"])
    coef = torch.where((y != -100) & ~out["corrected"], 1.0, 0.0)
    counter.zero_()
    dh, dw, db = mlm_head_backward(h, w, b, y, out["lse"], ce_coef(coef), config=cfg, tile_counter=counter)
    assert counter.item() == 1 * 10  # 1 live row block × ⌈300/32⌉ vocabulary tiles
    assert dh[coef == 0].abs().sum() == 0  # rows without a gradient get none
    exact = [t.detach().double().requires_grad_() for t in (h, w, b)]
    ref = reference.linear_mlm_loss(*exact[:2], y, bias=exact[2], predictions=out["predictions"], synonyms=table,
                                    reduction="sum")
    for g, r in zip((dh, dw, db), torch.autograd.grad(ref.loss, exact)):
        assert rel_err(g, r) < 1e-5


# ---------------------------------------------------------------- given logits: tnops.mlm_loss on the kernels
