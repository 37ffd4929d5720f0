"""The shared backend matrix: every available backend against the float64 reference (tests/backend_check.py).

Backend-specific behaviour (Triton tiles and tile counters, the compile check, chunk sizes of the torch
path) lives in the backend's own test file; everything a user can observe is checked here, once, for all.
"""
import pytest
import torch
from backend_check import check_backend, confident_inputs, make_inputs, rel_err, table_hitting_predictions

import tnops
from tnops import backends, reference

BACKENDS = backends.available_backends()
# Half precision: the torch and native backends; Triton only on a GPU (the interpreter computes float32 only).
HALF = [b for b in BACKENDS if b in ("torch", "native") or (b == "triton" and torch.cuda.is_available())]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hc", [True, False])
@pytest.mark.parametrize("sr_weight", [0.0, 0.7])
@pytest.mark.parametrize("prediction", ["argmax", "sample"])
def test_fp32_matches_reference(backend, make_table, bias, hc, sr_weight, prediction):
    hidden, weight, b, labels = make_inputs(63, 1000, 32, bias=bias)
    kw = dict(prediction=prediction, seed=17, sr_weight=sr_weight)
    if hc:
        first = tnops.linear_mlm_loss(hidden, weight, labels, bias=b, backend=backend, **kw)
        kw["synonyms"] = table_hitting_predictions(make_table, labels, first.predictions, 1000)
    out, _ = check_backend(backend, hidden, weight, b, labels, **kw)
    assert out.corrected.any() == hc


def test_fp64_matches_reference(backend):
    if backends.get(backend).refuses(torch.device("cpu"), torch.float64):
        pytest.skip(f"{backend} refuses float64 on this device")
    hidden, weight, b, labels = make_inputs(40, 300, 16, torch.float64)
    check_backend(backend, hidden, weight, b, labels, prediction="sample", seed=5, sr_weight=0.3)


@pytest.mark.parametrize("disallow", [False, True])
@pytest.mark.parametrize("prediction", ["argmax", "sample"])
def test_predictions_and_disallow_correct(backend, prediction, disallow):
    hidden, weight, b, labels = make_inputs(63, 1000, 32)
    out, _ = check_backend(backend, hidden, weight, b, labels, prediction=prediction, seed=3,
                           disallow_correct=disallow)
    assert (out.predictions[labels == -100] == -100).all()
    if disallow:
        assert (out.predictions != labels)[labels != -100].all()


@pytest.mark.parametrize("backend_name", HALF)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("hc", [False, True])
def test_half_precision_error_at_most_twice_plain_pytorch(backend_name, make_table, dtype, hc):
    hidden, weight, b, labels = make_inputs(63, 1000, 64, dtype)
    kw = dict(prediction="sample", seed=5, sr_weight=0.5)
    if hc:
        first = tnops.linear_mlm_loss(hidden, weight, labels, bias=b, backend=backend_name, **kw)
        kw["synonyms"] = table_hitting_predictions(make_table, labels, first.predictions, 1000)
    _, grads = check_backend(backend_name, hidden, weight, b, labels, **kw)
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("backend_name", HALF)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sr_weight", [0.0, 0.5])
def test_half_precision_confident_head(backend_name, dtype, sr_weight):
    """A trained head (hidden ≈ c·W[gold], p(gold) → 1): the gradients are tiny differences of large terms, and a
    kernel that rounds (e/s)·W and W[gold] to half before subtracting them is far off plain PyTorch."""
    hidden, weight, b, labels = confident_inputs(63, 1000, 64, dtype)
    out, grads = check_backend(backend_name, hidden, weight, b, labels, prediction="sample", seed=5,
                               sr_weight=sr_weight)
    assert out.mlm_loss.item() < 1e-3  # the head really is confident


@pytest.mark.parametrize("sr_weight", [0.0, 0.5])
@pytest.mark.parametrize("prediction", ["argmax", "sample"])
def test_fp32_confident_head_matches_reference(backend, sr_weight, prediction):
    """fp32 within 1e-5 relative on a trained head too (p(gold) → 1, CE per row 1e-5 … 1e-20): the CE of a row and
    the gold entry of its gradient are computed without subtracting near-equal numbers (lse − z_gold, p − 1)."""
    if backend == "reference":
        pytest.skip("the reference backend is plain eager PyTorch (F.cross_entropy) in the inputs' precision: "
                    "it cancels as PyTorch does; the spec is held to float64")
    hidden, weight, b, labels = confident_inputs(63, 1000, 64, torch.float32)
    out, _ = check_backend(backend, hidden, weight, b, labels, prediction=prediction, seed=5, sr_weight=sr_weight)
    assert out.mlm_loss.item() < 1e-3  # the head really is confident


@pytest.mark.parametrize("n,vocab", [(1, 1000), (63, 1000), (8, 30522), (5, 7)])
def test_odd_sizes(backend, n, vocab):
    hidden, weight, b, labels = make_inputs(n, vocab, 24, masked_every=4)
    check_backend(backend, hidden, weight, b, labels, prediction="sample", seed=2, sr_weight=0.1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions_and_leading_shape(backend, reduction):
    hidden, weight, b, labels = make_inputs(0, 200, 16, lead=(3, 7))
    out, _ = check_backend(backend, hidden, weight, b, labels, reduction=reduction, sr_weight=0.2)
    assert out.loss.shape == ((3, 7) if reduction == "none" else ())
    assert out.predictions.shape == out.corrected.shape == (3, 7)


def test_separate_sr_embedding_gets_its_gradient(backend):
    hidden, weight, b, labels = make_inputs(40, 300, 16)
    _, grads = check_backend(backend, hidden, weight, b, labels, sr_embedding=torch.randn(300, 8), sr_weight=1.0,
                             prediction="sample", seed=9)
    assert grads[-1].abs().sum() > 0


def test_all_rows_ignored_is_zero_without_nan(backend):
    hidden, weight, b, _ = make_inputs(10, 50, 8)
    labels = torch.full((10,), -100)
    out, grads = check_backend(backend, hidden, weight, b, labels, sr_weight=1.0, prediction="sample", seed=0)
    assert out.loss.item() == 0.0
    assert all(g.abs().sum() == 0 for g in grads)


def test_every_row_corrected_gives_zero_ce_but_sr_remains(backend, make_table):
    hidden, weight, b, labels = make_inputs(12, 40, 8, masked_every=10**6)
    labels[0] = 1  # make_inputs ignores row 0; every row is masked here
    first = tnops.linear_mlm_loss(hidden, weight, labels, bias=b, backend=backend)
    wrong = labels != first.predictions
    labels = torch.where(wrong, labels, (first.predictions + 1) % 40)  # every prediction is now wrong
    pairs = list(zip(labels.tolist(), first.predictions.tolist()))
    out, grads = check_backend(backend, hidden, weight, b, labels, synonyms=make_table(pairs, 40), sr_weight=1.0)
    assert out.corrected.all()
    assert out.mlm_loss.item() == 0.0 and out.sr_loss.item() > 0
    assert grads[2].abs().sum() == 0  # the bias sees only CE, and no row is kept


@pytest.mark.parametrize("where", ["first", "middle", "last", "absent"])
def test_long_csr_rows(backend, where):
    """Rows of thousands of synonyms: the prediction first, in the middle, last in the row, or not listed."""
    vocab = 5000
    hidden, weight, b, labels = make_inputs(6, vocab, 16, masked_every=10**6)
    labels[0] = 7
    pred = tnops.linear_mlm_loss(hidden, weight, labels, bias=b, backend=backend).predictions
    labels = torch.where(labels == pred, (pred + 1) % vocab, labels)
    pairs = []
    for gold, p in zip(labels.tolist(), pred.tolist()):
        others = [v for v in range(vocab) if v not in (gold, p)][:3000]
        listed = {"first": [p] + others, "middle": others[:1500] + [p] + others[1500:],
                  "last": others + [p], "absent": others}[where]
        pairs += [(gold, v) for v in listed]
    table = tnops.SynonymTable.from_pairs(torch.tensor([g for g, _ in pairs]), torch.tensor([v for _, v in pairs]),
                                          vocab)
    row_lengths = table.offsets.diff()[labels]
    assert (row_lengths >= 3000).all()
    out, _ = check_backend(backend, hidden, weight, b, labels, synonyms=table)
    assert bool(out.corrected.all()) == (where != "absent") and bool(out.corrected.any()) == (where != "absent")


def test_mlm_loss_on_logits_matches_reference(backend, make_table):
    logits = torch.randn(4, 9, 300, requires_grad=True)
    labels = torch.randint(0, 300, (4, 9))
    labels[:, ::2] = -100
    emb = torch.randn(300, 12, requires_grad=True)
    kw = dict(prediction="sample", seed=8, sr_weight=0.4, sr_embedding=emb)
    first = tnops.mlm_loss(logits, labels, backend=backend, **kw)
    kw["synonyms"] = table_hitting_predictions(make_table, labels, first.predictions, 300)
    out = tnops.mlm_loss(logits, labels, backend=backend, **kw)
    ref = reference.mlm_loss(logits, labels, **kw)
    assert torch.equal(out.predictions, ref.predictions) and torch.equal(out.corrected, ref.corrected)
    assert out.corrected.any()
    for a, r in zip(torch.autograd.grad(out.loss, (logits, emb)), torch.autograd.grad(ref.loss, (logits, emb))):
        assert rel_err(a, r) < 1e-5


def test_same_seed_same_samples_and_manual_seed(backend):
    hidden, weight, b, labels = make_inputs(30, 500, 16)
    run = lambda **kw: tnops.linear_mlm_loss(hidden, weight, labels, bias=b, prediction="sample",  # noqa: E731
                                             backend=backend, **kw).predictions
    assert torch.equal(run(seed=1), run(seed=1))
    assert not torch.equal(run(seed=1), run(seed=2))
    torch.manual_seed(3)
    a = run()
    torch.manual_seed(3)
    assert torch.equal(a, run())


def test_samples_are_bit_identical_across_cpu_backends():
    """Same seed and row ids: every CPU backend draws the same samples (Triton: float32 near-ties aside,
    which check_backend allows and this shape does not produce)."""
    hidden, weight, b, labels = make_inputs(63, 1000, 32)
    rows = torch.randint(0, 2**32, (63,))
    draws = {name: tnops.linear_mlm_loss(hidden, weight, labels, bias=b, prediction="sample", seed=2**63 + 5,
                                         row_ids=rows, backend=name).predictions for name in BACKENDS}
    first = next(iter(draws.values()))
    assert all(torch.equal(d, first) for d in draws.values()), {k: (v != first).sum() for k, v in draws.items()}


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampling_chi_square_against_softmax(backend, temperature):
    """Counts of Gumbel-max samples of one fixed row follow softmax(z / T) (fixed seed: deterministic).

    Triton runs under the CPU interpreter here (27 s for 20,000 rows), so it draws the first 2,000 rows only and
    must match the reference backend's draws on them bit for bit: with the reference passing the full test, the
    Triton samples then follow the same distribution."""
    scipy_stats = pytest.importorskip("scipy.stats")
    z = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2])

    def draw(n, name):  # hidden rows z through an identity head: every row's logits are z; row ids 0..n-1
        return tnops.linear_mlm_loss(z.expand(n, -1), torch.eye(8), torch.zeros(n, dtype=torch.long),
                                     prediction="sample", temperature=temperature, seed=1234,
                                     backend=name).predictions

    draws = 2_000 if backend == "triton" else 20_000
    pred = draw(draws, backend)
    if backend == "triton":
        assert torch.equal(pred.cpu(), draw(draws, "reference"))
    counts = torch.bincount(pred.cpu(), minlength=z.numel()).double()
    expected = torch.softmax(z.double() / temperature, 0) * draws
    assert scipy_stats.chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3
    if backend != "triton":  # the test can tell a wrong temperature (2,000 draws are too few for p < 1e-6)
        wrong = torch.softmax(z.double() / (temperature + 1.0), 0) * draws
        assert scipy_stats.chisquare(counts.numpy(), wrong.numpy()).pvalue < 1e-6


def test_row_ids_make_split_batches_draw_like_one_batch(backend):
    """Two halves keyed by their global row ids sample exactly what the whole batch samples."""
    hidden, weight, b, labels = make_inputs(40, 300, 16, masked_every=2)
    run = lambda h, y, **kw: tnops.linear_mlm_loss(h, weight, y, bias=b, prediction="sample", seed=6,  # noqa: E731
                                                   backend=backend, **kw)
    whole = run(hidden, labels)
    ids = torch.arange(40)
    halves = [run(hidden[s], labels[s], row_ids=ids[s]) for s in (slice(0, 17), slice(17, 40))]
    assert torch.equal(torch.cat([h.predictions for h in halves]), whole.predictions)
    masked = labels != -100  # compacting to masked rows keeps the draws too
    assert torch.equal(run(hidden[masked], labels[masked], row_ids=ids[masked]).predictions,
                       whole.predictions[masked])


def test_sum_reduction_with_global_normaliser_equals_one_big_batch(backend, make_table):
    """Gradient accumulation: Σ_micro sum-loss / global kept count gives the big batch's mean gradients."""
    hidden, weight, b, labels = make_inputs(48, 200, 16)
    kw = dict(prediction="sample", seed=2, backend=backend)
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


def test_rtd_loss_matches_reference(backend):
    logits = torch.randn(4, 33, requires_grad=True)
    original = torch.randint(0, 50, (4, 33))
    corrupted = torch.where(torch.rand(4, 33) < 0.3, torch.randint(0, 50, (4, 33)), original)
    mask = (torch.rand(4, 33) < 0.8).long()
    corrected = (torch.rand(4, 33) < 0.2) & (corrupted != original)
    for reduction in ("mean", "sum", "none"):
        got = tnops.rtd_loss(logits, corrupted, original, mask, corrected, reduction=reduction, backend=backend)
        want = reference.rtd_loss(logits.double(), corrupted, original, mask, corrected, reduction=reduction)
        assert rel_err(got, want) < 1e-6
        up = torch.randn(want.shape, dtype=torch.float64)
        (g,) = torch.autograd.grad((got * up.float()).sum(), logits)
        (r,) = torch.autograd.grad((want * up).sum(), logits)
        assert rel_err(g, r) < 1e-6
