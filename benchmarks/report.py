"""Markdown tables and PNG plots of a benchmark run (the JSON of ``pytest benchmarks/ --benchmark-json=...``).

    python benchmarks/report.py benchmarks/out/cpu.json --out benchmarks/out

Prints one table per shape and writes it to ``OUT/report.md``, with one plot per shape, ``OUT/<json stem>_<shape>.png``
(time and peak extra memory per case, the × floor ratio beside each bar).  Columns: median time over the
interleaved rounds; × floor, the median over the median of the floor of the same shape, dtype and mode (the
matmuls alone); × compiled, over ``torch.compile(eager)`` of the same objective, dtype and mode (< 1: faster);
peak extra memory and memory × compiled likewise; tokens/s, N rows over the median.  Every ratio is within one run.
Cases that were skipped or failed have no entry in the JSON and no row.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cases  # noqa: E402

from tnops.cli import ToolArgumentParser, run_tool  # noqa: E402

ORDER = {name: i for i, name in enumerate(cases.PROVIDERS)}


def load_rows(path: Path) -> tuple[list[dict], dict]:
    """The ``extra_info`` of every tnops benchmark in a pytest-benchmark JSON file (with ``median_s`` from its stats)
    and the run's header fields.  ValueError when the file is not such a JSON or holds none."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path}: expected the JSON of pytest --benchmark-json (a 'benchmarks' list)")
    rows = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") or {}
        if "case" in info and "stats" in bench:
            rows.append({**info, "median_s": bench["stats"]["median"]})
    if not rows:
        raise ValueError(f"{path}: no tnops benchmark cases in it (was it written by pytest benchmarks/?)")
    header = {"date": data.get("datetime", "")[:10], "node": data.get("machine_info", {}).get("node", "")}
    return rows, header


def _sort_key(row: dict):
    return (list(cases.DTYPES).index(row["dtype"]), cases.MODES.index(row["mode"]),
            ("floor", *cases.OBJECTIVES).index(row["objective"]), ORDER[row["provider"]])


def _ratio(a, b) -> str:
    return f"{a / b:.2f}" if a and b else ""


def _megabytes(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value >= 1 else f"{value * 1e3:.2f} ms"


def shape_table(rows: list[dict], header: dict) -> str:
    """The markdown table of one shape's rows (one run), with a heading naming shape, device and date."""
    first = rows[0]
    by_key = {(r["dtype"], r["mode"], r["objective"], r["provider"]): r for r in rows}
    lines = [f"### {first['shape']}: N={first['N']}, E={first['E']}, V={first['V']} ({first['shape_about']})", "",
             f"{first['device_name']}, {first['threads']} threads, torch {first['torch']}, tnops {first['tnops']}, "
             f"median of {max(r['rounds'] for r in rows)} interleaved rounds, each case in its own process"
             f"{', ' + header['date'] if header.get('date') else ''}.", "",
             "| case | objective | mode | dtype | median | × floor | × compiled | peak extra MB | memory × compiled "
             "| tokens/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    speedups = []
    for row in sorted(rows, key=_sort_key):
        compiled = by_key.get((row["dtype"], row["mode"], row["objective"], "compiled"))
        floor = by_key.get((row["dtype"], row["mode"], "floor", "floor"))
        x_floor = row["median_s"] / floor["median_s"] if floor else row.get("x_floor")
        objective = "—" if row["objective"] == "floor" else row["objective"].upper()
        lines.append(
            f"| {cases.PROVIDERS[row['provider']][1]} | {objective} | {row['mode']} | {row['dtype']} | "
            f"{_seconds(row['median_s'])} | {f'{x_floor:.2f}' if x_floor else ''} | "
            f"{_ratio(row['median_s'], compiled and compiled['median_s'])} | {_megabytes(row['peak_extra_mb'])} | "
            f"{_ratio(row['peak_extra_mb'], compiled and compiled['peak_extra_mb'])} | "
            f"{row['N'] / row['median_s']:,.0f} |")
        fp32 = by_key.get(("fp32", row["mode"], row["objective"], row["provider"]))
        if row["dtype"] != "fp32" and fp32 and row["provider"] != "floor":
            speedups.append(f"{row['label']} {row['mode']} {fp32['median_s'] / row['median_s']:.2f}×")
    if speedups:
        lines += ["", "Speed-up of half-precision inputs over fp32 (same case otherwise): " + ", ".join(speedups) + "."]
    return "\n".join(lines) + "\n"


def plot_shape(rows: list[dict], path: Path) -> None:
    """Horizontal bars of time and peak extra memory per case of one shape, × floor written beside each time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=_sort_key)
    floors = {(r["dtype"], r["mode"]): r["median_s"] for r in rows if r["provider"] == "floor"}
    names = [f"{r['label']} ({r['dtype']}, {r['mode']})" for r in rows]
    colors = ["tab:gray" if r["provider"] == "floor" else "tab:green" if r["provider"].startswith("tnops")
              else "tab:blue" for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.42 * len(rows) + 1.6), sharey=True)
    left.barh(names, [r["median_s"] for r in rows], color=colors)
    for i, r in enumerate(rows):
        floor = floors.get((r["dtype"], r["mode"]))
        if floor:
            left.annotate(f" {r['median_s'] / floor:.2f}× floor", (r["median_s"], i), va="center", fontsize=8)
    left.set_xlabel("median time per call (s)")
    left.margins(x=0.25)
    right.barh(names, [r["peak_extra_mb"] for r in rows], color=colors)
    right.set_xlabel("peak extra memory (MB)")
    left.invert_yaxis()
    first = rows[0]
    figure.suptitle(f"{first['shape']}: N={first['N']}, E={first['E']}, V={first['V']}, {first['device_name']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(paths: list[Path], out: Path | None) -> str:
    """Tables of every shape of every run in ``paths`` (JSON files; runs are never mixed), and with ``out`` the
    files ``report.md`` and ``<json stem>_<shape>.png`` there.  Returns the markdown."""
    tables, plots = [], []
    for path in paths:
        rows, header = load_rows(path)
        by_shape: dict = defaultdict(list)
        for row in rows:
            by_shape[row["shape"]].append(row)
        for shape, shape_rows in by_shape.items():
            tables.append(shape_table(shape_rows, header))
            plots.append((shape_rows, f"{path.stem}_{shape}.png"))
    markdown = "\n".join(tables)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(markdown)
        for shape_rows, name in plots:
            plot_shape(shape_rows, out / name)
    return markdown


def main(argv=None) -> int:
    parser = ToolArgumentParser(prog="report.py", description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON file(s) of benchmarks/")
    parser.add_argument("--out", type=Path, default=None, help="folder for report.md and the PNG plots")
    args = parser.parse_args(argv)

    def body() -> int:
        print(write_report(args.json, args.out))
        return 0
    return run_tool("report.py", body)


if __name__ == "__main__":
    sys.exit(main())
