"""The thin ELECTRA: masking, shared embeddings, losses through tnops, export to transformers."""
import pytest
import torch

import tnops
from electra.config import ElectraTNConfig
from electra.masking import mask_tokens
from electra.modeling import ElectraTNForPretraining

VOCAB = 600
SPECIAL = [0, 100, 101, 102, 103]


def tiny_config(**overrides):
    base = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, embedding_size=16,
                max_position_embeddings=64, max_seq_length=32, dropout=0.0)
    base.update(overrides)
    return ElectraTNConfig.from_preset("tiny", **base)


def batch(b=4, length=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(104, VOCAB, (b, length), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    ids[1, 20:], mask[1, 20:] = 0, 0
    ids[1, 19] = 102
    return ids, mask, torch.zeros_like(ids)


def synonym_table():
    g = torch.Generator().manual_seed(1)
    return tnops.SynonymTable.from_pairs(torch.randint(104, VOCAB, (4000,), generator=g),
                                         torch.randint(104, VOCAB, (4000,), generator=g), VOCAB)


def test_masking_counts_proportions_and_determinism():
    ids = torch.randint(104, 30000, (64, 128))
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    mask[::2, 100:] = 0
    out = mask_tokens(ids, mask, special_token_ids=SPECIAL, mask_token_id=103, seed=3, max_predictions=19)
    n = (mask.bool() & (ids != 101) & (ids != 102)).sum(1)
    expected = (n.double() * 0.15).round().long().clamp(1, 19)
    assert torch.equal(out.selected.sum(1), expected)
    assert not out.selected[ids == 101].any() and not out.selected[ids == 102].any()
    assert not out.selected[mask == 0].any()
    became_mask = (out.input_ids == 103) & out.selected
    assert 0.78 < became_mask.sum() / out.selected.sum() < 0.92  # 85 % [MASK], 15 % unchanged, no random tokens
    assert torch.equal(out.input_ids[out.selected & ~became_mask], ids[out.selected & ~became_mask])
    assert torch.equal(out.input_ids[~out.selected], ids[~out.selected])
    assert torch.equal(out.labels[out.selected], ids[out.selected]) and (out.labels[~out.selected] == -100).all()
    again = mask_tokens(ids, mask, special_token_ids=SPECIAL, mask_token_id=103, seed=3)
    assert torch.equal(again.selected, out.selected)
    # split-invariant: the second half masked with its offset equals the whole batch's second half
    half = mask_tokens(ids[32:], mask[32:], special_token_ids=SPECIAL, mask_token_id=103, seed=3, sequence_offset=32)
    assert torch.equal(half.input_ids, out.input_ids[32:])


def test_masking_errors():
    ids = torch.zeros(2, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"input_ids: expected \[B, L\]"):
        mask_tokens(ids[0], ids[0], special_token_ids=SPECIAL, mask_token_id=103, seed=0)
    with pytest.raises(ValueError, match="attention_mask: expected shape"):
        mask_tokens(ids, ids[:, :4], special_token_ids=SPECIAL, mask_token_id=103, seed=0)
    with pytest.raises(ValueError, match="mask_prob"):
        mask_tokens(ids, ids, special_token_ids=SPECIAL, mask_token_id=103, seed=0, mask_prob=1.5)


def test_shared_embeddings_and_tied_output():
    model = ElectraTNForPretraining(tiny_config(), synonym_table())
    gen, disc = model.generator.electra, model.discriminator.electra
    assert gen.embeddings is disc.embeddings
    for name, param in disc.embeddings.named_parameters():
        assert dict(gen.embeddings.named_parameters())[name] is param
    assert model.generator.generator_lm_head.weight is disc.embeddings.word_embeddings.weight
    assert hasattr(gen, "embeddings_project")  # each half keeps its own projection
    assert gen.embeddings_project is not getattr(disc, "embeddings_project", None)


def test_forward_backward_and_statistics():
    model = ElectraTNForPretraining(tiny_config(), synonym_table())
    ids, mask, types = batch()
    out = model(ids, mask, types, seed=5)
    cfg = model.config
    total = out.gen_loss + cfg.disc_weight * out.disc_loss + cfg.sr_weight * out.sr_loss
    torch.testing.assert_close(out.loss, total)
    out.loss.backward()
    assert model.word_embeddings.grad.abs().sum() > 0
    assert model.generator.generator_lm_head.bias.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in model.named_parameters() if "pooler" not in n)
    assert set(out.stats) == {"masked", "corrected", "replaced_rate", "gen_accuracy", "disc_accuracy"}


def test_fused_loss_equals_reference_backend(monkeypatch):
    model = ElectraTNForPretraining(tiny_config(sentence_sr_weight=0.5), synonym_table()).eval()
    ids, mask, types = batch()
    fused = model(ids, mask, types, seed=7)
    monkeypatch.setenv("TNOPS_BACKEND", "reference")
    ref = model(ids, mask, types, seed=7)
    for name in ("loss", "gen_loss", "disc_loss", "sr_loss", "sentence_sr_loss"):
        torch.testing.assert_close(getattr(fused, name), getattr(ref, name), rtol=1e-5, atol=1e-6)
    assert fused.sentence_sr_loss > 0


def test_hard_correction_flips_discriminator_labels():
    """A table listing every (gold, sample) pair corrects every replaced position: all labelled original."""
    config = tiny_config()
    model = ElectraTNForPretraining(config, tnops.SynonymTable.from_pairs([1], [2], VOCAB)).eval()
    ids, mask, types = batch()
    first = model(ids, mask, types, seed=11)
    replaced = first.corrupted_ids != ids
    assert replaced.any() and first.disc_labels[replaced].all()
    table = tnops.SynonymTable.from_pairs(ids[replaced], first.corrupted_ids[replaced], VOCAB)
    model.synonyms = table
    second = model(ids, mask, types, seed=11)
    assert torch.equal(second.corrupted_ids, first.corrupted_ids)
    assert int(second.stats["corrected"]) == int(replaced.sum())
    assert not second.disc_labels.any()
    model.config.hc = False
    assert model(ids, mask, types, seed=11).disc_labels[replaced].all()


def test_export_loads_with_transformers_auto_classes(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    model = ElectraTNForPretraining(tiny_config(), synonym_table()).eval()
    paths = model.save_pretrained(tmp_path)
    disc = AutoModelForPreTraining.from_pretrained(paths["discriminator"]).eval()
    gen = AutoModelForMaskedLM.from_pretrained(paths["generator"]).eval()
    ids, mask, types = batch()
    with torch.no_grad():
        ours = model.discriminator(ids, attention_mask=mask, token_type_ids=types).logits
        torch.testing.assert_close(disc(ids, attention_mask=mask, token_type_ids=types).logits, ours)
        ours_mlm = model.generator(ids, attention_mask=mask, token_type_ids=types).logits
        torch.testing.assert_close(gen(ids, attention_mask=mask, token_type_ids=types).logits, ours_mlm)
    assert gen.generator_lm_head.weight.data_ptr() == gen.electra.embeddings.word_embeddings.weight.data_ptr()
    assert tnops.SynonymTable.load(tmp_path / "synonyms.pt").num_pairs == model.synonyms.num_pairs


def test_config_presets_follow_the_recipe():
    small = ElectraTNConfig.from_preset("small")
    sizes = (small.hidden_size, small.generator_hidden_size, small.embedding_size, small.max_predictions)
    assert sizes == (256, 64, 128, 19)
    base = ElectraTNConfig.from_preset("base")
    assert base.generator_hidden_size == 256 and base.learning_rate == 2e-4 and base.batch_size == 256
    with pytest.raises(ValueError, match="preset: expected one of"):
        ElectraTNConfig.from_preset("huge")
    with pytest.raises(ValueError, match="synonyms: hard correction"):
        ElectraTNForPretraining(tiny_config(), None)


def test_label_smoothing_and_z_loss_reach_the_generator_loss():
    """z_loss adds λ·lse² per kept generator row: at a fresh init lse ≈ log V, so the generator loss rises by
    ≈ λ·(log V)²; label smoothing changes it, and the total stays differentiable."""
    import math

    ids, mask, types = batch()
    losses = {}
    for name, options in (("plain", {}), ("z", dict(z_loss=0.1)), ("smooth", dict(label_smoothing=0.3))):
        torch.manual_seed(0)
        model = ElectraTNForPretraining(tiny_config(**options), synonym_table())
        out = model(ids, mask, types, seed=5)
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        losses[name] = float(out.gen_loss.detach())
    assert losses["z"] - losses["plain"] == pytest.approx(0.1 * math.log(VOCAB) ** 2, rel=0.1), losses
    assert losses["smooth"] != pytest.approx(losses["plain"], rel=1e-4)

