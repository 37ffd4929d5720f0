"""What is specific to the native backend (csrc/): its C++ ops under opcheck, the JIT build on first use,
and the fallback to the torch backend when no compiler is there.  Numerics: the shared matrix
(tests/test_backends.py) holds native to the reference like every backend."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from backend_check import check_backend, confident_inputs

import tnops
from tnops import backends

pytestmark = pytest.mark.skipif(backends.unavailable_reason("native") is not None,
                                reason=f"native backend unavailable: {backends.unavailable_reason('native')}")


def head_args(weight=True, want=(True, True, True), sample=True, coefficients=(1.0, 0.0, 1.0, 0.0)):
    torch.manual_seed(0)
    n, vocab, width = 11, 37, 16
    inputs = torch.randn(n, width) if weight else torch.randn(n, vocab)
    w = torch.randn(vocab, width) if weight else None
    b = torch.randn(vocab) if weight else None
    labels = torch.randint(0, vocab, (n,))
    labels[::4] = -100
    table = tnops.SynonymTable.from_pairs(torch.randint(0, vocab, (300,)), torch.randint(0, vocab, (300,)), vocab)
    return (inputs, w, b, labels, torch.arange(n) * 5, table.offsets, table.ids, -7, sample, 0.7, False, -100,
            *want, 4, *coefficients)


def test_cpu_tensors_use_native_by_default(monkeypatch):
    monkeypatch.delenv("TNOPS_BACKEND", raising=False)
    assert backends.select(torch.device("cpu"), torch.float32) == "native"


@pytest.mark.parametrize("variant", ["head", "logits", "no-grads", "argmax", "coefficients"])
def test_opcheck_native_forward(variant):
    kw = {"head": {}, "logits": dict(weight=False), "no-grads": dict(want=(False, False, False)),
          "argmax": dict(sample=False), "coefficients": dict(coefficients=(1.0, 0.3, 0.9, 0.1))}[variant]
    torch.library.opcheck(torch.ops.tnops.mlm_head_native.default, head_args(**kw))


def test_opcheck_native_backward_and_gumbel():
    inputs, w, b, labels, *_ = head_args()
    coef = torch.where(labels != -100, torch.rand(3, *labels.shape), 0.0)
    torch.library.opcheck(torch.ops.tnops.mlm_head_native_backward.default,
                          (inputs, w, b, labels, torch.randn(labels.shape), coef, True, True, True, 4))
    torch.library.opcheck(torch.ops.tnops.gumbel_noise.default, (5, torch.arange(6), 3, 40))


def test_chunking_does_not_change_results(monkeypatch):
    """Rows are processed in chunks: every chunk size gives the same samples and (to rounding) the same loss."""
    inputs, w, b, labels, *_ = head_args()
    outs = []
    for rows in ("1", "3", "1000"):
        monkeypatch.setenv("TNOPS_CHUNK_ROWS", rows)
        outs.append(tnops.linear_mlm_loss(inputs, w, labels, bias=b, prediction="sample", seed=3, backend="native"))
    assert all(torch.equal(o.predictions, outs[0].predictions) for o in outs)
    for o in outs[1:]:
        torch.testing.assert_close(o.loss, outs[0].loss, rtol=1e-6, atol=0)


def test_xlmr_vocabulary_matches_the_reference():
    """V = 250,002 (XLM-R) at a reduced N: loss, every gradient, samples and corrections against float64."""
    torch.manual_seed(0)
    n, vocab, width = 40, 250002, 16
    hidden = torch.randn(n, width)
    weight = torch.randn(vocab, width) * width**-0.5
    bias = torch.randn(vocab) * 0.1
    labels = torch.randint(0, vocab, (n,))
    labels[::7] = -100
    pairs = torch.randint(0, vocab, (2, 4 * vocab))
    table = tnops.SynonymTable.from_pairs(pairs[0], pairs[1], vocab)
    check_backend("native", hidden, weight, bias, labels, synonyms=table, prediction="sample", seed=9,
                  sr_weight=0.5)


def test_chunks_are_never_shorter_than_the_gemm_floor(monkeypatch):
    """At XLM-R's vocabulary a 64 MB chunk would hold 67 rows, and every chunk re-reads all of W and dW: the native
    backend takes at least NATIVE_MIN_CHUNK_ROWS rows; TNOPS_CHUNK_ROWS still overrides."""
    from tnops.backends import native
    monkeypatch.delenv("TNOPS_CHUNK_ROWS", raising=False)
    assert native.chunk_rows(250002) == backends.NATIVE_MIN_CHUNK_ROWS == 256
    assert native.chunk_rows(30522) == (1 << 24) // 30522
    monkeypatch.setenv("TNOPS_CHUNK_ROWS", "5")
    assert native.chunk_rows(250002) == 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pruned_gumbel_max_draws_the_full_passs_samples(dtype):
    """The native sampler skips the logarithms of ids whose noise cannot win (u below a bound from the running
    best); its samples must still be the torch backend's, which scores every id: flat, peaked and huge logits,
    temperatures, disallow_correct, -inf entries, ties, several noise blocks and a tail."""
    torch.manual_seed(3)
    n, vocab = 96, 1000
    scale = torch.tensor([0.01, 1.0, 8.0, 300.0]).repeat_interleave(n // 4)[:, None]
    logits = (torch.randn(n, vocab) * scale).to(dtype)
    logits[5, 300:700] = float("-inf")
    logits[6] = 2.5  # every id tied: the noise alone decides
    logits[7, ::7] = logits[7].max() + 1  # many tied maxima across blocks
    labels = torch.randint(0, vocab, (n,))
    for temperature, disallow in ((1.0, False), (0.3, True), (4.0, False)):
        kw = dict(prediction="sample", seed=11, temperature=temperature, disallow_correct=disallow, reduction="none")
        got = tnops.mlm_loss(logits, labels, backend="native", **kw)
        want = tnops.mlm_loss(logits, labels, backend="torch", **kw)
        assert torch.equal(got.predictions, want.predictions), (temperature, disallow)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_confident_head_within_rtol(dtype):
    """A trained head (hidden ≈ c·W[gold], p(gold) → 1) in float32/float64: dz = (coef/s)·e' with the gold entry of
    e' = e - s·onehot formed exactly, and CE = log1p(Σ_{v≠gold} e_v), keep the tiny loss and gradients within RTOL
    (the former (coef/s)·(e·W) - coef·W[gold] and lse - z_gold were ~3e-4 off in float32)."""
    hidden, weight, b, labels = confident_inputs(63, 1000, 64, dtype)
    out, _ = check_backend("native", hidden, weight, b, labels, prediction="sample", seed=5)
    assert out.mlm_loss.item() < 1e-3


def _python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **env)
    full_env.pop("TNOPS_BACKEND", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=600)


CHECK = """
    import warnings, torch, tnops
    from tnops import backends
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reason = backends.unavailable_reason("native")
        chosen = backends.select(torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    h, w, y = torch.randn(9, 8), torch.randn(20, 8), torch.randint(0, 20, (9,))
    out = tnops.linear_mlm_loss(h, w, y, prediction="sample", seed=1)
    print("REASON", reason)
    print("CHOSEN", chosen)
    print("WARNINGS", len([c for c in caught if "native CPU backend is unavailable" in str(c.message)]))
    print("LOSS", float(out.loss), out.predictions.tolist())
"""


def _parse(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.split(" ", 1)[0].isupper())


def test_no_compiler_falls_back_to_torch_with_one_warning(tmp_path):
    result = _parse(_python(CHECK, TNOPS_NATIVE="jit", TNOPS_NATIVE_CACHE=str(tmp_path), CXX="/bin/false"))
    assert result["CHOSEN"] == "torch"
    assert "could not be built" in result["REASON"]
    assert result["WARNINGS"] == "1"
    reference = _parse(_python(CHECK, TNOPS_NATIVE="off"))
    assert result["LOSS"] == reference["LOSS"]  # the torch backend computed it


@pytest.fixture(scope="module")
def jit_cache(tmp_path_factory):
    """One JIT build directory for the module's JIT tests: the first builds csrc/ (~1-3 min), later ones reuse it."""
    return tmp_path_factory.mktemp("tnops_native_jit")


@pytest.mark.slow
def test_jit_build_on_first_use(jit_cache):
    """Without the installed extension, the first use builds csrc/ with ninja into the cache and uses it."""
    built = _python(CHECK, TNOPS_NATIVE="jit", TNOPS_NATIVE_CACHE=str(jit_cache))
    result = _parse(built)
    assert result["REASON"] == "None" and result["CHOSEN"] == "native"
    assert "building the native CPU extension" in built.stderr
    assert any(p.suffix == ".so" for p in jit_cache.iterdir())
    prebuilt = _parse(_python(CHECK))
    assert result["LOSS"] == prebuilt["LOSS"]


# --- one loader (tnops/_native_loader.py): the backend, the C++ Gumbel noise and the fakes all ask it ---------------
LOADER_CHECK = """
    import hashlib, sys, torch, tnops
    from tnops import backends, random as tn_random
    torch.manual_seed(0)
    h, w, y = torch.randn(9, 8), torch.randn(20, 8), torch.randint(0, 20, (9,))
    reason = backends.unavailable_reason("native")
    default = tnops.linear_mlm_loss(h, w, y, prediction="sample", seed=1)
    torch_path = tnops.linear_mlm_loss(h, w, y, prediction="sample", seed=1, backend="torch")  # random.gumbel
    noise = tn_random.gumbel(2**63 + 7, torch.tensor([0, 5, 2**32 - 1]), 1000)
    print("REASON", reason)
    print("CHOSEN", backends.select(torch.device("cpu"), torch.float32))
    print("GUMBEL", tn_random.native_gumbel() is not None)
    print("INSTALLED", "tnops._native" in sys.modules)
    print("SAME", torch.equal(default.predictions, torch_path.predictions))
    print("NOISE", hashlib.sha256(noise.numpy().tobytes()).hexdigest())
"""


def test_native_off_switches_every_cpp_op_off():
    """TNOPS_NATIVE=off: the torch backend serves CPU tensors and the Gumbel noise comes from the torch ops, bit for
    bit the C++ op's (tests/test_random.py)."""
    off, auto = _parse(_python(LOADER_CHECK, TNOPS_NATIVE="off")), _parse(_python(LOADER_CHECK))
    assert off["REASON"] == "TNOPS_NATIVE=off" and off["CHOSEN"] == "torch"
    assert off["GUMBEL"] == "False" and off["INSTALLED"] == "False"
    assert auto["REASON"] == "None" and auto["CHOSEN"] == "native" and auto["GUMBEL"] == "True"
    assert off["SAME"] == auto["SAME"] == "True" and off["NOISE"] == auto["NOISE"]


@pytest.mark.slow
def test_native_jit_never_imports_the_installed_extension(jit_cache):
    """TNOPS_NATIVE=jit with tnops/_native*.so installed: the Gumbel noise used to import the installed library
    beside the JIT one, and the second TORCH_LIBRARY(tnops) aborted the process."""
    result = _python(LOADER_CHECK, TNOPS_NATIVE="jit", TNOPS_NATIVE_CACHE=str(jit_cache))
    jit, auto = _parse(result), _parse(_python(LOADER_CHECK))
    assert jit["REASON"] == "None" and jit["CHOSEN"] == "native" and jit["GUMBEL"] == "True"
    assert jit["INSTALLED"] == "False" and auto["INSTALLED"] == "True"
    assert jit["SAME"] == "True" and jit["NOISE"] == auto["NOISE"]


# --- index checks inside the C++ ops (issue 14): under torch.compile the Python checks are skipped ------------------
VOCAB = 37  # head_args' vocabulary
LABEL_MESSAGE = r"labels: expected ids in \[0, 37\) or ignore_index=-100, found {}"


def _with(args, **changes):
    """head_args with named entries replaced."""
    names = ("inputs", "weight", "bias", "labels", "row_ids", "offsets", "syn_ids")
    args = list(args)
    for name, value in changes.items():
        args[names.index(name)] = value
    return tuple(args)


@pytest.mark.parametrize("bad", [VOCAB, 100000, -5])
def test_native_op_refuses_labels_out_of_range(bad):
    args = head_args()
    labels = args[3].clone()
    labels[1] = bad
    with pytest.raises(ValueError, match=LABEL_MESSAGE.format(bad)):
        torch.ops.tnops.mlm_head_native(*_with(args, labels=labels))
    inputs, w, b = args[:3]
    coef = torch.where(args[3] != -100, 1.0, 0.0).expand(3, 11).clone()
    coef[:2, 1] = 0  # δ alone is gradient work
    with pytest.raises(ValueError, match=rf"labels: expected ids in \[0, 37\) on rows with coef != 0, found {bad}"):
        torch.ops.tnops.mlm_head_native_backward(inputs, w, b, labels, torch.zeros(11), coef, True, True, True, 4)
    coef[:, 1] = 0  # a row without gradient work is not visited: its label is never read
    torch.ops.tnops.mlm_head_native_backward(inputs, w, b, labels, torch.zeros(11), coef, True, True, True, 4)


def test_native_op_reads_only_masked_labels():
    """ignore_index may be any int, a vocabulary id or an out-of-range one: rows carrying it are skipped."""
    args = list(head_args())
    labels = args[3].clone()
    labels[labels == -100] = -5
    args[3], args[11] = labels, -5
    nll, lse, zmean = torch.ops.tnops.mlm_head_native(*args)[:3]
    for row in (nll, lse, zmean):
        assert (row[labels == -5] == 0).all() and (row[labels != -5] != 0).all()


@pytest.mark.parametrize("bad", [2**32, -1])
def test_native_op_refuses_row_ids_out_of_range(bad):
    args = head_args()
    row_ids = args[4].clone()
    row_ids[3] = bad
    with pytest.raises(ValueError, match=rf"row_ids: expected values in \[0, 2\^32\), found {bad}"):
        torch.ops.tnops.mlm_head_native(*_with(args, row_ids=row_ids))
    torch.ops.tnops.mlm_head_native(*_with(args, row_ids=args[4].int()))  # int32 row ids are read as such


@pytest.mark.parametrize("tamper", ["past-nnz", "decreasing", "negative"])
def test_native_op_refuses_a_tampered_csr_table(tamper):
    args = head_args()
    labels, offsets, ids = args[3], args[5].clone(), args[6]
    gold = int(labels[labels != -100][0])
    if tamper == "past-nnz":
        offsets[gold + 1:] = ids.numel() + 1000
    elif tamper == "decreasing":
        offsets[gold] = offsets[gold + 1] + 1
    else:
        offsets[: gold + 1] = -7
    with pytest.raises(ValueError, match=r"syn_offsets: expected 0 <= offsets\[\d+\] <= offsets\[\d+\] <= \d+"):
        torch.ops.tnops.mlm_head_native(*_with(args, offsets=offsets))


@pytest.mark.parametrize("case,error,match", [
    ("offsets-length", ValueError, r"syn_offsets: expected a CPU tensor \[38\]"),
    ("offsets-dtype", TypeError, r"syn_offsets, syn_ids: expected int32"),
    ("only-offsets", ValueError, r"syn_offsets, syn_ids: expected both or neither"),
    ("bias-shape", ValueError, r"bias: expected a CPU tensor \[37\]"),
    ("row-ids-shape", ValueError, r"row_ids: expected a CPU tensor \[11\]"),
    ("row-ids-dtype", TypeError, r"row_ids: expected int64 or int32"),
    ("labels-dtype", TypeError, r"labels: expected int64"),
    ("weight-width", ValueError, r"weight: expected a CPU tensor \[V, 16\]"),
])
def test_native_op_checks_shapes_and_dtypes(case, error, match):
    args = head_args()
    change = {"offsets-length": dict(offsets=args[5][:-1]), "offsets-dtype": dict(offsets=args[5].long()),
              "only-offsets": dict(syn_ids=None), "bias-shape": dict(bias=args[2][:-1]),
              "row-ids-shape": dict(row_ids=args[4][:-1]), "row-ids-dtype": dict(row_ids=args[4].float()),
              "labels-dtype": dict(labels=args[3].int()), "weight-width": dict(weight=args[1][:, :-1])}[case]
    with pytest.raises(error, match=match):
        torch.ops.tnops.mlm_head_native(*_with(args, **change))


@pytest.mark.parametrize("name,value,match", [
    ("lse", torch.zeros(10), r"lse: expected a CPU tensor \[11\]"),
    ("coef", torch.zeros(11, dtype=torch.long), r"coef: expected a float tensor"),
])
def test_native_backward_checks_lse_and_coef(name, value, match):
    inputs, w, b, labels, *_ = head_args()
    given = {"lse": torch.zeros(11), "coef": torch.ones(3, 11), name: value}
    with pytest.raises((ValueError, TypeError), match=match):
        torch.ops.tnops.mlm_head_native_backward(inputs, w, b, labels, given["lse"], given["coef"], True, True, True,
                                                 4)


@pytest.mark.parametrize("python_checks", [True, False])
@pytest.mark.parametrize("bad", [VOCAB, 100000, -5, "table"])
def test_compiled_native_loss_raises_on_bad_indices(monkeypatch, python_checks, bad):
    """torch.compile(fullgraph=True) skips tnops.validation; the op body checks (tnops/_ops.py) and, with those
    switched off here, the C++ kernel itself raise ValueError naming the argument instead of crashing."""
    from tnops import _ops

    if not python_checks:
        monkeypatch.setattr(_ops.check, "op_indices", lambda *a, **k: None)
    inputs, w, b, labels, _, offsets, ids, *_ = head_args()
    table = tnops.SynonymTable(offsets.clone(), ids.clone())
    if bad == "table":
        gold = int(labels[labels != -100][0])
        table.offsets[gold + 1:] = ids.numel() + 1000  # tampered after the table's own checks
        match = r"syn_offsets|synonyms"
    else:
        labels = labels.clone()
        labels[2] = bad
        match = r"labels: expected ids in \[0, 37\)"
    w = w.clone().requires_grad_()
    loss = torch.compile(lambda h, y: tnops.linear_mlm_loss(h, w, y, bias=b, synonyms=table, prediction="sample",
                                                            seed=3, backend="native").loss, fullgraph=True)
    with pytest.raises(ValueError, match=match):
        loss(inputs, labels)
