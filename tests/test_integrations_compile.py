"""torch.compile of a model patched by apply_true_negatives trains as the eager one does: the compiled loss has a
grad_fn, and the loss, every parameter gradient, the predictions and the correction counts equal eager's, for
every supported class (aot_eager, fast) and through Inductor for one class (the backend where a detached alias of
the loss once came back as the loss itself and took its grad_fn away, with sr_weight == 0)."""
import pytest
import torch

from tnops.integrations.transformers import apply_true_negatives, correction_counts

transformers = pytest.importorskip("transformers")

from test_integrations_transformers import (  # noqa: E402  (after the importorskip, as that module needs it)
    MODELS,
    _assert_grads_equal,
    _batch,
    _dense_table,
    _model,
)


def _check_compiled_equals_eager(name, backend, **options):
    torch._dynamo.reset()  # a fresh cache: no earlier test's recompilations count against the limit
    table = _dense_table()
    eager, compiled = (apply_true_negatives(_model(name), table, **options) for _ in range(2))
    input_ids, attention_mask, labels = _batch()
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    want = eager(**inputs)
    want.loss.backward()
    got = torch.compile(compiled, backend=backend)(**inputs)
    assert got.loss.requires_grad and type(got.loss.grad_fn).__name__ == "CompiledFunctionBackward", \
        got.loss.grad_fn  # it ran compiled (not a silent eager fallback) and it trains
    got.loss.backward()

    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=0)
    _assert_grads_equal(compiled, eager)
    got_stats, want_stats = got.true_negatives, want.true_negatives
    assert compiled.tnops_last_output is got_stats
    assert not got_stats.mlm_loss.requires_grad and not got_stats.sr_loss.requires_grad
    torch.testing.assert_close(got_stats.mlm_loss, want_stats.mlm_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(got_stats.sr_loss, want_stats.sr_loss, rtol=1e-5, atol=1e-7)
    assert torch.equal(got_stats.predictions, want_stats.predictions)
    assert torch.equal(got_stats.corrected, want_stats.corrected)
    assert correction_counts(compiled) == correction_counts(eager)
    assert 0 < correction_counts(eager)[0] < correction_counts(eager)[1]


@pytest.mark.parametrize("name", MODELS)
def test_a_compiled_patched_model_trains_like_the_eager_one(name):
    _check_compiled_equals_eager(name, "aot_eager", sr_weight=0.0, prediction="argmax")


def test_compiled_with_samples_and_soft_regularization():
    _check_compiled_equals_eager("BertForMaskedLM", "aot_eager", sr_weight=0.7, prediction="sample", seed=5)


@pytest.mark.slow
def test_inductor_keeps_the_grad_fn_of_the_loss():
    """Inductor folds ``ce + 0·sr`` to ``ce`` and lowers ``detach`` to a no-op; a stored ``mlm_loss.detach()`` then
    was the very tensor object returned as ``loss``, and marking it non-differentiable detached the loss."""
    _check_compiled_equals_eager("BertForMaskedLM", "inductor", sr_weight=0.0, prediction="argmax")
