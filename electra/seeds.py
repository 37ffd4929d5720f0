"""Every seed of an ELECTRA run, derived in one way from the run's ``--seed``.

A random stream is named by a purpose and integer keys; its seed is 63 bits of
``blake2b("tnops-electra-<purpose>:<key>:<key>...")``.  Streams of different purposes, steps, epochs or
ranks are therefore independent (no ``seed + rank`` or ``seed * a + step * b`` that collide for other
arguments), stable across Python versions and platforms, and a checkpoint's (seed, step) pins them.

The streams of the package:

======================  ==========================  ==========================================
purpose                 keys                        drives
======================  ==========================  ==========================================
``packing``             run seed                    ELECTRA's segment splits and short examples
``eval-split``          run seed                    which packed examples are held out
``batches``             run seed, epoch             the epoch's order of examples
``torch``               run seed, rank              torch's default generator: init and dropout
``step``                run seed, step              the seed given to the model for one step
``evaluation``          run seed                    the seed given to the model for evaluation
``mask-select``         model seed                  which positions are masked (Philox)
``mask-keep``           model seed                  the 15 % of them that keep their token
``sampling``            model seed                  the generator's Gumbel samples
======================  ==========================  ==========================================

"model seed" is the ``seed`` argument of :meth:`ElectraTNForPretraining.forward` (a ``step`` or
``evaluation`` seed in pre-training, ``--seed`` in ``electra-fn-stats``).
"""
from __future__ import annotations

import hashlib
import operator

SEED_BITS = 63  # fits torch.manual_seed, torch.Generator and the signed int64 range alike


def derive_seed(purpose: str, *keys: int) -> int:
    """The seed of the random stream ``purpose`` keyed by ``keys``.

    Args:
        purpose: a name from the module's table, e.g. ``"step"``.
        keys: non-negative ints (bools excluded), most significant first: run seed, then step/epoch/rank.
    Returns:
        int in ``[0, 2^63)``.
    """
    values = []
    for key in keys:
        try:
            value = operator.index(key)  # ints and numpy integers
        except TypeError:
            value = None
        if isinstance(key, bool) or value is None or value < 0:
            raise ValueError(f"derive_seed({purpose!r}): keys must be non-negative ints, got {key!r}")
        values.append(value)
    text = ":".join([f"tnops-electra-{purpose}", *(str(value) for value in values)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << SEED_BITS) - 1)
