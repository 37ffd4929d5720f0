"""Peak memory per rank of the vocabulary-parallel loss (issue 19) at XLM-R's vocabulary, 1, 2 and 4 CPU ranks.

    python benchmarks/vocab_parallel_memory.py [--ranks 1,2,4] [--backends torch,native] [--rows 1024] [--width 256]
                                               [--vocab 250002]

Each (backend, world size) is one ``torch.multiprocessing`` launch of gloo ranks; every rank holds its block of the
LM head (uneven when V does not divide), makes one warm-up call, then one timed forward+backward of
``tnops.linear_mlm_loss(..., process_group=WORLD)`` (Gumbel-max sample, SR 0.5) whose peak resident memory above
the one before the call is sampled every millisecond (benchmarks/worker.py's ``PeakMemory``).  The parameters
themselves (the weight block and its gradient buffer from the warm-up) are resident before the call, so the
number is what the loss adds.  Prints a markdown table.  On a GPU machine: the same with ``torchrun
--nproc-per-node K`` and NCCL; see the README.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _rank(rank, world, rdv, out, rows, width, vocab, backend):
    from worker import PeakMemory

    import tnops

    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, width, generator=generator).requires_grad_()
    labels = torch.randint(0, vocab, (rows,), generator=generator)
    block = [vocab // world + (r < vocab % world) for r in range(world)]
    start = sum(block[:rank])
    weight = (torch.randn(block[rank], width, generator=torch.Generator().manual_seed(1 + rank)) * width**-0.5)
    weight.requires_grad_()

    def call():
        out = tnops.linear_mlm_loss(hidden, weight, labels, prediction="sample", seed=1, sr_weight=0.5,
                                    process_group=dist.group.WORLD, backend=backend)
        out.loss.backward()

    call()
    dist.barrier()
    with PeakMemory("cpu") as memory:
        began = time.perf_counter()
        call()
        seconds = time.perf_counter() - began
    with open(f"{out}.{rank}", "w") as f:
        f.write(f"{block[rank]} {start} {memory.extra_mb:.1f} {seconds:.3f}")
    dist.destroy_process_group()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=250002)
    parser.add_argument("--backends", default="torch,native", help="kernels of the vocabulary-parallel path")
    args = parser.parse_args(argv)
    print(f"N={args.rows}, E={args.width}, V={args.vocab}, fp32, sample + SR 0.5, forward+backward, gloo on CPU\n")
    print("| kernels | ranks | rank | vocabulary block | peak extra MB | seconds |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        for world in (int(w) for w in args.ranks.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "result")
                mp.spawn(_rank, args=(world, os.path.join(tmp, "rdv"), out, args.rows, args.width, args.vocab,
                                      backend), nprocs=world, join=True)
                for rank in range(world):
                    rows, start, mb, seconds = open(f"{out}.{rank}").read().split()
                    print(f"| {backend} | {world} | {rank} | [{start}, {int(start) + int(rows)}) | {mb} | {seconds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
