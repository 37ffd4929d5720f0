"""The native CPU backend against what a CPU user would pick instead (issue 10's table), one process per case.

Every case is one forward+backward of the generator head at N×E hidden states and a V-token vocabulary:
the true-negative objective (Gumbel-max sample, hard correction, SR) or plain cross-entropy.  Cases run in
rounds, each case in its own fresh process, interleaved (round 1: every case, round 2: every case, ...), so a
noisy shared machine slows all of them alike; a case's time is the median over rounds, after one warm-up
call in its process (compilation happens there).  Peak extra memory is the peak resident set during the
timed call above the resident set just before it (sampled every millisecond by a thread).

    python benchmarks/cpu_peers.py                          # N=2048, E=256, V=30522, fp32 + bf16, 3 rounds
    python benchmarks/cpu_peers.py --rounds 1 --n 256 --vocab 3000 --out /tmp/b   # a quick look

Writes ``cpu_peers.json``, ``cpu_peers.md`` (the table) and ``cpu_peers.png`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

# name -> (implementation, objective, dtype); "floor" is the three matmuls of any exact forward+backward
CASES = {
    "matmuls alone (floor)": ("floor", "ce", "float32"),
    "eager PyTorch, TN": ("eager", "tn", "float32"),
    "torch.compile(eager), TN": ("compiled", "tn", "float32"),
    "tnops torch backend, TN": ("torch", "tn", "float32"),
    "tnops native, TN": ("native", "tn", "float32"),
    "tnops native, TN, bf16": ("native", "tn", "bfloat16"),
    "eager PyTorch, CE": ("eager", "ce", "float32"),
    "torch.compile(eager), CE": ("compiled", "ce", "float32"),
    "F.linear_cross_entropy, CE": ("torch-linear-ce", "ce", "float32"),
    "Cut Cross-Entropy (torch_compile), CE": ("cce", "ce", "float32"),
    "tnops torch backend, CE": ("torch", "ce", "float32"),
    "tnops native, CE": ("native", "ce", "float32"),
    "tnops native, CE, bf16": ("native", "ce", "bfloat16"),
}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _loss_fn(impl: str, objective: str, n: int, vocab: int, width: int, dtype_name: str):
    """The zero-argument forward+backward of a case, or None when it cannot run here."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).parent))
    import cases

    import tnops

    dtype = getattr(torch, dtype_name)
    hidden, weight, bias, labels, table = cases.make_inputs(n, vocab, width, "cpu", dtype, objective == "tn")
    kw = cases.true_negative_kwargs(table) if objective == "tn" else {}
    if impl == "floor":
        h, w = hidden.detach(), weight.detach()

        def floor():
            z = torch.addmm(bias.detach(), h, w.T)
            return z @ w, z.T @ h
        return floor
    if impl in ("torch", "native"):
        return lambda: tnops.linear_mlm_loss(hidden, weight, labels, bias=bias, backend=impl, **kw).loss.backward()
    if impl in ("eager", "compiled"):
        if objective == "tn":
            def eager():
                return cases.eager_true_negative(hidden, weight, bias, labels, table)
        else:
            def eager():
                return F.cross_entropy(F.linear(hidden, weight, bias).float(), labels)
        fn = torch.compile(eager) if impl == "compiled" else eager
        return lambda: fn().backward()
    if impl == "torch-linear-ce":
        if not cases.has_torch_linear_ce():
            return None
        return lambda: F.linear_cross_entropy(hidden, weight, labels, linear_bias=bias,
                                              options=torch.nn.LinearCrossEntropyOptions()).backward()
    if impl == "cce":
        try:
            from cut_cross_entropy import linear_cross_entropy
        except ImportError:
            return None
        return lambda: linear_cross_entropy(hidden, weight, labels, impl="torch_compile").backward()  # no bias
    raise ValueError(impl)


def run_case(impl, objective, n, vocab, width, dtype_name) -> dict | None:
    """In this process: one warm-up call, then one timed call with its peak resident set."""
    fn = _loss_fn(impl, objective, n, vocab, width, dtype_name)
    if fn is None:
        return None
    fn()
    base, peak, done = _rss(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    return {"seconds": seconds, "extra_mb": max(max(peak[0], _rss()) - base, 0) / 2**20}


def table_markdown(results: dict, info: dict) -> str:
    def get(name):
        return results.get(name) or {}
    floor = get("matmuls alone (floor)").get("seconds")
    peers = {"tn": ("torch.compile(eager), TN", "eager PyTorch, TN"),
             "ce": ("torch.compile(eager), CE", "Cut Cross-Entropy (torch_compile), CE")}
    lines = [f"N={info['n']}, E={info['width']}, V={info['vocab']}, forward+backward, {info['threads']} threads, "
             f"median of {info['rounds']} interleaved rounds, {info['date']}", "",
             "| implementation | time | × floor | × torch.compile | × 2nd peer | peak extra memory "
             "| memory × compiled |",
             "|---|---|---|---|---|---|---|"]
    for name, (_, objective, _) in CASES.items():
        r = get(name)
        if not r:
            lines.append(f"| {name} | n/a | | | | | |")
            continue
        compiled, other = (get(p) for p in peers[objective])
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else ""
        lines.append(f"| {name} | {r['seconds']:.3f} s | {ratio(r['seconds'], floor)} | "
                     f"{ratio(r['seconds'], compiled.get('seconds'))} | {ratio(r['seconds'], other.get('seconds'))} | "
                     f"{r['extra_mb']:.0f} MB | {ratio(r['extra_mb'], compiled.get('extra_mb'))} |")
    lines += ["", "× torch.compile / × 2nd peer: time divided by that of torch.compile of the eager objective, "
              "and by eager PyTorch (TN rows) or Cut Cross-Entropy (CE rows), all in the same run."]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in CASES if results.get(n)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.5), sharey=True)
    colors = ["tab:green" if "tnops native" in n else "tab:gray" if "floor" in n else "tab:blue" for n in names]
    axes[0].barh(names, [results[n]["seconds"] for n in names], color=colors)
    axes[0].set_xlabel("seconds (forward + backward)")
    axes[1].barh(names, [results[n]["extra_mb"] for n in names], color=colors)
    axes[1].set_xlabel("peak extra memory (MB)")
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="subset of case names")
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(*CASES[args.case][:2], args.n, args.vocab, args.width, CASES[args.case][2])))
        return {}
    from tqdm import tqdm

    samples: dict = {name: [] for name in args.cases}
    with tqdm(total=args.rounds * len(args.cases), desc="cases") as bar:
        for _ in range(args.rounds):
            for name in args.cases:
                bar.set_postfix_str(name)
                proc = subprocess.run([sys.executable, __file__, "--case", name, "--n", str(args.n), "--vocab",
                                       str(args.vocab), "--width", str(args.width)], capture_output=True, text=True)
                last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "null"
                if proc.returncode != 0:
                    print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                elif last != "null":
                    samples[name].append(json.loads(last))
                bar.update()
    results = {}
    for name, runs in samples.items():
        if runs:
            results[name] = {"seconds": sorted(r["seconds"] for r in runs)[len(runs) // 2],
                             "extra_mb": sorted(r["extra_mb"] for r in runs)[len(runs) // 2]}
    import torch
    info = {"n": args.n, "vocab": args.vocab, "width": args.width, "rounds": args.rounds,
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_peers.json").write_text(json.dumps({"info": info, "results": results}, indent=2))
    markdown = table_markdown(results, info)
    (out / "cpu_peers.md").write_text(markdown)
    plot(results, out / "cpu_peers.png")
    print(markdown)
    return results


if __name__ == "__main__":
    main()
