"""Vocabulary-parallel loss (issue 19): 2 and 3 gloo ranks with uneven vocabulary blocks against one process.

Every rank must return one process's loss, predictions (samples bit for bit) and corrected flags, ``hidden.grad``
whole and the shard's slice of ``weight.grad`` / ``bias.grad`` / the SR table's gradient.
"""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from backend_check import make_inputs, table_hitting_predictions

import tnops
from tnops import backends

V, N, E = 53, 40, 8
# the kernels of the vocabulary-parallel path: torch's everywhere, the native op's where it is built, Triton's where
# it runs (here: its interpreter on CPU tensors)
KERNELS = ["torch"] + [name for name in ("native", "triton") if backends.unavailable_reason(name) is None
                       and backends.get(name).refuses(torch.device("cpu"), torch.float32) is None]
BLOCKS = {2: [30, 23], 3: [20, 13, 20]}
VARIANTS = [
    dict(prediction="argmax", reduction="mean"),
    dict(prediction="sample", seed=7, reduction="sum", hc=True),
    dict(prediction="sample", seed=3, reduction="none", hc=True, sr_weight=0.5),
    dict(prediction="sample", seed=5, reduction="mean", hc=True, sr_weight=0.7, full_sr=True, temperature=0.7),
    dict(prediction="argmax", reduction="mean", hc=True, label_smoothing=0.1, z_loss=1e-2, disallow_correct=True),
]


def _call(hidden, weight, bias, labels, variant, table, sr_table, group=None, backend="torch"):
    kw = {k: v for k, v in variant.items() if k not in ("hc", "full_sr")}
    return tnops.linear_mlm_loss(hidden, weight, labels, bias=bias, synonyms=table if variant.get("hc") else None,
                                 sr_embedding=sr_table, process_group=group, backend=backend, **kw)


def _run(hidden, weight, bias, labels, variant, table, upstream, group=None, block=None, backend="torch"):
    """One call and its gradients; ``block``: this rank's (start, stop) of the vocabulary."""
    leaves = [hidden.clone().requires_grad_()]
    w, b = (weight, bias) if block is None else (weight[block[0]:block[1]], bias[block[0]:block[1]])
    leaves += [w.clone().requires_grad_(), b.clone().requires_grad_()]
    sr_table = None
    if variant.get("full_sr"):
        sr_table = (weight * 0.5 + 0.1).clone().requires_grad_()
        leaves.append(sr_table)
    out = _call(*leaves[:2], leaves[2], labels, variant, table, sr_table, group, backend)
    grads = torch.autograd.grad((out.loss * upstream).sum(), leaves)
    return out, grads


def _worker(rank, world, path, rdv):
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    data = torch.load(path, weights_only=False)
    starts = [sum(BLOCKS[world][:r]) for r in range(world + 1)]
    block = (starts[rank], starts[rank + 1])
    results = []
    for backend in KERNELS:
        for variant, upstream in zip(VARIANTS, data["upstreams"]):
            out, grads = _run(data["hidden"], data["weight"], data["bias"], data["labels"], variant, data["table"],
                              upstream, group=dist.group.WORLD, block=block, backend=backend)
            results.append((tuple(out), [g.detach() for g in grads]))
    results.append(_dtensor_case(data, world))
    for backend in KERNELS:
        results.append(_logits_case(data, block, dist.group.WORLD, backend))
    torch.save(results, f"{path}.{rank}")
    dist.destroy_process_group()


LOGITS_VARIANT = dict(prediction="sample", seed=3, reduction="none", hc=True, sr_weight=0.5, label_smoothing=0.1)


def _logits_case(data, block=None, group=None, backend="torch"):
    """mlm_loss on (this rank's columns of) the logits, SR on (this rank's rows of) the weight: outputs and the
    logits' gradient."""
    weight = data["weight"] if block is None else data["weight"][block[0]:block[1]]
    logits = torch.nn.functional.linear(data["hidden"], data["weight"], data["bias"])
    logits = (logits if block is None else logits[:, block[0]:block[1]]).clone().requires_grad_()
    kw = {k: v for k, v in LOGITS_VARIANT.items() if k != "hc"}
    out = tnops.mlm_loss(logits, data["labels"], synonyms=data["table"], sr_embedding=weight, backend=backend,
                         process_group=group, **kw)
    (grad,) = torch.autograd.grad((out.loss * data["upstreams"][2]).sum(), logits)
    return tuple(t.detach() for t in out), grad


def _dtensor_case(data, world):
    """The same as VARIANTS[1] with weight and bias DTensors (Shard(0), torch.chunk's blocks), without
    process_group; and a Replicate placement refused by name."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    weight = distribute_tensor(data["weight"], mesh, [Shard(0)]).requires_grad_()
    bias = distribute_tensor(data["bias"], mesh, [Shard(0)]).requires_grad_()
    hidden = data["hidden"].clone().requires_grad_()
    out = _call(hidden, weight, bias, data["labels"], VARIANTS[1], data["table"], None)
    (out.loss * data["upstreams"][1]).sum().backward()
    try:
        tnops.linear_mlm_loss(data["hidden"], distribute_tensor(data["weight"], mesh, [Replicate()]), data["labels"])
        refusal = "no error"
    except ValueError as error:
        refusal = str(error)
    return (tuple(out), [hidden.grad, weight.grad.to_local(), bias.grad.to_local()], weight.to_local().shape[0],
            refusal)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    torch.manual_seed(0)
    hidden, weight, bias, labels = make_inputs(N, V, E)
    from conftest import table_from_pairs

    # half of the mispredicted pairs of every variant's predictions are listed, so hard correction fires in each
    pairs = []
    for variant in VARIANTS:
        kw = {k: variant[k] for k in ("prediction", "seed", "temperature", "disallow_correct") if k in variant}
        first = tnops.linear_mlm_loss(hidden, weight, labels, bias=bias, **kw)
        table = table_hitting_predictions(lambda p, v: p, labels, first.predictions, V)
        pairs += table
    table = table_from_pairs(pairs, V)
    upstreams, expected = [], []
    for variant in VARIANTS:
        shape = labels.shape if variant["reduction"] == "none" else ()
        upstreams.append(torch.randn(shape))
        expected.append(_run(hidden, weight, bias, labels, variant, table, upstreams[-1]))
    path = tmp_path_factory.mktemp("dist") / "inputs.pt"
    torch.save(dict(hidden=hidden, weight=weight, bias=bias, labels=labels, table=table, upstreams=upstreams), path)
    return path, expected


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_equal_one_process(single_process, world, tmp_path):
    path, expected = single_process
    logits_expected = _logits_case(torch.load(path, weights_only=False))
    mp.spawn(_worker, args=(world, str(path), str(tmp_path / "rdv")), nprocs=world, join=True)
    starts = [sum(BLOCKS[world][:r]) for r in range(world + 1)]
    for rank in range(world):
        results = torch.load(f"{path}.{rank}", weights_only=False)
        lo, hi = starts[rank], starts[rank + 1]
        for backend in reversed(KERNELS):  # mlm_loss on this rank's columns of the logits
            out, grad = results.pop()
            want_out, want_grad = logits_expected
            assert want_out[4].any()  # hard correction fired
            for got, exp in zip(out, want_out):
                torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-6, msg=lambda m, b=backend: f"{b}: {m}")
            torch.testing.assert_close(grad, want_grad[:, lo:hi], rtol=1e-5,
                                       atol=1e-6 * want_grad.abs().max().item())
        out, grads, rows, refusal = results.pop()  # the DTensor form: blocks of torch.chunk, no process_group
        d_lo = rank * -(-V // world)
        assert torch.equal(out[3], expected[1][0].predictions) and torch.equal(out[4], expected[1][0].corrected)
        torch.testing.assert_close(out[0], expected[1][0].loss.detach(), rtol=1e-5, atol=1e-6)
        for g, w in zip(grads, [expected[1][1][0], *(x[d_lo:d_lo + rows] for x in expected[1][1][1:3])]):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6 * w.abs().max().item())
        assert "weight: a DTensor must be sharded by vocabulary rows, placements (Shard(0),)" in refusal
        assert len(results) == len(KERNELS) * len(VARIANTS)
        cases = zip(VARIANTS * len(KERNELS), results, expected * len(KERNELS))
        for index, (variant, (out, grads), (want, want_grads)) in enumerate(cases):
            loss, mlm, sr, predictions, corrected, z = out
            backend = KERNELS[index // len(VARIANTS)]
            assert torch.equal(predictions, want.predictions), (rank, backend, variant)
            assert torch.equal(corrected, want.corrected), (rank, backend, variant)
            for got, exp in ((loss, want.loss), (mlm, want.mlm_loss), (sr, want.sr_loss), (z, want.z_loss)):
                torch.testing.assert_close(got, exp.detach(), rtol=1e-5, atol=1e-6)
            wanted = [want_grads[0], want_grads[1][lo:hi], want_grads[2][lo:hi], *want_grads[3:]]
            for g, w in zip(grads, wanted):
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6 * w.abs().max().item())
            if variant.get("hc"):
                assert want.corrected.any()


ERRORS = {
    "labels": "labels: expected the same tensor on every rank",
    "range": "labels: expected global ids in [0, 53)",
    "table": "synonyms: the table was built for a vocabulary of 57 tokens, but the logits have 53",
    "sr_embedding": "sr_embedding: expected this rank's block [V_k=",
}


def _bad_worker(rank, world, rdv, path):
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    torch.manual_seed(0)
    hidden, weight, bias, labels = make_inputs(N, V, E)
    half = weight[:30] if rank == 0 else weight[30:]
    messages = []
    for case in ERRORS:
        kw, y = {}, labels.clone()
        if case == "labels":
            y[1] = (y[1] + rank + 1) % V  # differs between ranks
        elif case == "range":
            y[1] = V  # beyond the concatenated vocabulary
        elif case == "table":
            kw["synonyms"] = tnops.SynonymTable.from_pairs([1], [2], V + 4)
        else:
            kw.update(sr_weight=1.0, sr_embedding=torch.randn(7, 3))
        try:
            tnops.linear_mlm_loss(hidden, half, y, process_group=dist.group.WORLD, **kw)
            messages.append("no error")
        except ValueError as error:
            messages.append(str(error))
    torch.save(messages, f"{path}.{rank}")
    dist.destroy_process_group()


def test_cross_rank_errors_are_named(tmp_path):
    """Ranks that disagree, a label beyond the concatenated vocabulary, a table or an SR table of another size:
    one-line ValueErrors, on every rank alike."""
    mp.spawn(_bad_worker, args=(2, str(tmp_path / "rdv"), str(tmp_path / "msg")), nprocs=2, join=True)
    for rank in range(2):
        for (case, match), message in zip(ERRORS.items(), torch.load(tmp_path / f"msg.{rank}")):
            assert match in message, (case, message)


def test_without_an_initialised_group_the_error_is_named():
    hidden, weight, bias, labels = make_inputs(6, 20, 4)
    with pytest.raises(ValueError, match="process_group: torch.distributed is not initialised"):
        tnops.linear_mlm_loss(hidden, weight, labels, process_group=object())


def _tiny_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=211, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.BertForMaskedLM(config)


def _bert_batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 211, (4, 16), generator=generator)
    return ids, torch.where(torch.rand(4, 16, generator=generator) < 0.3, ids, -100)


def _fsdp_worker(rank, world, rdv, path):
    from torch.distributed.fsdp import fully_shard

    from tnops.integrations.transformers import apply_true_negatives

    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    model = apply_true_negatives(_tiny_bert(), torch.load(path, weights_only=False), prediction="sample", seed=3,
                                 sr_weight=0.5)
    for layer in model.bert.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    ids, labels = _bert_batch()
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    grads = {name: p.grad.full_tensor() for name, p in model.named_parameters() if p.grad is not None}
    torch.save((out.loss.detach(), out.true_negatives.corrected, grads), f"{path}.{rank}")
    dist.destroy_process_group()


def test_fsdp2_patched_model_equals_one_process(tmp_path):
    """FSDP2 (fully_shard) over a model patched by apply_true_negatives: each of 2 gloo ranks on the same batch
    gets one process's loss, corrections and (averaged, all-gathered) gradients."""
    pytest.importorskip("torch.distributed.fsdp")
    from conftest import table_from_pairs

    from tnops.integrations.transformers import apply_true_negatives

    model = _tiny_bert()
    ids, labels = _bert_batch()
    first = apply_true_negatives(model, prediction="sample", seed=3)(input_ids=ids, labels=labels)
    table = table_hitting_predictions(table_from_pairs, labels, first.true_negatives.predictions, 211)
    torch.save(table, tmp_path / "table.pt")
    model = apply_true_negatives(_tiny_bert(), table, prediction="sample", seed=3, sr_weight=0.5)
    want = model(input_ids=ids, labels=labels)
    want.loss.backward()
    assert want.true_negatives.corrected.any()
    mp.spawn(_fsdp_worker, args=(2, str(tmp_path / "rdv"), str(tmp_path / "table.pt")), nprocs=2, join=True)
    for rank in range(2):
        loss, corrected, grads = torch.load(tmp_path / f"table.pt.{rank}", weights_only=False)
        torch.testing.assert_close(loss, want.loss.detach(), rtol=1e-5, atol=1e-6)
        assert torch.equal(corrected, want.true_negatives.corrected)
        assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
        for name, p in model.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)
