"""Peak extra memory and time of one forward+backward of the MLM loss, per implementation (CPU or CUDA).

Each case runs in a fresh subprocess so peaks do not mix.  On CPU the figure is the growth of the peak
resident set (``ru_maxrss``) above the resident set just before the loss, with inputs already allocated;
on CUDA it is ``torch.cuda.max_memory_allocated`` above the allocation before the loss.  Ratios against
eager PyTorch in the same run are what to read, not absolute numbers.

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402

# name -> (implementation in cases.py, true-negative objective?)
CASES = {
    "reference (eager spec, HC+SR+sample)": ("reference", True),
    "eager PyTorch (torch RNG, HC+SR+sample)": ("eager", True),
    "tnops (chunked/fused, HC+SR+sample)": ("tnops", True),
    "eager PyTorch (plain CE)": ("eager", False),
    "tnops (chunked/fused, plain CE)": ("tnops", False),
    "torch F.linear_cross_entropy (chunked, plain CE)": ("torch-linear-ce", False),
}
CUDA_REPEATS = 5


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(impl: str, true_negative: bool, n: int, vocab: int, width: int, device: str,
             dtype: str = "float32") -> dict | None:
    """Seconds and peak extra MB of one forward+backward (CUDA: after a warm-up, median of several)."""
    import torch

    if impl == "tnops" and device == "cuda":  # CPU: the default backend (native when built, else torch)
        os.environ.setdefault("TNOPS_BACKEND", "triton")
    inputs = cases.make_inputs(n, vocab, width, device, getattr(torch, dtype), true_negative)
    fn = cases.loss_fn(impl, true_negative, *inputs)
    if fn is None:
        return None
    if device == "cuda":
        fn().backward()  # compiles the kernels; not measured
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        times = []
        for _ in range(CUDA_REPEATS):
            start = time.perf_counter()
            fn().backward()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        seconds = sorted(times)[len(times) // 2]
        peak = torch.cuda.max_memory_allocated()
    else:  # ru_maxrss only grows, so the one measured call must be the first
        base = _rss_bytes()
        start = time.perf_counter()
        fn().backward()
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "extra_mb": max(peak - base, 0) / 2**20}


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
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result is None:
            print(f"{name:52s} (not available here)", flush=True)
            continue
        results[name] = result
        print(f"{name:52s} {result['seconds']:8.4f} s {result['extra_mb']:9.0f} MB", flush=True)
    report = {"shape": {"N": args.n, "V": args.vocab, "E": args.width, "dtype": args.dtype, "device": args.device},
              "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"memory_{args.device}_{args.dtype}_N{args.n}_E{args.width}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    _plot(report, args.out / f"{stem}.png")
    eager, ours = results["eager PyTorch (torch RNG, HC+SR+sample)"], results["tnops (chunked/fused, HC+SR+sample)"]
    print(f"tnops / eager PyTorch, true-negative objective: time {ours['seconds'] / eager['seconds']:.3f}, "
          f"peak memory {ours['extra_mb'] / max(eager['extra_mb'], 1e-9):.3f}")
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
