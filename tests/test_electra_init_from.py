"""Continued pre-training (``electra-pretrain --init-from DIR [--generator-from DIR]``, issue 11 item 3), offline on
CPU: a checkpoint the trainer itself exported is loaded exactly, its held-out evaluation at step 0 equals the
exporting run's last one, a discriminator alone gets a fresh generator sharing its embeddings, the sizes come from
the checkpoint and the recipe from the preset, the tokenizer from beside the weights, and a hand-made Danish cased
checkpoint trains with a MyThes table built for its vocabulary; bad directories are errors naming the flag."""
import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch

import tnops
from electra import pretrain, trainer
from electra.dataset import build_dataset
from electra.tokenizer import load_tokenizer

SEQ = 64
DANISH_THESAURUS = Path("/usr/share/mythes/th_da_DK.dat")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A WordNet table, the tokenized built-in corpus and a 3-step run exported to ``run/final``."""
    root = tmp_path_factory.mktemp("init_from")
    tokenizer = load_tokenizer()
    tnops.SynonymTable.from_wordnet(tokenizer, progress=False).save(root / "synonyms.pt")
    build_dataset(None, tokenizer, SEQ, root / "cache", 0, progress=False)
    pretrain.train(pretrain.parse_args(args_for(root, root / "run", "--max-steps", "3")))
    return root


def args_for(root, out, *extra):
    return ["--preset", "tiny", "--max-seq-length", str(SEQ), "--batch-size", "8", "--synonyms",
            str(root / "synonyms.pt"), "--cache-dir", str(root / "cache"), "--output-dir", str(out),
            "--no-progress", "--eval-every", "1000", "--eval-batches", "2", *extra]


def setup(root, out, *extra):
    return trainer.setup_run(pretrain.parse_args(args_for(root, out, *extra)))


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def shares_embeddings(model) -> bool:
    embeddings = model.discriminator.electra.embeddings
    return (model.generator.electra.embeddings is embeddings
            and model.generator.generator_lm_head.weight is embeddings.word_embeddings.weight)


def test_continues_from_both_halves_with_the_checkpoints_evaluation(export, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    final = export / "run" / "final"
    flags = ("--init-from", str(final / "discriminator"), "--generator-from", str(final / "generator"))
    run = setup(export, tmp_path / "setup", *flags)
    assert same_tensors(run.model.discriminator.state_dict(),
                        AutoModelForPreTraining.from_pretrained(final / "discriminator").state_dict())
    assert same_tensors(run.model.generator.state_dict(),
                        AutoModelForMaskedLM.from_pretrained(final / "generator").state_dict())
    assert shares_embeddings(run.model)
    assert Path(run.tokenizer.name_or_path) == (final / "discriminator").resolve()  # found beside the weights
    # The continued run's step 0 is the held-out evaluation of the loaded weights: the exporting run's last
    # evaluation (same batches, masks and samples), then training goes on from step 1.
    out = tmp_path / "continued"
    pretrain.train(pretrain.parse_args(args_for(export, out, "--max-steps", "2", *flags)))
    exported = json.loads((export / "run" / "history.json").read_text())[-1]["eval"]
    history = json.loads((out / "history.json").read_text())
    assert history[0]["step"] == 0 and history[0]["init_from"] == str(final / "discriminator")
    assert history[0]["eval"] == pytest.approx(exported, rel=1e-6, abs=1e-7)
    assert [r["step"] for r in history[1:]] == [1, 2] and all(r["masked"] > 0 for r in history[1:])
    continued = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    loaded = AutoModelForPreTraining.from_pretrained(final / "discriminator").state_dict()
    assert not torch.equal(continued["discriminator.electra.encoder.layer.0.output.dense.weight"],
                           loaded["electra.encoder.layer.0.output.dense.weight"])  # it trained


def test_resume_of_a_continued_run_is_exact(export, tmp_path):
    flags = ("--init-from", str(export / "run" / "final" / "discriminator"), "--max-steps", "2")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    pretrain.train(pretrain.parse_args(args_for(export, whole, *flags)))
    pretrain.train(pretrain.parse_args(args_for(export, parts, *flags, "--stop-after", "1")))
    pretrain.train(pretrain.parse_args(args_for(export, parts, *flags, "--resume")))
    a, b = (torch.load(out / "checkpoint.pt", weights_only=True) for out in (whole, parts))
    assert same_tensors(a["model"], b["model"])
    assert [r["step"] for r in b["history"]] == [0, 1, 2]  # step 0 evaluated once, not again on resume


def test_discriminator_alone_gets_a_fresh_generator_sharing_its_embeddings(export, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    final = export / "run" / "final"
    # --preset base: the recipe (lr 2e-4, generator at 1/3 width) from the preset, the sizes from the checkpoint.
    run = setup(export, tmp_path / "run", "--init-from", str(final / "discriminator"), "--preset", "base")
    disc, gen = run.model.discriminator, run.model.generator
    exported_disc = AutoModelForPreTraining.from_pretrained(final / "discriminator").state_dict()
    assert same_tensors(disc.state_dict(), exported_disc)
    assert shares_embeddings(run.model)
    assert (run.config.hidden_size, run.config.num_layers, run.config.embedding_size) == (64, 2, 64)
    assert run.config.learning_rate == 2e-4 and run.optimizer.param_groups[0]["initial_lr"] == 2e-4
    assert (gen.config.hidden_size, gen.config.num_attention_heads, gen.config.intermediate_size) == (21, 1, 85)
    assert gen.config.num_hidden_layers == 2 and gen.config.hidden_act == disc.config.hidden_act
    exported_gen = AutoModelForMaskedLM.from_pretrained(final / "generator").state_dict()
    assert exported_gen["generator_predictions.dense.weight"].shape[1] == 16  # the export's own ¼-width one
    params = {id(p) for group in run.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in params for p in gen.parameters())  # the fresh generator is trained too
    summary = pretrain.train(pretrain.parse_args(args_for(export, tmp_path / "train", "--max-steps", "1",
                                                          "--init-from", str(final / "discriminator"))))
    assert summary["finished"] and summary["history"][0]["step"] == 0


def test_tokenizer_beside_the_weights_else_the_flag(export, tmp_path):
    bare = tmp_path / "bare"  # weights and config only: the tokenizer comes from --tokenizer (default: BERT's)
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(export / "run" / "final" / "discriminator" / name, bare / name)
    run = setup(export, tmp_path / "run", "--init-from", str(bare))
    assert len(run.tokenizer) == 30522 and run.config.vocab_size == 30522
    danish = danish_tokenizer(tmp_path / "da")
    with pytest.raises(ValueError, match=r"^--init-from: .* 30522 tokens but its tokenizer"):
        setup(export, tmp_path / "run", "--init-from", str(bare), "--tokenizer", str(danish))
    with pytest.raises(ValueError, match=r"^--tokenizer: .* differs from the tokenizer saved beside --init-from"):
        setup(export, tmp_path / "run", "--init-from", str(export / "run" / "final" / "discriminator"),
              "--tokenizer", str(danish))


def test_bad_directories_are_errors_naming_the_flag(export, tmp_path, capsys):
    from transformers import BertConfig, BertForMaskedLM, ElectraConfig, ElectraForMaskedLM

    final = export / "run" / "final"
    disc, gen = str(final / "discriminator"), str(final / "generator")
    cases = [
        (("--init-from", str(tmp_path / "missing")), FileNotFoundError, r"^--init-from: no such directory"),
        (("--init-from", disc, "--generator-from", str(tmp_path / "missing")), FileNotFoundError,
         r"^--generator-from: no such directory"),
        (("--init-from", str(final)), ValueError, r"^--init-from: .* \(no config\.json\); .*final/discriminator"),
        (("--init-from", gen), ValueError, r"^--init-from: .* is not an ElectraForPreTraining .* --generator-from\?"),
        (("--init-from", disc, "--generator-from", disc), ValueError,
         r"^--generator-from: .* is not an ElectraForMaskedLM .* --init-from\?"),
    ]
    bert = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
                               intermediate_size=32)).save_pretrained(bert)
    cases.append((("--init-from", str(bert)), ValueError, r"^--init-from: .* not an ELECTRA checkpoint .*'bert'"))
    small_vocab = tmp_path / "small_vocab"
    ElectraForMaskedLM(ElectraConfig(vocab_size=1000, embedding_size=64, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=1, intermediate_size=64)).save_pretrained(small_vocab)
    cases.append((("--init-from", disc, "--generator-from", str(small_vocab)), ValueError,
                  r"^--generator-from: .* vocab_size 1000, the discriminator of --init-from 30522"))
    swapped = tmp_path / "swapped"  # the same sizes, but another vocabulary saved beside it
    shutil.copytree(gen, swapped)
    spec = json.loads((swapped / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["the"], vocab["of"] = vocab["of"], vocab["the"]
    (swapped / "tokenizer.json").write_text(json.dumps(spec))
    cases.append((("--init-from", disc, "--generator-from", str(swapped)), ValueError,
                  r"^--generator-from: the vocabulary saved in .* differs from the one of --init-from"))
    for flags, error, message in cases:
        with pytest.raises(error, match=message):
            setup(export, tmp_path / "run", *flags)
    assert pretrain.main(args_for(export, tmp_path / "run", "--init-from", str(tmp_path / "missing"))) == 2
    assert "electra-pretrain: error: --init-from: no such directory" in capsys.readouterr().err
    # a generator alone is a pretrained generator for a fresh discriminator (issue 15), no longer an error
    assert pretrain.parse_args(["--generator-from", gen]).generator_from == gen


# ------------------------------------------------------------------------------ a Danish cased checkpoint
SUBJECTS = ["Manden", "Kvinden", "Barnet", "Hunden", "Damen", "Personen"]
VERBS = ["ser", "køber", "finder", "elsker"]
ADJECTIVES = ["stor", "smuk", "pæn", "hurtig", "hastig", "gammel", "ny", "frisk", "god", "lille"]
OBJECTS = ["hus", "bil", "vogn", "bog", "båd", "hjem"]


def danish_sentences() -> list[str]:
    return [f"{s} {v} en {a} {o} på vejen." for s, v, a, o in itertools.product(SUBJECTS, VERBS, ADJECTIVES, OBJECTS)]


def danish_tokenizer(directory: Path) -> Path:
    """A cased WordPiece vocabulary trained on Danish sentences, saved as a BERT tokenizer."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    wordpiece = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    wordpiece.train_from_iterator(danish_sentences(), vocab_size=400, show_progress=False,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    BertTokenizerFast(vocab=wordpiece.get_vocab(), do_lower_case=False, strip_accents=False).save_pretrained(directory)
    return directory


@pytest.mark.skipif(not DANISH_THESAURUS.is_file(), reason="the Danish MyThes thesaurus (mythes-da) is not installed")
def test_danish_cased_checkpoint_with_a_mythes_table(tmp_path):
    from transformers import ElectraConfig, ElectraForPreTraining

    checkpoint = danish_tokenizer(tmp_path / "danish-electra")  # a checkpoint this trainer did not write
    tokenizer = load_tokenizer(str(checkpoint))
    assert tokenizer.tokenize("Manden køber en smuk båd") == ["Manden", "køber", "en", "smuk", "båd"]
    torch.manual_seed(0)
    model = ElectraForPreTraining(ElectraConfig(vocab_size=len(tokenizer), embedding_size=32, hidden_size=32,
                                                num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                                max_position_embeddings=SEQ, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(checkpoint)
    corpus = tmp_path / "da.txt"
    sentences = danish_sentences()
    corpus.write_text("\n\n".join(" ".join(sentences[i:i + 6]) for i in range(0, len(sentences), 6)), "utf-8")
    common = ["--init-from", str(checkpoint), "--corpus", str(corpus), "--synonyms", f"mythes:{DANISH_THESAURUS}",
              "--cache-dir", str(tmp_path / "cache"), "--batch-size", "8", "--no-progress", "--eval-batches", "1"]
    with pytest.raises(ValueError, match=r"^--max-seq-length: 128 is longer than the --init-from checkpoint's"):
        trainer.setup_run(pretrain.parse_args([*common, "--output-dir", str(tmp_path / "long")]))
    out = tmp_path / "run"
    run = trainer.setup_run(pretrain.parse_args([*common, "--output-dir", str(out), "--max-seq-length", str(SEQ)]))
    assert same_tensors(run.model.discriminator.state_dict(), model.state_dict())
    table = run.model.synonyms
    assert table.build_record["source"] == "mythes" and table.build_record["vocabulary"]["lowercase"] is False
    assert table.vocab_size == len(tokenizer) and table.num_keys > 0
    smuk = table.synonyms(tokenizer.convert_tokens_to_ids("smuk"))
    assert "pæn" in tokenizer.convert_ids_to_tokens(smuk)
    tnops.SynonymTable.load(out / "synonyms.pt", vocab=tokenizer)  # cached for this vocabulary
    summary = pretrain.train(pretrain.parse_args([*common, "--output-dir", str(out), "--max-seq-length", str(SEQ),
                                                  "--max-steps", "2"]))
    assert summary["finished"] and [r["step"] for r in summary["history"]] == [0, 1, 2]
    assert summary["history"][1]["masked"] > 0
