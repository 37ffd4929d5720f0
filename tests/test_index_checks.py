"""Indices are checked where they are used (issue 14): inside a compiled graph the public functions' Python checks
are skipped, so the ``tnops::`` ops check every index their kernels dereference and raise a ValueError naming the
argument; nothing reads or writes out of bounds.  Every backend, eager and compiled."""
import pytest
import torch

import tnops
from tnops import backends

BACKENDS = backends.available_backends()
V = 50


def _inputs():
    torch.manual_seed(0)
    hidden = torch.randn(6, 8, requires_grad=True)
    weight = torch.randn(V, 8, requires_grad=True)
    labels = torch.tensor([3, -100, 7, 11, -100, 2])
    return hidden, weight, labels


def _compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compiled", [False, True])
def test_out_of_range_label_is_a_value_error(backend, compiled):
    def loss(h, w, y):
        return tnops.linear_mlm_loss(h, w, y, prediction="sample", seed=1, sr_weight=0.5, backend=backend).loss

    run = _compiled(loss) if compiled else loss  # one graph for every bad value: the values are data
    for bad in (V, 100000, -5):
        hidden, weight, labels = _inputs()
        labels[2] = bad
        with pytest.raises(ValueError, match=rf"labels: expected ids in \[0, {V}\).*found {bad}|labels: .*{V}"):
            run(hidden, weight, labels).backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_label_of_given_logits_compiled(backend):
    logits = torch.randn(6, V, requires_grad=True)
    labels = torch.tensor([3, -100, V, 11, -100, 2])
    run = _compiled(lambda z, y: tnops.mlm_loss(z, y, backend=backend).loss)
    with pytest.raises(ValueError, match="labels"):
        run(logits, labels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_ids_past_32_bits_compiled(backend):
    hidden, weight, labels = _inputs()
    row_ids = torch.arange(6, dtype=torch.int64)
    row_ids[3] = 2**32
    run = _compiled(lambda h, w, y, r: tnops.linear_mlm_loss(h, w, y, prediction="sample", seed=3, row_ids=r,
                                                             backend=backend).loss)
    with pytest.raises(ValueError, match="row_ids"):
        run(hidden, weight, labels, row_ids)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tampered_synonym_table_compiled(backend, make_table):
    hidden, weight, labels = _inputs()
    run = _compiled(lambda h, w, y, table: tnops.linear_mlm_loss(h, w, y, synonyms=table, backend=backend).loss)
    for tamper in ("offsets past nnz", "decreasing offsets", "id past V"):
        table = make_table([(3, 4), (7, 8), (11, 12), (2, 1)], V)
        if tamper == "offsets past nnz":
            table.offsets[5:] += 1000
        elif tamper == "decreasing offsets":
            table.offsets[4] = table.offsets[-1] + 0
            table.offsets[5] = 0
        else:
            table.ids[0] = V + 7
        with pytest.raises(ValueError, match="synonyms"):
            run(hidden, weight, labels, table)


def test_inductor_graph_checks_labels_too():
    hidden, weight, labels = _inputs()
    labels[0] = V
    torch._dynamo.reset()
    run = torch.compile(lambda h, w, y: tnops.linear_mlm_loss(h, w, y).loss, fullgraph=True)
    with pytest.raises(ValueError, match="labels"):
        run(hidden, weight, labels)


@pytest.mark.parametrize("bad", [V, -5])
def test_sr_loss_ids_are_checked_in_a_compiled_graph(bad):
    embedding = torch.randn(V, 4, requires_grad=True)
    gold, pred = torch.tensor([1, 2, -100, 4]), torch.tensor([5, bad, 0, 7])
    run = _compiled(lambda e, g, p: tnops.sr_loss(e, g, p))
    with pytest.raises(ValueError, match="pred_ids"):
        run(embedding, gold, pred)
    with pytest.raises(ValueError, match="gold_ids"):
        run(embedding, torch.tensor([1, bad, -100, 4]), torch.tensor([5, 6, 0, 7]))
