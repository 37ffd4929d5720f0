"""Figure-3-style examples of corrected predictions (electra/showcase.py)."""
import pytest
import torch

from electra.showcase import collect_examples, format_example


@pytest.fixture(scope="module")
def tokenizer():
    from electra.tokenizer import load_tokenizer

    return load_tokenizer(None)


def test_examples_show_context_pair_and_listed_synonyms(tokenizer, make_table):
    ids = torch.tensor([tokenizer("the primary reason was that we wanted to stay in the city")["input_ids"]])
    tid = tokenizer.convert_tokens_to_ids
    row = ids[0].tolist()
    positions = torch.tensor([[row.index(tid("primary")), row.index(tid("stay")), row.index(tid("city"))]])
    predictions = torch.tensor([[tid("main"), tid("remain"), tid("town")]])
    table = make_table([(tid("primary"), tid("main")), (tid("primary"), tid("chief")), (tid("stay"), tid("remain"))],
                       len(tokenizer))
    corrected = table.is_synonym(ids.gather(1, positions), predictions)
    assert corrected.tolist() == [[True, True, False]]
    examples = collect_examples(tokenizer, table, ids, positions, predictions, corrected, limit=5)
    assert [(e.gold, e.prediction) for e in examples] == [("primary", "main"), ("stay", "remain")]
    assert examples[0].context.startswith("the [primary] reason was")
    assert examples[0].synonyms == ["main", "chief"]
    line = format_example(examples[1])
    assert "stay → remain" in line and "[stay] in the city" in line and "(listed: remain)" in line
    # one line per distinct pair, across calls that share `seen`
    seen = {(tid("primary"), tid("main"))}
    again = collect_examples(tokenizer, table, ids, positions, predictions, corrected, seen=seen, limit=1)
    assert [(e.gold, e.prediction) for e in again] == [("stay", "remain")]
