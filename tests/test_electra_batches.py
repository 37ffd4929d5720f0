"""ELECTRA batches: a resumable, data-parallel batch order and the held-out batches."""
import pytest
import torch

from electra.batches import BatchStream, eval_batches
from electra.packing import PretrainingSplit


# --------------------------------------------------------------------------------------- batches
def _numbered_split(num_examples=50, length=8):
    """Row i holds i in every position, so a batch's rows are readable."""
    ids = torch.arange(num_examples, dtype=torch.int32)[:, None].expand(num_examples, length).contiguous()
    return PretrainingSplit(ids, torch.ones_like(ids, dtype=torch.int8), torch.zeros_like(ids, dtype=torch.int8))


def _rows(stream, steps):
    return [next(stream).input_ids[:, 0].tolist() for _ in range(steps)]


def test_batch_stream_order_epochs_and_seed():
    split = _numbered_split()
    stream = BatchStream(split, 8, seed=0)
    assert stream.steps_per_epoch == 6
    epoch0 = _rows(stream, 6)
    flat = [i for batch in epoch0 for i in batch]
    assert len(set(flat)) == 48 and all(0 <= i < 50 for i in flat)  # a permutation, tail of 2 dropped
    assert stream.state_dict()["epoch"] == 1 and stream.global_step == 6
    epoch1 = _rows(stream, 6)
    assert epoch1 != epoch0
    assert _rows(BatchStream(split, 8, seed=0), 12) == epoch0 + epoch1
    assert _rows(BatchStream(split, 8, seed=1), 6) != epoch0
    batch = next(BatchStream(split, 8, seed=0))
    assert batch.input_ids.dtype == torch.int64 and batch.input_ids.shape == (8, 8)
    assert torch.equal(batch.input_ids[:, 0], batch.indices) and (batch.epoch, batch.step) == (0, 0)


def test_batch_stream_resume_is_identical():
    split = _numbered_split()
    reference = _rows(BatchStream(split, 8, seed=4), 20)
    stream = BatchStream(split, 8, seed=4)
    _rows(stream, 9)
    state = stream.state_dict()
    resumed = BatchStream(split, 8, seed=4)
    resumed.load_state_dict(state)
    assert _rows(resumed, 11) == reference[9:]
    with pytest.raises(ValueError, match="seed"):
        BatchStream(split, 8, seed=5).load_state_dict(state)
    with pytest.raises(ValueError, match="global_batch_size"):
        BatchStream(split, 4, seed=4).load_state_dict(state)


def test_batch_stream_ranks_partition_the_global_batch():
    split = _numbered_split()
    single = BatchStream(split, 8, seed=2)
    ranks = [BatchStream(split, 8, seed=2, rank=r, world_size=2) for r in range(2)]
    for _ in range(8):
        whole = next(single)
        parts = [next(r) for r in ranks]
        assert [p.global_offset for p in parts] == [0, 4]
        assert torch.equal(torch.cat([p.input_ids for p in parts]), whole.input_ids)
    # State is rank-independent: a world_size=4 run resumes a world_size=1 run.
    resumed = BatchStream(split, 8, seed=2, rank=3, world_size=4)
    resumed.load_state_dict(single.state_dict())
    assert next(resumed).input_ids[:, 0].tolist() == next(single).input_ids[6:, 0].tolist()


def test_batch_stream_errors():
    split = _numbered_split()
    with pytest.raises(ValueError, match="global_batch_size=6.*world_size=4"):
        BatchStream(split, 6, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        BatchStream(split, 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="global_batch_size=64"):
        BatchStream(split, 64)
    with pytest.raises(ValueError, match="global_batch_size"):
        BatchStream(split, 0)
    with pytest.raises(TypeError, match="seed"):
        BatchStream(split, 8, seed=1.5)


def test_eval_batches_cover_the_split_in_order():
    split = _numbered_split(num_examples=10)
    batches = list(eval_batches(split, 4))
    assert [b.input_ids[:, 0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.global_offset for b in batches] == [0, 4, 8]
    with pytest.raises(ValueError, match="batch_size"):
        eval_batches(split, 0)


def test_batch_to_device_keeps_fields():
    batch = next(BatchStream(_numbered_split(), 8, seed=0)).to("cpu")
    assert batch.input_ids.shape == (8, 8) and batch.global_offset == 0
