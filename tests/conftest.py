"""Shared test setup.  Triton runs in its CPU interpreter unless TNOPS_TEST_GPU=1 (set before triton loads)."""
import os

if os.environ.get("TNOPS_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def table_from_pairs(pairs, vocab_size):
    """A SynonymTable holding exactly the directed ``(gold, synonym)`` pairs given."""
    from tnops import SynonymTable

    rows = [sorted({b for a, b in pairs if a == r and b != r}) for r in range(vocab_size)]
    offsets = torch.tensor([0] + [len(r) for r in rows], dtype=torch.int64).cumsum(0).to(torch.int32)
    ids = torch.tensor([i for r in rows for i in r], dtype=torch.int32)
    return SynonymTable(offsets, ids)


@pytest.fixture
def make_table():
    return table_from_pairs


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
