"""The ``tnops::`` custom ops (tnops/_ops.py): torch.library.opcheck on every op and every backend."""
import pytest
import torch

import tnops
from tnops import _ops, backends

BACKENDS = backends.available_backends()


def head_args(backend, *, weight=True, bias=True, table=True, sr=True, want=(True, True, True), prediction="sample"):
    torch.manual_seed(0)
    n, vocab, width = 9, 40, 16
    h = torch.randn(n, width, requires_grad=True)
    w = torch.randn(vocab, width, requires_grad=True) if weight else None
    inputs = h if weight else torch.randn(n, vocab, requires_grad=True)
    b = torch.randn(vocab, requires_grad=True) if bias and weight else None
    labels = torch.randint(0, vocab, (n,))
    labels[::3] = -100
    csr = tnops.SynonymTable.from_pairs(torch.randint(0, vocab, (200,)), torch.randint(0, vocab, (200,)),
                                        vocab).csr_view() if table else (None, None, None)
    emb = torch.randn(vocab, 8, requires_grad=True) if sr else None
    # generic coefficients (a, b, c, d) of the kept rows' objective: label smoothing 0.1 and z-loss 0.01's
    return (inputs, w, b, labels, torch.arange(n) * 3, *csr, emb, torch.tensor(7), prediction, 1.0, False, -100,
            backend, *want, [1.0, 0.02, 0.9, 0.1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["full", "logits", "plain", "no-grad-fusion"])
def test_opcheck_mlm_head(backend, variant):
    kw = {"full": {}, "logits": dict(weight=False), "plain": dict(bias=False, table=False, sr=False,
                                                                    prediction="argmax"),
          "no-grad-fusion": dict(want=(False, False, False))}[variant]
    torch.library.opcheck(_ops.mlm_head, head_args(backend, **kw))


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_mlm_head_backward(backend):
    inputs, w, b, labels, _, _, _, _, emb, *_ = head_args(backend)
    n = labels.shape[0]
    lse = torch.randn(n)
    sr_coef = torch.where(labels != -100, torch.rand(n), 0.0)
    coef = torch.where(labels != -100, torch.rand(3, n) - 0.3, 0.0)  # (alpha, gamma, delta) per row
    pred = torch.where(labels != -100, torch.randint(0, 40, (n,)), -100)
    aux_rows = backends.get(backend).aux_rows(True)
    aux = torch.rand(aux_rows, n) if aux_rows else torch.empty(0)
    args = (inputs.detach(), w.detach(), b.detach(), labels, lse, coef, emb.detach(), pred, sr_coef, aux, -100,
            backend, True, True, True, True)
    torch.library.opcheck(_ops.mlm_head_backward, args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_rtd_rows(backend):
    logits = torch.randn(20, requires_grad=True)
    ids = torch.randint(0, 9, (20,))
    args = (logits, ids, ids.roll(1), (torch.rand(20) < 0.8).long(), torch.rand(20) < 0.2, backend)
    torch.library.opcheck(_ops.rtd_rows, args)


def test_opcheck_sr_rows():
    emb = torch.randn(30, 8, requires_grad=True)
    gold, pred = torch.randint(0, 30, (12,)), torch.randint(0, 30, (12,))
    torch.library.opcheck(_ops.sr_rows, (emb, gold, pred, torch.rand(12) < 0.7))
