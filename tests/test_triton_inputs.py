"""The Triton path with inputs of any layout, dtypes it cannot compute, and 64-bit seeds (issue 8).

Every input of every kernel is given strided, transposed (a column of a row-major buffer, for 1-D) and
expanded (stride 0); the result must equal that of the same values made contiguous and, for the head's
float operands, the fp64 reference given the kernel's own predictions.  Unused buffer elements hold NaN
(floats) or 0 (ints), so a kernel reading a strided tensor as contiguous sees wrong values.
"""
import numpy as np
import pytest
import torch
from test_ops_triton import (  # noqa: F401 (fixtures)
    DEVICE,
    _poisoned_empty,
    _triton_backend,
    compare,
    inputs,
    pytestmark,
    rel_err,
)

import tnops
from tnops import SynonymTable, backends
from tnops import random as tn_random
from tnops.ops import config, mlm_head_kernels, rtd_kernels, sr_kernels
from tnops.ops.mlm_head import mlm_head_backward, mlm_head_forward, sr_backward
from tnops.ops.rtd import rtd_forward

FORMS = ("strided", "transposed", "expanded")
INTERPRETER = DEVICE == "cpu"


def layout(t: torch.Tensor, form: str) -> torch.Tensor:
    """``t`` (1-D or 2-D) in another memory layout; ``expanded`` changes the values (stride 0 repeats one)."""
    poison = float("nan") if t.dtype.is_floating_point else 0
    if form == "expanded":
        return t[-1:].expand(t.shape) if t.dim() == 1 else t[:, -1:].expand(t.shape)  # 2-D: strides (E, 0)
    if t.dim() == 1:
        buf = t.new_full((t.shape[0], 3) if form == "transposed" else (2 * t.shape[0] + 1,), poison)
        view = buf[:, 1] if form == "transposed" else buf[1::2]  # strides 3 and 2 (the latter at offset 1)
    elif form == "strided":
        buf = t.new_full((t.shape[0], 2 * t.shape[1] + 1), poison)
        view = buf[:, 1::2]  # strides (2E + 1, 2), storage offset 1
    else:
        view = t.new_full((t.shape[1], t.shape[0]), poison).t()  # column-major: strides (1, N)
    view.copy_(t)
    assert not view.is_contiguous() and torch.equal(view, t)
    return view


# ---------------------------------------------------------------- the head's float operands, public API
def assert_same(got, want):
    for g, e in zip(got, want, strict=True):
        if g is None or not g.dtype.is_floating_point:
            assert g is e is None or torch.equal(g, e)
        else:
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)


def run_public(t, y, **kw):
    """``tnops.linear_mlm_loss`` per row, and the gradients of every float operand for one fixed upstream."""
    leaves = [t[k].detach().requires_grad_() for k in ("hidden", "weight", "bias", "sr_embedding")]
    out = tnops.linear_mlm_loss(leaves[0], leaves[1], y, bias=leaves[2], sr_embedding=leaves[3], reduction="none",
                                **kw)
    up = torch.linspace(0.5, 1.5, y.numel(), device=DEVICE)
    return (out.loss, out.predictions, out.corrected, *torch.autograd.grad((out.loss * up).sum(), leaves))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ["hidden", "weight", "bias", "sr_embedding"])
def test_float_operand_layouts_match_contiguous_and_reference(make_table, name, form):
    h, w, b, y = inputs(24, 100, 16)
    t = {"hidden": h, "weight": w, "bias": b, "sr_embedding": torch.randn(100, 8, device=DEVICE)}
    t[name] = layout(t[name], form)
    kw = {"prediction": "sample", "seed": 13, "sr_weight": 0.5}
    first = tnops.linear_mlm_loss(h, w, y, bias=b, **kw)
    pairs = [(int(g), int(p)) for g, p in zip(y.cpu(), first.predictions.cpu()) if g >= 0 and g != p][::2]
    kw["synonyms"] = make_table(pairs, 100)
    want = run_public(dict(t, **{name: t[name].contiguous()}), y, **kw)
    assert_same(run_public(t, y, **kw), want)
    assert want[2].any()
    if (name, form) != ("sr_embedding", "expanded"):  # that one's rows are all parallel: cos = ±1, no SR gradient
        compare(t["hidden"], t["weight"], t["bias"], y, sr_embedding=t["sr_embedding"], **kw)


def test_expanded_views_of_leaves_get_reduced_gradients():
    """Views that expand a parameter (``torch.zeros(1).expand(V)`` as bias, one hidden row for every row, one
    value per weight row): right loss, and autograd sums the kernels' dense gradients into the parameters."""
    g = torch.Generator().manual_seed(5)
    params = [torch.randn(16, generator=g), torch.randn(100, generator=g) * 0.3, torch.zeros(1)]
    y = torch.randint(0, 100, (24,), generator=g).to(DEVICE)
    y[::4] = -100

    def run(dtype, predictions=None):
        leaves = [p.to(DEVICE, dtype).requires_grad_() for p in params]
        h, w, b = leaves[0].expand(24, 16), leaves[1][:, None].expand(100, 16), leaves[2].expand(100)
        if predictions is None:
            out = tnops.linear_mlm_loss(h, w, y, bias=b, prediction="sample", seed=3, sr_weight=0.5)
        else:
            out = tnops.reference.linear_mlm_loss(h, w, y, bias=b, predictions=predictions, sr_weight=0.5)
        return out, torch.autograd.grad(out.loss, leaves)

    out, grads = run(torch.float32)
    ref, ref_grads = run(torch.float64, out.predictions)
    assert rel_err(out.loss, ref.loss) < 1e-5
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    assert torch.equal(params[2], torch.zeros(1))  # the kernels never write into an input


# ---------------------------------------------------------------- every input of the launchers
def head_inputs(make_table):
    """hidden, weight, bias, SR table, labels, row ids, CSR table (from a first pass), upstream gradients."""
    h, w, b, y = inputs(24, 100, 16)
    emb = torch.randn(100, 8, device=DEVICE)
    row_ids = torch.randperm(1000, device=DEVICE)[:24]
    first = mlm_head_forward(h, w, b, y, prediction="sample", seed=21, row_ids=row_ids)["predictions"]
    pairs = [(int(g), int(p)) for g, p in zip(y.cpu(), first.cpu()) if g >= 0 and g != p][::2]
    table = make_table(pairs, 100)
    return {"hidden": h, "weight": w, "bias": b, "sr_embedding": emb, "labels": y, "row_ids": row_ids,
            "offsets": table.offsets.to(DEVICE), "syn_ids": table.ids.to(DEVICE),
            "grad_ce": torch.rand(24, device=DEVICE), "grad_sr": torch.rand(24, device=DEVICE)}


def run_head(t):
    """``tnops.linear_mlm_loss`` per row (the eager route: ``tnops::mlm_head`` → triton backend → launchers), and
    the gradients of every float operand for the upstream gradients of CE and SR handed over as they are laid
    out.  The CSR tensors reach the launcher as given: a ``SynonymTable`` keeps its tensors' layout."""
    leaves = [t[k].detach().requires_grad_() for k in ("hidden", "weight", "bias", "sr_embedding")]
    out = tnops.linear_mlm_loss(leaves[0], leaves[1], t["labels"], bias=leaves[2], sr_embedding=leaves[3],
                                synonyms=SynonymTable(t["offsets"], t["syn_ids"]), row_ids=t["row_ids"],
                                prediction="sample", seed=21, sr_weight=0.5, reduction="none", backend="triton")
    grads = torch.autograd.grad((out.mlm_loss, out.sr_loss), leaves, grad_outputs=(t["grad_ce"], t["grad_sr"]))
    return (out.mlm_loss, out.sr_loss, out.predictions, out.corrected, *grads)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ["labels", "row_ids", "offsets", "syn_ids", "grad_ce", "grad_sr"])
def test_launcher_inputs_in_any_layout(make_table, name, form):
    """The public API with one input re-laid out == the same values made contiguous."""
    t = head_inputs(make_table)
    if form == "expanded" and name == "offsets":
        pytest.skip("CSR offsets are never constant (offsets[V] = nnz > 0)")
    if form == "expanded" and name == "syn_ids":  # a table whose rows all list the one id c: ids = [c] * nnz
        pred = run_head(t)[2]
        c = int(torch.mode(pred[t["labels"] >= 0]).values)
        table = make_table([(int(g), c) for g, p in zip(t["labels"].cpu(), pred.cpu()) if p == c], 100)
        t["offsets"], t["syn_ids"] = table.offsets.to(DEVICE), table.ids.to(DEVICE)
    t[name] = layout(t[name], form)
    want = run_head(dict(t, **{name: t[name].contiguous()}))
    assert_same(run_head(t), want)
    if form != "expanded" or name == "syn_ids":
        assert want[3].any()  # the table corrects some rows


@pytest.mark.parametrize("form", FORMS)
def test_backward_launchers_read_their_row_inputs_in_any_layout(make_table, form):
    """``mlm_head_backward`` (also the torch.compile route) and ``sr_backward``, each 1-D input re-laid out alone."""
    t = head_inputs(make_table)
    h, w, b, y, emb = (t[k] for k in ("hidden", "weight", "bias", "labels", "sr_embedding"))
    out = mlm_head_forward(h, w, b, y, offsets=t["offsets"], syn_ids=t["syn_ids"], sr_embedding=emb,
                           prediction="sample", seed=21)
    coef = torch.where((y != -100) & ~out["corrected"], torch.rand(3, 24, device=DEVICE), 0.0)  # α, γ, δ
    head = {"labels": y, "lse": out["lse"], "coef": coef, "gold_complement": out["gold_complement"]}
    # predictions are valid ids on every row, so any labels (e.g. all one valid id when expanded) stay in range
    sr = {"labels": y, "predictions": out["predictions"].clamp_min(0), "coef": torch.rand(24, device=DEVICE),
          "dot": out["sr_dot"], "gold_sq": out["sr_gold_sq"], "pred_sq": out["sr_pred_sq"]}
    launchers = ((lambda **kw: mlm_head_backward(h, w, b, **kw), head),
                 (lambda **kw: (sr_backward(emb, **kw),), sr))
    for fn, args in launchers:
        for key, value in args.items():
            laid = layout(value, form)
            assert_same(fn(**dict(args, **{key: laid})), fn(**dict(args, **{key: laid.contiguous()})))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ["logits", "corrupted", "original", "attention_mask", "corrected", "grad"])
def test_rtd_inputs_in_any_layout(name, form):
    n = 40
    t = {"logits": torch.randn(n, device=DEVICE), "corrupted": torch.randint(0, 3, (n,), device=DEVICE),
         "original": torch.randint(0, 3, (n,), device=DEVICE),
         "attention_mask": torch.randint(0, 2, (n,), device=DEVICE), "corrected": torch.rand(n, device=DEVICE) < 0.3,
         "grad": torch.rand(n, device=DEVICE)}
    t[name] = layout(t[name], form)

    def run(t):
        x = t["logits"].detach().requires_grad_()
        loss = tnops.rtd_loss(x, t["corrupted"], t["original"], t["attention_mask"], t["corrected"],
                              reduction="none", backend="triton")
        return loss, torch.autograd.grad(loss, x, t["grad"])[0]

    got, want = run(t), run({k: v.contiguous() for k, v in t.items()})
    assert_same(got, want)
    ref = tnops.reference.rtd_loss(t["logits"].contiguous(), t["corrupted"], t["original"], t["attention_mask"],
                                   t["corrected"], reduction="none")
    assert rel_err(got[0], ref) < 1e-6
    x = t["logits"].contiguous().detach().requires_grad_()
    ref_grad = torch.autograd.grad(tnops.reference.rtd_loss(x, t["corrupted"], t["original"], t["attention_mask"],
                                                            t["corrected"], reduction="none"), x, t["grad"])[0]
    assert rel_err(got[1], ref_grad) < 1e-6


# ---------------------------------------------------------------- dtypes the path cannot compute
REFUSED = [torch.bfloat16, torch.float16, torch.float64] if INTERPRETER else [torch.float64]
REFUSAL = "float32 only" if INTERPRETER else "float64"


@pytest.fixture
def no_kernel_runs(monkeypatch):
    """Every kernel launch fails the test: a refusal must come before any kernel runs."""
    class NoLaunch:
        def __getitem__(self, grid):
            raise AssertionError("a kernel was launched")

    for module, name in ((mlm_head_kernels, "_mlm_fwd_kernel"), (mlm_head_kernels, "_mlm_combine_kernel"),
                         (mlm_head_kernels, "_mlm_bwd_kernel"), (sr_kernels, "_sr_bwd_kernel"),
                         (rtd_kernels, "_rtd_kernel")):
        monkeypatch.setattr(module, name, NoLaunch())


@pytest.mark.parametrize("dtype", REFUSED)
def test_dtypes_the_kernels_cannot_compute_are_refused_before_any_kernel_runs(no_kernel_runs, dtype):
    """Every entry point, public or launcher, refuses with a clear TypeError/ValueError (no kernel runs)."""
    h32, w32, b32, y = inputs(8, 40, 16)
    h, w, b, emb = (t.to(dtype) for t in (h32, w32, b32, torch.randn(40, 8, device=DEVICE)))
    rows = torch.ones(8, device=DEVICE)
    routes = {
        "linear_mlm_loss": lambda: tnops.linear_mlm_loss(h, w, y, bias=b, prediction="sample", seed=1,
                                                         backend="triton"),
        "mlm_head_forward": lambda: mlm_head_forward(h, w, b, y, prediction="sample", seed=1),
        "SR table only": lambda: tnops.linear_mlm_loss(h32, w32, y, bias=b32, sr_weight=0.5, sr_embedding=emb,
                                                       backend="triton"),
        "bias only": lambda: mlm_head_forward(h32, w32, b, y),
        "mlm_head_backward": lambda: mlm_head_backward(h, w, b, y, rows, rows.expand(3, 8)),
        "sr_backward": lambda: sr_backward(emb, y, y.clamp_min(0), rows, rows, rows, rows),
        "rtd_loss": lambda: tnops.rtd_loss(h[:, 0], y.clamp_min(0), y.clamp_min(0), backend="triton"),
        "rtd_forward": lambda: rtd_forward(h[:, 0], y, y),
    }
    for route, call in routes.items():
        with pytest.raises((TypeError, ValueError), match=REFUSAL):
            call()
            pytest.fail(f"{route}: {dtype} was not refused")


@pytest.mark.parametrize("interpret", ["1", "0"])
def test_the_backend_and_the_launchers_refuse_the_same_tensors(monkeypatch, interpret):
    """One source of truth (``config.refusal``): what the backend ``refuses`` when a backend is chosen is exactly
    what the launchers' ``check_inputs`` refuses, device by device and dtype by dtype, with the same reason."""
    monkeypatch.setenv("TRITON_INTERPRET", interpret)  # read at each call; no kernel runs here
    module = backends.get("triton")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    served = set()
    for device in devices:
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            reason = module.refuses(device, dtype)
            assert reason == config.refusal(device, dtype)
            tensor = torch.zeros(4, device=device, dtype=dtype)
            if reason is None:
                config.check_inputs(x=tensor)
                served.add((device.type, dtype))
            else:
                with pytest.raises(TypeError if config.device_refusal(device) is None else ValueError) as error:
                    config.check_inputs(x=tensor)
                assert str(error.value) == f"x: {reason}"
    gpu = {("cuda", dtype) for dtype in config.GPU_DTYPES} if torch.cuda.is_available() else set()
    if interpret == "1":  # the interpreter computes float32 only, on any device
        assert served == {(device.type, torch.float32) for device in devices}
    else:
        assert served == gpu


@pytest.mark.skipif(not INTERPRETER, reason="CPU autocast reaches the kernels under the interpreter only")
def test_cpu_autocast_computes_in_float32_or_refuses():
    """fp32 tensors under bf16 autocast: computed right (in fp32) or refused; bf16 hidden with an fp32 weight
    (the head's dtype is then bf16): refused, or computed right."""
    h, w, b, y = inputs(24, 100, 16)
    plain = tnops.linear_mlm_loss(h, w, y, bias=b, prediction="sample", seed=4)
    for args in ((h, w, b), (h.to(torch.bfloat16), w, b)):
        leaves = [t.detach().requires_grad_() for t in args]
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = tnops.linear_mlm_loss(leaves[0], leaves[1], y, bias=leaves[2], prediction="sample", seed=4)
        except (TypeError, ValueError) as error:  # refused: it must say why
            assert "float32 only" in str(error)
            continue
        if args[0].dtype == torch.float32:
            assert torch.equal(out.predictions, plain.predictions)
        exact = [t.detach().double().requires_grad_() for t in args]
        ref = tnops.reference.linear_mlm_loss(exact[0], exact[1], y, bias=exact[2], predictions=out.predictions)
        assert rel_err(out.loss, ref.loss) < 1e-5
        for got, want in zip(torch.autograd.grad(out.loss, leaves), torch.autograd.grad(ref.loss, exact)):
            assert rel_err(got, want) < 1e-5


# ---------------------------------------------------------------- 64-bit and numpy seeds
@pytest.mark.parametrize("seed", [2**63, 2**63 + 12345, 2**64 - 1, np.int64(2**62 + 7), np.uint64(2**64 - 2),
                                  np.int64(-5)], ids=lambda seed: f"{type(seed).__name__}({seed})")
def test_64_bit_and_numpy_seeds_sample_like_the_torch_path(seed):
    """Philox key = (seed mod 2^64) as (lo, hi) words everywhere: the kernel's samples are the torch path's,
    except float32 near-ties (scores within 1e-5 of each other, the logits' summation orders differ)."""
    h, w, b, y = inputs(40, 257, 24)
    got = tnops.linear_mlm_loss(h, w, y, bias=b, prediction="sample", seed=seed).predictions
    direct = mlm_head_forward(h, w, b, y, prediction="sample", seed=seed)["predictions"]
    scores = torch.nn.functional.linear(h, w, b) + tn_random.gumbel(int(seed) % 2**64, torch.arange(40), 257).to(DEVICE)
    want = scores.argmax(1)
    masked = y != -100
    assert torch.equal(got, direct) and (got[~masked] == -100).all()
    got, want, scores = got[masked], want[masked], scores[masked]
    gap = scores.gather(1, want[:, None]) - scores.gather(1, got[:, None])
    assert (gap.abs() <= 1e-5 * scores.abs().amax(1, keepdim=True)).all()
    assert (got == want).float().mean() > 0.9


def test_a_seed_given_as_an_int64_tensor_keeps_all_64_bits():
    """The torch.compile ops carry the seed as an int64 tensor: 2^63 + k arrives as 2^63 + k - 2^64."""
    h, w, b, y = inputs(40, 257, 24)
    seed = 2**63 + 12345
    eager = mlm_head_forward(h, w, b, y, prediction="sample", seed=seed)["predictions"]
    as_tensor = mlm_head_forward(h, w, b, y, prediction="sample", seed=torch.tensor(seed - 2**64))["predictions"]
    assert torch.equal(as_tensor, eager)
