"""Shared test setup.  Triton runs in its CPU interpreter only when no CUDA device is present (set before
triton loads; importing torch does not load it); TNOPS_TEST_GPU=1 insists on the real compiler."""
import os

import pytest
import torch

if os.environ.get("TNOPS_TEST_GPU") != "1" and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


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
