"""The benchmark scripts run end to end on a tiny shape and their report reads what they wrote.

Only that they work is checked here; speed and memory are measured by running them, never asserted.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = {"BENCH_N": "48", "BENCH_V": "500", "BENCH_E": "32"}


def run(args, **env):
    full_env = dict(os.environ, **env)
    full_env.pop("TRITON_INTERPRET", None)  # the benchmarks time the default backend of the device
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=full_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_memory_benchmark_pytest_benchmark_and_report(tmp_path):
    pytest.importorskip("pytest_benchmark")
    out = run(["benchmarks/memory.py", "--n", "48", "--vocab", "500", "--width", "32", "--out", str(tmp_path)])
    assert "tnops / eager PyTorch, true-negative objective" in out
    report = json.loads((tmp_path / "memory_cpu_float32_N48_E32.json").read_text())
    assert {"eager PyTorch (torch RNG, HC+SR+sample)", "tnops (chunked/fused, HC+SR+sample)"} <= set(report["results"])
    assert all(r["seconds"] > 0 and r["extra_mb"] >= 0 for r in report["results"].values())
    assert (tmp_path / "memory_cpu_float32_N48_E32.png").stat().st_size > 5_000
    run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks/test_bench_mlm.py",
         "--benchmark-json", str(tmp_path / "bench_tiny.json")], **TINY)
    tables = run(["benchmarks/report.py", str(tmp_path)])
    assert "N=48 V=500 E=32 float32 on cpu" in tables
    assert "| true-negative | tnops |" in tables and "| true-negative | eager |" in tables
    assert "| tnops (chunked/fused, HC+SR+sample) |" in tables


def test_report_without_results_fails(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/report.py", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 1 and "no bench_*.json or memory_*.json" in done.stderr


def test_cpu_peers_runs_interleaved_cases_and_writes_table_json_and_plot(tmp_path):
    cases = ["matmuls alone (floor)", "eager PyTorch, TN", "tnops torch backend, TN", "tnops native, TN",
             "tnops native, CE, bf16"]
    out = run(["benchmarks/cpu_peers.py", "--rounds", "1", "--n", "32", "--vocab", "300", "--width", "16",
               "--out", str(tmp_path), "--cases", *cases])
    assert "| tnops native, TN |" in out and "| matmuls alone (floor) | " in out
    results = json.loads((tmp_path / "cpu_peers.json").read_text())["results"]
    from tnops import backends

    native = backends.unavailable_reason("native") is None
    expected = set(cases) if native else set(cases) - {"tnops native, TN", "tnops native, CE, bf16"}
    assert expected <= set(results)
    assert all(r["seconds"] > 0 and r["extra_mb"] >= 0 for r in results.values())
    assert (tmp_path / "cpu_peers.png").stat().st_size > 5_000
