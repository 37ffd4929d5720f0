"""One seed derivation for the whole ELECTRA package (electra/seeds.py), and nothing else deriving seeds."""
import ast
import hashlib
from pathlib import Path

import numpy as np
import pytest

import electra
from electra.seeds import derive_seed

ELECTRA = Path(electra.__file__).parent


def test_derive_seed_is_blake2b_of_the_named_stream():
    # The batch order kept its derivation: blake2b("tnops-electra-batches:<seed>:<epoch>"), so epochs of
    # existing runs visit the examples in the same order as before the helper existed.
    digest = hashlib.blake2b(b"tnops-electra-batches:3:7", digest_size=8).digest()
    assert derive_seed("batches", 3, 7) == int.from_bytes(digest, "little") & (2**63 - 1)
    assert derive_seed("batches", np.int64(3), 7) == derive_seed("batches", 3, 7)
    assert derive_seed("step", 0, 0) == 8896009610317503030  # pinned: a change here changes every run's masks


def test_streams_are_distinct_and_in_range():
    seeds = {derive_seed(purpose, seed, index) for purpose in ("step", "torch", "batches")
             for seed in range(4) for index in range(50)}
    assert len(seeds) == 3 * 4 * 50 and all(0 <= s < 2**63 for s in seeds)
    # the old styles collided: seed + rank (seed 0 rank 1 = seed 1 rank 0), seed·1000003 + step·7919
    assert derive_seed("torch", 0, 1) != derive_seed("torch", 1, 0)
    assert derive_seed("step", 7919, 0) != derive_seed("step", 0, 1_000_003)


@pytest.mark.parametrize("key", [-1, True, 1.5, "3"])
def test_keys_must_be_non_negative_ints(key):
    with pytest.raises(ValueError, match="keys must be non-negative ints"):
        derive_seed("step", key)


SEEDED_CALLS = {"Random", "manual_seed", "uniform", "gumbel"}  # each takes the seed as its first argument


def _seed_arguments(tree):
    """(line, seed expression) of every seeded call: first argument of SEEDED_CALLS, ``seed=`` of tnops losses."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in SEEDED_CALLS and node.args:
            yield node.lineno, node.args[0]
        if name in ("linear_mlm_loss", "mlm_loss"):
            yield from ((node.lineno, k.value) for k in node.keywords if k.arg == "seed")


def test_every_seed_in_the_package_comes_from_derive_seed():
    found = 0
    for path in sorted(ELECTRA.glob("*.py")):
        source = path.read_text()
        if path.name != "seeds.py":
            assert "blake2b" not in source and "^ _" not in source, f"{path.name} derives a seed of its own"
        for line, argument in _seed_arguments(ast.parse(source)):
            found += 1
            is_derived = isinstance(argument, ast.Call) and getattr(argument.func, "id", "") == "derive_seed"
            assert is_derived, f"{path.name}:{line}: seed {ast.unparse(argument)!r} is not derive_seed(...)"
    assert found >= 8  # packing, eval split, batches, torch, mask select/keep, sampling (model, fn-stats)
