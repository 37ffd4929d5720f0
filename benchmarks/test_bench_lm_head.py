"""The generator-head benchmark suite: one pytest-benchmark test per case, every case in its own process.

    pytest benchmarks/ --benchmark-json=OUT.json                       # shape a_bert, fp32, fwd+bwd, CE and TN
    pytest benchmarks/ --bench-shapes a_bert,b_xlmr,c_base --bench-dtypes fp32,bf16 -m "fp32 or tnops_native or floor"
    python benchmarks/report.py OUT.json --out DIR                     # markdown tables and PNG plots

The cases (shapes, providers, objectives, modes, dtypes) are described in ``cases.py``.

How the project's rule for timings is kept (ratios of one run, cases interleaved, each case in its own process, so
a case that compiles or allocates cannot change another's time or memory): pytest-benchmark would time every test
in the pytest process, one after the other.  Here a session fixture (``conftest.bench_results``) first runs the
whole selection through ``runner.py``: one long-lived process per case (its first call, compilation included,
is the warm-up and is checked against a float64 reference), then ``--bench-rounds`` rounds in which each process
in turn makes one timed call (``--bench-iterations`` calls on CUDA).  Each test then hands its case's per-round
times to pytest-benchmark through ``benchmark.pedantic`` with a timer that plays them back, so the JSON's
``stats`` (min, median, IQR, ...) are those of the interleaved rounds, and ``extra_info`` carries the rest.

The compromises: the per-round times are measured before the tests run, so the duration pytest reports for a test
is not the time it took; the play-back sets pytest-benchmark's private ``_timer`` attribute (there is no public
way to hand it times measured elsewhere); and all processes of one shape stay resident until its rounds end,
each holding its inputs (about ``V·E·4`` bytes and the runtime, ~0.6 GB per case at V=250002).
"""
from __future__ import annotations

import statistics

import cases
import pytest


class PlayBack:
    """A pytest-benchmark timer returning clock readings whose consecutive (start, end) pairs span ``times``."""

    __name__ = "interleaved_process_rounds"  # what pytest-benchmark records as the timer

    def __init__(self, times):
        self.times, self.now, self.started = iter(times), 0.0, False

    def __call__(self) -> float:
        if self.started:
            self.now += next(self.times)
        self.started = not self.started
        return self.now


def extra_info(result, floor) -> dict:
    """The ``extra_info`` of a measured case: environment, case, median, tokens/s, FLOP/s, × floor, memory."""
    case = result.case
    n, width, vocab, about = cases.SHAPES[case.shape]
    median = statistics.median(result.times)
    floor_median = statistics.median(floor.times) if floor is not None and floor.times else None
    return {**result.env, "case": case.id, "label": case.label, "shape": case.shape, "shape_about": about,
            "N": n, "E": width, "V": vocab, "dtype": case.dtype, "mode": case.mode, "objective": case.objective,
            "provider": case.provider, "rounds": len(result.times), "times_s": result.times, "median_s": median,
            "tokens_per_s": n / median, "flop_per_s": case.flop / median, "floor_s": floor_median,
            "x_floor": median / floor_median if floor_median else None,
            "peak_extra_mb": statistics.median(result.peak_mb), "peak_extra_mb_rounds": result.peak_mb,
            "first_call_s": result.first_call_s, "check_errors": result.check_errors, "round_starts": result.started}


def test_lm_head(benchmark, case_id, bench_results):
    case = cases.Case.from_id(case_id)
    result = bench_results[case.id]
    if result.status == "skipped":
        pytest.skip(result.reason)
    if result.status != "ok":
        pytest.fail(f"{case.id}: {result.reason}", pytrace=False)
    floor = bench_results.get(case.floor.id)
    benchmark.group = f"{case.shape} {case.dtype} {case.mode}"
    benchmark.extra_info.update(extra_info(result, floor))
    if not result.times:
        pytest.skip("--bench-rounds 0: set up and checked, not timed")
    benchmark._timer = PlayBack(result.times)  # private: see the module docstring
    benchmark.pedantic(lambda: None, rounds=len(result.times), iterations=1, warmup_rounds=0)
