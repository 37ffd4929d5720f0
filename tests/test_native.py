"""What is specific to the native backend (csrc/): its C++ ops under opcheck, the JIT build on first use,
and the fallback to the torch backend when no compiler is there.  Numerics: the shared matrix
(tests/test_backends.py) holds native to the reference like every backend."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import tnops
from tnops import backends

pytestmark = pytest.mark.skipif(backends.unavailable_reason("native") is not None,
                                reason=f"native backend unavailable: {backends.unavailable_reason('native')}")


def head_args(weight=True, want=(True, True, True), sample=True):
    torch.manual_seed(0)
    n, vocab, width = 11, 37, 16
    inputs = torch.randn(n, width) if weight else torch.randn(n, vocab)
    w = torch.randn(vocab, width) if weight else None
    b = torch.randn(vocab) if weight else None
    labels = torch.randint(0, vocab, (n,))
    labels[::4] = -100
    table = tnops.SynonymTable.from_pairs(torch.randint(0, vocab, (300,)), torch.randint(0, vocab, (300,)), vocab)
    return (inputs, w, b, labels, torch.arange(n) * 5, table.offsets, table.ids, -7, sample, 0.7, False, -100,
            *want, 4)


def test_cpu_tensors_use_native_by_default(monkeypatch):
    monkeypatch.delenv("TNOPS_BACKEND", raising=False)
    assert backends.select(torch.device("cpu"), torch.float32) == "native"


@pytest.mark.parametrize("variant", ["head", "logits", "no-grads", "argmax"])
def test_opcheck_native_forward(variant):
    kw = {"head": {}, "logits": dict(weight=False), "no-grads": dict(want=(False, False, False)),
          "argmax": dict(sample=False)}[variant]
    torch.library.opcheck(torch.ops.tnops.mlm_head_native.default, head_args(**kw))


def test_opcheck_native_backward_and_gumbel():
    inputs, w, b, labels, *_ = head_args()
    coef = torch.where(labels != -100, torch.rand(labels.shape), 0.0)
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


@pytest.mark.slow
def test_jit_build_on_first_use(tmp_path):
    """Without the installed extension, the first use builds csrc/ with ninja into the cache and uses it."""
    built = _python(CHECK, TNOPS_NATIVE="jit", TNOPS_NATIVE_CACHE=str(tmp_path))
    result = _parse(built)
    assert result["REASON"] == "None" and result["CHOSEN"] == "native"
    assert "building the native CPU extension" in built.stderr
    assert any(p.suffix == ".so" for p in tmp_path.iterdir())
    prebuilt = _parse(_python(CHECK))
    assert result["LOSS"] == prebuilt["LOSS"]
