"""The Triton kernels check every index they dereference (issue 14): clamp and flag, then the launcher raises.

Under ``torch.compile`` the Python checks of ``tnops.validation`` are skipped, so these tests call the launchers
(``mlm_head_forward``, ``mlm_head_backward``, ``sr_backward``) directly: an index out of range must give a
ValueError naming the argument and its range (under the interpreter; on CUDA a device-side assert), and never
an access out of bounds.  ``only_kernel`` gives every other kernel of a launcher a private error word, so each
kernel is shown to check on its own.  Far-out indices run in a subprocess: a read out of bounds there is a
segfault of that process, not of the test session.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_ops_triton import DEVICE, _poisoned_empty, inputs, pytestmark  # noqa: F401 (fixtures)

from tnops.ops import mlm_head, mlm_head_kernels, sr_kernels
from tnops.ops.mlm_head import mlm_head_backward, mlm_head_forward, sr_backward

# a device-side assert ends the CUDA context: on a GPU only the subprocess test at the end runs
in_process = pytest.mark.skipif(DEVICE == "cuda", reason="in-process index errors are checked under the interpreter")

V = 100
LABELS = r"labels: expected ids in \[0, 100\) or ignore_index=-100"
KERNELS = ("_mlm_fwd_kernel", "_mlm_combine_kernel", "_mlm_bwd_kernel", "_sr_bwd_kernel")
HOME = {name: sr_kernels if name == "_sr_bwd_kernel" else mlm_head_kernels for name in KERNELS}  # their modules


@pytest.fixture
def only_kernel(monkeypatch):
    """``only_kernel(name)``: every other kernel of the launchers runs with a private error word of its own
    (``only_kernel(None)``: every kernel on the launcher's word again)."""
    originals = {name: getattr(HOME[name], name) for name in KERNELS}

    class Private:
        def __init__(self, real):
            self.real, self.position = real, real.arg_names.index("flags_ptr")

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                args = list(args)
                args[self.position] = torch.zeros_like(args[self.position])
                self.real[grid](*args, **kwargs)
            return launch

    def keep(name):
        for other, real in originals.items():
            monkeypatch.setattr(HOME[other], other, real if name in (None, other) else Private(real))
    return keep


def setup(make_table):
    h, w, b, y = inputs(24, V, 16)
    emb = torch.randn(V, 8, device=DEVICE)
    table = make_table([(g, (g + 1) % V) for g in range(V)], V)  # every id has one synonym
    return h, w, b, y, emb, table.offsets.to(DEVICE), table.ids.to(DEVICE)


def forward(h, w, b, y, emb, offsets, syn_ids, **kw):
    return mlm_head_forward(h, w, b, y, offsets=offsets, syn_ids=syn_ids, sr_embedding=emb, prediction="sample",
                            seed=3, **kw)


@in_process
@pytest.mark.parametrize("bad", [V, 100_000, -5, 2**40])
def test_labels_out_of_range_are_refused_by_each_kernel(make_table, only_kernel, bad):
    h, w, b, y, emb, offsets, syn_ids = setup(make_table)
    out = forward(h, w, b, y, emb, offsets, syn_ids)  # a valid call: nothing flagged
    coef = torch.where(y != -100, 1.0, 0.0)
    coef3 = torch.stack([coef, coef, coef])  # α, γ, δ of mlm_head_backward
    y_bad = y.clone()
    y_bad[4] = bad  # a masked row
    calls = {
        "_mlm_fwd_kernel": lambda: forward(h, w, b, y_bad, emb, offsets, syn_ids),
        "_mlm_combine_kernel": lambda: forward(h, w, b, y_bad, emb, offsets, syn_ids),
        "_mlm_bwd_kernel": lambda: mlm_head_backward(h, w, b, y_bad, out["lse"], coef3),
        "_sr_bwd_kernel": lambda: sr_backward(emb, y_bad, out["predictions"].clamp_min(0), coef, out["sr_dot"],
                                              out["sr_gold_sq"], out["sr_pred_sq"]),
    }
    for name, call in calls.items():
        only_kernel(name)
        with pytest.raises(ValueError, match=LABELS):
            call()
            pytest.fail(f"{name} did not flag label {bad}")
    # given logits (mlm_loss's path: no weight) check the same
    only_kernel(None)
    logits = h @ w.T
    with pytest.raises(ValueError, match=LABELS):
        mlm_head_forward(logits, None, None, y_bad)
    with pytest.raises(ValueError, match=LABELS):
        mlm_head_backward(logits, None, None, y_bad, out["lse"], coef3)


@in_process
def test_a_pad_id_ignore_index_is_skipped_and_named():
    """``ignore_index`` may be a vocabulary id: rows holding it are skipped, not flagged; -100 then is an error."""
    h, w, b, y = inputs(24, V, 16)
    y0 = torch.where(y == -100, 0, y)
    mlm_head_forward(h, w, b, y0, ignore_index=0)
    with pytest.raises(ValueError, match=r"labels: expected ids in \[0, 100\) or ignore_index=0"):
        mlm_head_forward(h, w, b, y, ignore_index=0)


@in_process
@pytest.mark.parametrize("bad", [2**32, 2**40, -1])
def test_row_ids_outside_32_bits_are_refused(bad):
    h, w, b, y = inputs(24, V, 16)
    row_ids = torch.arange(24, device=DEVICE)
    mlm_head_forward(h, w, b, y, prediction="sample", seed=1, row_ids=row_ids)
    row_ids[5] = bad
    for prediction in ("sample", "argmax"):  # checked whenever given, as tnops.validation does
        with pytest.raises(ValueError, match=r"row_ids: expected values in \[0, 2\^32\)"):
            mlm_head_forward(h, w, b, y, prediction=prediction, seed=1, row_ids=row_ids)
    with pytest.raises(ValueError, match=r"row_ids: expected values in \[0, 2\^32\)"):
        mlm_head_forward(h @ w.T, None, None, y, prediction="sample", seed=1, row_ids=row_ids)


@in_process
def test_a_tampered_csr_table_is_refused(make_table):
    h, w, b, y, emb, offsets, syn_ids = setup(make_table)
    nnz = syn_ids.numel()
    gold = int(y[y != -100][0])
    cases = {
        "past nnz": lambda o, i: o[gold + 1:].add_(1000),
        "all past nnz": lambda o, i: o.add_(2**30),
        "negative": lambda o, i: o[:gold + 1].sub_(2**30),
        "decreasing": lambda o, i: o[gold + 1].fill_(int(o[gold]) - 1),
    }
    for case, tamper in cases.items():
        o = offsets.clone()
        tamper(o, syn_ids)
        with pytest.raises(ValueError, match=rf"offsets: expected a CSR table .* <= nnz = {nnz}"):
            forward(h, w, b, y, emb, o, syn_ids)
            pytest.fail(case)
    ids = syn_ids.clone()
    ids[:] = V + 7  # every searched id is out of range
    with pytest.raises(ValueError, match=r"syn_ids: expected synonym ids in \[0, 100\)"):
        forward(h, w, b, y, emb, offsets, ids)
    with pytest.raises(ValueError, match=r"offsets: expected 101 entries"):  # a shape: refused before any kernel
        forward(h, w, b, y, emb, offsets[:-1], syn_ids)


@in_process
@pytest.mark.parametrize("bad", [V, -1, 2**40])
def test_predictions_out_of_range_are_refused_by_the_sr_backward(make_table, bad):
    h, w, b, y, emb, offsets, syn_ids = setup(make_table)
    out = forward(h, w, b, y, emb, offsets, syn_ids)
    pred = out["predictions"].clone()
    row = int((y != -100).nonzero()[0])
    pred[row] = bad
    coef = torch.ones(24, device=DEVICE)
    with pytest.raises(ValueError, match=r"predictions: expected ids in \[0, 100\) on rows with a gold id"):
        sr_backward(emb, y, pred, coef, out["sr_dot"], out["sr_gold_sq"], out["sr_pred_sq"])
    pred[row] = 3  # unmasked rows may hold anything (ignore_index): only rows with a gold id are checked
    sr_backward(emb, y, pred, coef, out["sr_dot"], out["sr_gold_sq"], out["sr_pred_sq"])


@in_process
def test_a_bad_row_permutation_is_flagged(monkeypatch):
    """The row order is made by the launcher; a wrong one (here: one index = N) is flagged, never followed."""
    h, w, b, y = inputs(24, V, 16)
    out = mlm_head_forward(h, w, b, y)
    real = mlm_head.rows_first

    def broken(live):
        order = real(live).clone()
        order[0] = live.shape[0]
        return order

    monkeypatch.setattr(mlm_head, "rows_first", broken)
    with pytest.raises(ValueError, match=r"order: the row permutation"):
        mlm_head_forward(h, w, b, y)
    with pytest.raises(ValueError, match=r"order: the row permutation"):
        mlm_head_backward(h, w, b, y, out["lse"], torch.ones(3, 24, device=DEVICE))


SCRIPT = textwrap.dedent("""
    import torch
    from test_ops_triton import DEVICE, inputs
    from tnops.ops.mlm_head import mlm_head_backward, mlm_head_forward, sr_backward
    from conftest import table_from_pairs

    h, w, b, y = inputs(24, 100, 16)
    emb = torch.randn(100, 8, device=DEVICE)
    table = table_from_pairs([(g, (g + 1) % 100) for g in range(100)], 100)
    offsets, ids = table.offsets.to(DEVICE), table.ids.to(DEVICE)
    far = 2**40
    y_far = y.clone(); y_far[4] = far
    o_far = offsets.clone(); o_far[1:] = 2**31 - 1
    ones = torch.ones(24, device=DEVICE)
    ones3 = torch.ones(3, 24, device=DEVICE)
    out = mlm_head_forward(h, w, b, y, offsets=offsets, syn_ids=ids, sr_embedding=emb)
    calls = [
        lambda: mlm_head_forward(h, w, b, y_far, offsets=offsets, syn_ids=ids, sr_embedding=emb),
        lambda: mlm_head_forward(h, w, b, y, offsets=o_far, syn_ids=ids, sr_embedding=emb),
        lambda: mlm_head_backward(h, w, b, y_far, out["lse"], ones3),
        lambda: mlm_head_backward(h @ w.T, None, None, y_far, out["lse"], ones3),
        lambda: sr_backward(emb, y, torch.full((24,), far, device=DEVICE), ones, ones, ones, ones),
    ]
    for call in calls:
        try:
            call()
            if DEVICE == "cuda":
                torch.cuda.synchronize()
        except (ValueError, RuntimeError) as error:
            print("refused:", str(error).splitlines()[0], flush=True)
        else:
            print("NOT REFUSED", flush=True)
""")


def test_far_out_indices_never_touch_memory_out_of_bounds():
    """Indices 2^40 and offsets near 2^31 would segfault the interpreter (or fault a GPU) if followed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    if DEVICE == "cuda":  # the first device-side assert ends the process's CUDA context: one refusal is all
        assert run.returncode != 0 or "refused:" in run.stdout, run.stdout + run.stderr
        assert "labels: expected ids" in run.stdout + run.stderr or "device-side assert" in run.stdout + run.stderr
        return
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("refused: ") for line in lines), run.stdout
    for line, arg in zip(lines, ["labels", "offsets", "labels", "labels", "predictions"], strict=True):
        assert line.startswith(f"refused: {arg}: expected"), line
