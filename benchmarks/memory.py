"""Peak extra memory and time of one forward+backward of the MLM loss, per implementation (CPU or CUDA).

Each case runs in a fresh subprocess so peaks do not mix.  On CPU the figure is the growth of the peak
resident set (``ru_maxrss``) above the resident set just before the loss, with inputs already allocated;
on CUDA it is ``torch.cuda.max_memory_allocated`` above the allocation before the loss.  Ratios against
the eager reference of the same run are what to read, not absolute numbers.

    python benchmarks/memory.py                       # N=4096, V=30522, E=256, fp32 (the issue's shape)
    python benchmarks/memory.py --n 2048 --out benchmarks/out
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "reference (eager, HC+SR+sample)": ("reference", True),
    "tnops (chunked/fused, HC+SR+sample)": ("tnops", True),
    "reference (eager, plain CE)": ("reference", False),
    "tnops (chunked/fused, plain CE)": ("tnops", False),
    "torch F.linear_cross_entropy (chunked, plain CE)": ("peer", False),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(impl: str, true_negative: bool, n: int, vocab: int, width: int, device: str,
             dtype: str = "float32") -> dict:
    import torch
    import torch.nn.functional as F

    import tnops
    from tnops import reference

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    hidden = torch.randn(n, width, device=device, dtype=dt, requires_grad=True)
    weight = (torch.randn(vocab, width, device=device) * width**-0.5).to(dt).requires_grad_()
    bias = torch.zeros(vocab, device=device, dtype=dt, requires_grad=True)
    labels = torch.randint(0, vocab, (n,), device=device)
    table = None
    if true_negative:
        pairs = torch.randint(0, vocab, (2, 20 * vocab))
        table = tnops.SynonymTable.from_pairs(pairs[0], pairs[1], vocab).to(device)
    kw = dict(synonyms=table, prediction="sample", seed=1, sr_weight=0.5) if true_negative else {}
    if impl == "reference":
        fn = lambda: reference.linear_mlm_loss(hidden, weight, labels, bias=bias, **kw).loss
    elif impl == "tnops":
        os.environ.setdefault("TNOPS_BACKEND", "triton" if device == "cuda" else "torch")
        fn = lambda: tnops.linear_mlm_loss(hidden, weight, labels, bias=bias, **kw).loss
    else:
        fn = lambda: F.linear_cross_entropy(hidden, weight, labels, linear_bias=bias,
                                            options=torch.nn.LinearCrossEntropyOptions())
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    start = time.perf_counter()
    fn().backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": time.perf_counter() - start, "extra_mb": max(peak - base, 0) / 2**20}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:  # child process: one measurement, printed as JSON
        impl, tn = CASES[args.case]
        print(json.dumps(run_case(impl, tn, args.n, args.vocab, args.width, args.device, args.dtype)))
        return {}
    results = {}
    for name in CASES:
        cmd = [sys.executable, __file__, "--case", name, "--n", str(args.n), "--vocab", str(args.vocab),
               "--width", str(args.width), "--device", args.device, "--dtype", args.dtype]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:52s} {results[name]['seconds']:7.2f} s {results[name]['extra_mb']:9.0f} MB", flush=True)
    report = {"shape": {"N": args.n, "V": args.vocab, "E": args.width, "dtype": args.dtype, "device": args.device},
              "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"memory_{args.device}_{args.dtype}_N{args.n}_E{args.width}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    _plot(report, args.out / f"{stem}.png")
    ref = results["reference (eager, HC+SR+sample)"]["extra_mb"]
    ours = results["tnops (chunked/fused, HC+SR+sample)"]["extra_mb"]
    print(f"chunked / reference peak memory (true-negative objective): {ours / ref:.3f}")
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["results"])
    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(12, 4))
    ax_mem.barh(names, [report["results"][k]["extra_mb"] for k in names], color="tab:blue")
    ax_mem.set_xlabel("peak extra memory (MB)")
    ax_time.barh(names, [report["results"][k]["seconds"] for k in names], color="tab:orange")
    ax_time.set_xlabel("forward + backward (s)")
    ax_time.set_yticklabels([])
    s = report["shape"]
    fig.suptitle(f"MLM loss, N={s['N']} V={s['V']} E={s['E']} {s['dtype']} on {s['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
