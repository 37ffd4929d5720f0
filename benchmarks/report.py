"""Markdown tables of one benchmark run, ready for ``benchmarks/RESULTS.md``.

    python benchmarks/report.py benchmarks/out

Reads the pytest-benchmark JSON files (``bench_*.json``, from ``test_bench_mlm.py --benchmark-json``) and the
peak-memory JSON files (``memory_*.json``, from ``memory.py``) in the folder.  Times are medians; ``TFLOP/s``
counts the three LM-head matmuls of forward + backward (``6·N·V·E``), so the fused path, which recomputes
the logits once more, does more work than it is credited with; ``× eager`` is the speed-up over plain
PyTorch of the same objective in the same run (> 1: faster).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def bench_table(path: Path) -> str:
    data = json.loads(path.read_text())
    rows = {}
    for bench in data["benchmarks"]:
        params, info = bench["params"], bench["extra_info"]
        rows[(params["objective"], params["impl"])] = (bench["stats"]["median"], info)
    if not rows:
        return f"{path.name}: no benchmarks\n"
    info = next(iter(rows.values()))[1]
    dtype = info["dtype"].replace("torch.", "")
    title = f"fwd+bwd, N={info['N']} V={info['V']} E={info['E']} {dtype} on {info['device']}"
    lines = [f"**{title}** ({data.get('machine_info', {}).get('node', '')}, {data.get('datetime', '')[:10]})", "",
             "| objective | implementation | median | TFLOP/s | × eager |", "|---|---|---|---|---|"]
    for (objective, impl), (median, info) in sorted(rows.items()):
        eager = rows.get((objective, "eager"))
        speedup = f"{eager[0] / median:.2f}" if eager else "–"
        lines.append(f"| {objective} | {impl} | {median * 1e3:.2f} ms | {info['tflop'] / median:.3g} | {speedup} |")
    return "\n".join(lines) + "\n"


def memory_table(path: Path) -> str:
    report = json.loads(path.read_text())
    shape, results = report["shape"], report["results"]
    eager = {True: results.get("eager PyTorch (torch RNG, HC+SR+sample)"), False: results.get("eager PyTorch (plain "
                                                                                              "CE)")}
    lines = [f"**peak extra memory, N={shape['N']} V={shape['V']} E={shape['E']} {shape['dtype']} on "
             f"{shape['device']}**",
             "", "| implementation | time | peak extra memory | × eager memory |", "|---|---|---|---|"]
    for name, result in results.items():
        base = eager["HC+SR" in name]
        ratio = f"{result['extra_mb'] / base['extra_mb']:.3f}" if base and base["extra_mb"] else "–"
        lines.append(f"| {name} | {result['seconds'] * 1e3:.1f} ms | {result['extra_mb']:.0f} MB | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "benchmarks/out")
    found = False
    for path in sorted(folder.glob("bench_*.json")):
        print(bench_table(path))
        found = True
    for path in sorted(folder.glob("memory_*.json")):
        print(memory_table(path))
        found = True
    if not found:
        print(f"no bench_*.json or memory_*.json in {folder}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
