"""The chunked torch backend against the eager reference: loss, predictions, corrected rows, every gradient."""
import itertools

import pytest
import torch

import tnops
from tnops import reference


def rel_err(actual, expected):
    """max |a - e| / max |e| in float64 (0 when both are all zero)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().clamp_min(1e-30)
    return ((actual - expected).abs().max() / scale).item() if expected.numel() else 0.0


def make_inputs(n, vocab, width, dtype, *, bias=True, masked_every=3, lead=None):
    hidden = torch.randn(n, width, dtype=dtype) if lead is None else torch.randn(*lead, width, dtype=dtype)
    weight = (torch.randn(vocab, width) * width**-0.5).to(dtype)
    b = (torch.randn(vocab) * 0.1).to(dtype) if bias else None
    labels = torch.randint(0, vocab, hidden.shape[:-1])
    flat = labels.view(-1)
    flat[::masked_every] = -100
    return hidden, weight, b, labels


def table_hitting_predictions(make_table, labels, predictions, vocab):
    """A table listing half of the mispredicted (gold, prediction) pairs, so hard correction really fires."""
    pairs = [(int(g), int(p)) for g, p in zip(labels.reshape(-1), predictions.reshape(-1)) if g >= 0 and g != p]
    return make_table(pairs[::2], vocab)


def run_both(hidden, weight, bias, labels, sr_embedding=None, **kw):
    """Grads of (fused output, reference output with the fused predictions), fp32 reference on up-cast inputs."""
    leaves = [t for t in (hidden, weight, bias, sr_embedding) if t is not None]
    fast_in = [t.detach().clone().requires_grad_() for t in leaves]
    ref_in = [t.detach().double().requires_grad_() for t in leaves]

    def unpack(ts):
        it = iter(ts)
        h, w = next(it), next(it)
        b = next(it) if bias is not None else None
        e = next(it) if sr_embedding is not None else None
        return h, w, b, e

    h, w, b, e = unpack(fast_in)
    out = tnops.linear_mlm_loss(h, w, labels, bias=b, sr_embedding=e, **kw)
    h, w, b, e = unpack(ref_in)
    ref = reference.linear_mlm_loss(h, w, labels, bias=b, sr_embedding=e, predictions=out.predictions,
                                    **{k: v for k, v in kw.items() if k not in ("prediction", "seed")})
    upstream = torch.randn_like(ref.loss)
    fast_grads = torch.autograd.grad((out.loss * upstream.to(out.loss.dtype)).sum(), fast_in, allow_unused=True)
    ref_grads = torch.autograd.grad((ref.loss * upstream).sum(), ref_in, allow_unused=True)
    return out, ref, fast_grads, ref_grads


GRID = list(itertools.product([True, False], [True, False], [0.0, 0.7], ["argmax", "sample"]))


@pytest.mark.parametrize("bias,hc,sr_weight,prediction", GRID)
def test_matches_reference_fp32(make_table, bias, hc, sr_weight, prediction):
    hidden, weight, b, labels = make_inputs(63, 1000, 32, torch.float32, bias=bias)
    kw = dict(prediction=prediction, seed=17, sr_weight=sr_weight)
    if hc:
        first = tnops.linear_mlm_loss(hidden, weight, labels, bias=b, **kw)
        kw["synonyms"] = table_hitting_predictions(make_table, labels, first.predictions, 1000)
    out, ref, grads, ref_grads = run_both(hidden, weight, b, labels, **kw)
    if hc:
        assert out.corrected.sum() > 0
    assert torch.equal(out.corrected, ref.corrected)
    assert rel_err(out.loss, ref.loss) < 1e-5 and rel_err(out.sr_loss, ref.sr_loss) < 1e-5
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) < 1e-5


def test_predictions_match_reference_exactly():
    hidden, weight, b, labels = make_inputs(63, 1000, 32, torch.float32)
    for prediction in ("argmax", "sample"):
        for disallow in (False, True):
            kw = dict(prediction=prediction, seed=3, disallow_correct=disallow)
            out = tnops.linear_mlm_loss(hidden, weight, labels, bias=b, **kw)
            ref = reference.linear_mlm_loss(hidden, weight, labels, bias=b, **kw)
            assert torch.equal(out.predictions, ref.predictions)
            assert (out.predictions[labels == -100] == -100).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("hc", [False, True])
def test_low_precision_error_at_most_twice_eager(make_table, dtype, hc):
    """Error vs the fp64 spec is at most 2x the error of the eager reference run in the same dtype (+ atol)."""
    hidden, weight, b, labels = make_inputs(63, 1000, 64, dtype)
    kw = dict(prediction="sample", seed=5, sr_weight=0.5)
    if hc:
        first = tnops.linear_mlm_loss(hidden, weight, labels, bias=b, **kw)
        kw["synonyms"] = table_hitting_predictions(make_table, labels, first.predictions, 1000)
    out, ref, grads, ref_grads = run_both(hidden, weight, b, labels, **kw)
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight, b)]
    eager = reference.linear_mlm_loss(*leaves[:2], labels, bias=leaves[2], predictions=out.predictions,
                                      **{k: v for k, v in kw.items() if k not in ("prediction", "seed")})
    upstream = torch.randn_like(ref.loss)
    torch.manual_seed(0)
    eager_grads = torch.autograd.grad((eager.loss * upstream.float()).sum(), leaves)
    atol = 1e-3
    assert abs(out.loss.item() - ref.loss.item()) <= 2 * abs(eager.loss.item() - ref.loss.item()) + atol
    for g, r, e in zip(grads, ref_grads, eager_grads):
        assert g.dtype == dtype
        assert (g.double() - r).abs().max() <= 2 * (e.double() - r).abs().max() + atol


@pytest.mark.parametrize("n,vocab", [(1, 1000), (63, 1000), (8, 30522), (5, 7)])
def test_odd_sizes(n, vocab):
    hidden, weight, b, labels = make_inputs(n, vocab, 24, torch.float32, masked_every=4)
    out, ref, grads, ref_grads = run_both(hidden, weight, b, labels, prediction="sample", seed=2, sr_weight=0.1)
    assert rel_err(out.loss, ref.loss) < 1e-5
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) < 1e-5


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions_and_leading_shape(reduction):
    hidden, weight, b, labels = make_inputs(0, 200, 16, torch.float32, lead=(3, 7))
    out, ref, grads, ref_grads = run_both(hidden, weight, b, labels, reduction=reduction, sr_weight=0.2)
    assert out.loss.shape == ref.loss.shape == ((3, 7) if reduction == "none" else ())
    assert out.predictions.shape == out.corrected.shape == (3, 7)
    assert rel_err(out.loss, ref.loss) < 1e-5
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) < 1e-5


def test_separate_sr_embedding_gets_its_gradient():
    hidden, weight, b, labels = make_inputs(40, 300, 16, torch.float32)
    table = torch.randn(300, 8)
    out, ref, grads, ref_grads = run_both(hidden, weight, b, labels, sr_embedding=table, sr_weight=1.0,
                                          prediction="sample", seed=9)
    assert grads[-1].abs().sum() > 0
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) < 1e-5


def test_all_rows_ignored_is_zero_without_nan():
    hidden, weight, b, _ = make_inputs(10, 50, 8, torch.float32)
    labels = torch.full((10,), -100)
    out, ref, grads, _ = run_both(hidden, weight, b, labels, sr_weight=1.0, prediction="sample", seed=0)
    assert out.loss.item() == 0.0 and not torch.isnan(out.loss)
    assert all(g.abs().sum() == 0 for g in grads)


def test_every_row_corrected_gives_zero_ce_but_sr_remains(make_table):
    hidden, weight, b, labels = make_inputs(12, 40, 8, torch.float32, masked_every=100)
    first = tnops.linear_mlm_loss(hidden, weight, labels, bias=b)
    pairs = [(int(g), int(p)) for g, p in zip(labels, first.predictions) if g != p]
    keep = labels != first.predictions
    out = tnops.linear_mlm_loss(hidden, weight, labels, bias=b, synonyms=make_table(pairs, 40), sr_weight=1.0)
    assert torch.equal(out.corrected, keep)
    if keep.all():
        assert out.mlm_loss.item() == 0.0
    assert out.sr_loss.item() > 0


def test_samples_do_not_depend_on_chunking(monkeypatch):
    hidden, weight, b, labels = make_inputs(50, 500, 16, torch.float32)
    outs = []
    for rows in ("1", "7", "64"):
        monkeypatch.setenv("TNOPS_CHUNK_ROWS", rows)
        outs.append(tnops.linear_mlm_loss(hidden, weight, labels, bias=b, prediction="sample", seed=4))
    assert all(torch.equal(o.predictions, outs[0].predictions) for o in outs)
    torch.testing.assert_close(outs[1].loss, outs[0].loss)


def test_same_seed_same_samples_and_manual_seed():
    hidden, weight, b, labels = make_inputs(30, 500, 16, torch.float32)
    run = lambda **kw: tnops.linear_mlm_loss(hidden, weight, labels, bias=b, prediction="sample", **kw).predictions
    assert torch.equal(run(seed=1), run(seed=1))
    assert not torch.equal(run(seed=1), run(seed=2))
    torch.manual_seed(3)
    a = run()
    torch.manual_seed(3)
    assert torch.equal(a, run())


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampling_chi_square_against_softmax(temperature):
    """Counts of Gumbel-max samples of one fixed row follow softmax(z / T) (fixed seed: deterministic)."""
    scipy_stats = pytest.importorskip("scipy.stats")
    z = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2])
    draws = 40_000
    logits = z.expand(draws, -1).contiguous()
    labels = torch.zeros(draws, dtype=torch.long)
    pred = tnops.mlm_loss(logits, labels, prediction="sample", temperature=temperature, seed=1234).predictions
    counts = torch.bincount(pred, minlength=z.numel()).double()
    expected = torch.softmax(z.double() / temperature, 0) * draws
    assert scipy_stats.chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3
    wrong = torch.softmax(z.double() / (temperature + 1.0), 0) * draws  # the test can tell a wrong temperature
    assert scipy_stats.chisquare(counts.numpy(), wrong.numpy()).pvalue < 1e-6


def test_mlm_loss_on_logits_matches_reference(make_table):
    logits = torch.randn(4, 9, 300, requires_grad=True)
    labels = torch.randint(0, 300, (4, 9))
    labels[:, ::2] = -100
    emb = torch.randn(300, 12, requires_grad=True)
    kw = dict(prediction="sample", seed=8, sr_weight=0.4, sr_embedding=emb)
    first = tnops.mlm_loss(logits, labels, **kw)
    kw["synonyms"] = table_hitting_predictions(make_table, labels, first.predictions, 300)
    out = tnops.mlm_loss(logits, labels, **kw)
    ref = reference.mlm_loss(logits, labels, **kw)
    assert torch.equal(out.predictions, ref.predictions) and torch.equal(out.corrected, ref.corrected)
    assert out.corrected.any()
    g = torch.autograd.grad(out.loss, (logits, emb))
    r = torch.autograd.grad(ref.loss, (logits, emb))
    for a, b in zip(g, r):
        assert rel_err(a, b) < 1e-5


def test_reference_backend_via_environment(monkeypatch):
    hidden, weight, b, labels = make_inputs(20, 100, 8, torch.float32)
    monkeypatch.setenv("TNOPS_BACKEND", "reference")
    a = tnops.linear_mlm_loss(hidden, weight, labels, bias=b)
    monkeypatch.setenv("TNOPS_BACKEND", "torch")
    c = tnops.linear_mlm_loss(hidden, weight, labels, bias=b)
    torch.testing.assert_close(a.loss, c.loss)


def test_row_ids_make_split_batches_draw_like_one_batch():
    """Two halves keyed by their global row ids sample exactly what the whole batch samples."""
    hidden, weight, b, labels = make_inputs(40, 300, 16, torch.float32, masked_every=2)
    whole = tnops.linear_mlm_loss(hidden, weight, labels, bias=b, prediction="sample", seed=6)
    ids = torch.arange(40)
    halves = [tnops.linear_mlm_loss(hidden[s], weight, labels[s], bias=b, prediction="sample", seed=6, row_ids=ids[s])
              for s in (slice(0, 17), slice(17, 40))]
    assert torch.equal(torch.cat([h.predictions for h in halves]), whole.predictions)
    masked = labels != -100  # compacting to masked rows keeps the draws too
    compact = tnops.linear_mlm_loss(hidden[masked], weight, labels[masked], bias=b, prediction="sample", seed=6,
                                    row_ids=ids[masked])
    assert torch.equal(compact.predictions, whole.predictions[masked])


def test_sum_reduction_with_global_normaliser_equals_one_big_batch(make_table):
    """Gradient accumulation: Σ_micro sum-loss / global kept count gives the big batch's mean gradients."""
    hidden, weight, b, labels = make_inputs(48, 200, 16, torch.float32)
    kw = dict(prediction="sample", seed=2)
    first = tnops.linear_mlm_loss(hidden, weight, labels, bias=b, **kw)
    kw["synonyms"] = table_hitting_predictions(make_table, labels, first.predictions, 200)
    w1 = weight.clone().requires_grad_()
    big = tnops.linear_mlm_loss(hidden, w1, labels, bias=b, **kw)
    big.loss.backward()
    kept = ((labels != -100) & ~big.corrected).sum()
    w2 = weight.clone().requires_grad_()
    ids = torch.arange(48)
    for s in (slice(0, 20), slice(20, 48)):
        part = tnops.linear_mlm_loss(hidden[s], w2, labels[s], bias=b, reduction="sum", row_ids=ids[s], **kw)
        (part.loss / kept).backward()
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-5, atol=1e-7)
