"""The benchmark suite (``benchmarks/``) runs every CPU provider at the tiny shape and its report reads the JSON.

Only that it works, checks and interleaves is asserted here; speed and memory are measured by running it, never
asserted.  The reference check and the report's ratios are checked on hand-made cases in this process.
"""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import cases  # noqa: E402
import reference_check  # noqa: E402
import report  # noqa: E402
import runner  # noqa: E402

# one objective per provider: the sampled objective where a provider has it (its check uses its own samples)
SMOKE = ("floor or (tn and (eager or tnops_torch or tnops_native or tnops_triton)) "
         "or (ce and (compiled or linear_ce or cce or liger))")
SMOKE_CASES = {"floor": "floor", "eager": "tn", "compiled": "ce", "linear_ce": "ce", "cce": "ce", "tnops_torch": "tn",
               "tnops_native": "tn", "liger": "ce", "tnops_triton": "tn"}


def test_suite_checks_and_times_every_cpu_provider_interleaved_and_the_report_reads_it(tmp_path):
    pytest.importorskip("pytest_benchmark")
    out = tmp_path / "run.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="300")  # -rs lines whole
    done = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-p", "no:cacheprovider", "-q", "-rs",
                           "--bench-shapes", "tiny", "--bench-device", "cpu", "--bench-rounds", "2",
                           "--bench-setup-jobs", "2", "--bench-no-progress", "-m", SMOKE, "--benchmark-json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    reasons = {p: cases.unavailable(cases.Case("tiny", "fp32", "fwdbwd", objective, p), "cpu")
               for p, objective in SMOKE_CASES.items()}
    expected = {p for p, reason in reasons.items() if reason is None}
    assert {"floor", "eager", "compiled", "tnops_torch", "liger"} - expected == {"liger"}
    assert done.stdout.count("SKIPPED") == len(SMOKE_CASES) - len(expected)
    for reason in filter(None, reasons.values()):  # each skipped case says why
        assert reason[:40] in done.stdout, (reason, done.stdout[-2000:])
    benches = {b["extra_info"]["provider"]: b for b in json.loads(out.read_text())["benchmarks"]}
    assert set(benches) == expected
    floor_median = statistics.median(benches["floor"]["extra_info"]["times_s"])
    for provider, bench in benches.items():
        info = bench["extra_info"]
        assert info["objective"] == SMOKE_CASES[provider] and info["rounds"] == 2 and info["device"] == "cpu"
        # pytest-benchmark's statistics are those of the interleaved rounds, played back
        assert bench["stats"]["data"] == info["times_s"] and bench["stats"]["median"] == info["median_s"]
        assert info["x_floor"] == pytest.approx(info["median_s"] / floor_median)
        assert info["tokens_per_s"] == pytest.approx(64 / info["median_s"])
        assert info["flop_per_s"] == pytest.approx(6 * 64 * 500 * 32 / info["median_s"])
        assert info["peak_extra_mb"] >= 0 and info["first_call_s"] > 0 and info["torch"] == torch.__version__
        if provider != "floor":  # checked against the float64 reference: loss and the gradients it has
            wanted = {"loss", "dh", "dw"} | ({"db"} if provider != "cce" else set())
            assert set(info["check_errors"]) == wanted and max(info["check_errors"].values()) < 1e-4, info
    # each case in its own process, and every case's round 1 before any case's round 2
    assert len({b["extra_info"]["pid"] for b in benches.values()}) == len(benches)
    starts = [b["extra_info"]["round_starts"] for b in benches.values()]
    assert max(s[0] for s in starts) < min(s[1] for s in starts)
    markdown = report.write_report([out], tmp_path / "report")
    assert "### tiny: N=64, E=32, V=500" in markdown
    for provider in benches:
        assert f"| {cases.PROVIDERS[provider][1]} |" in markdown
    assert (tmp_path / "report" / "report.md").read_text() == markdown
    assert (tmp_path / "report" / "run_tiny.png").stat().st_size > 5_000


@pytest.fixture(scope="module")
def tiny_runs():
    """objective -> (case, inputs after one forward+backward, loss, predictions, float64 inputs, full pass) of tnops
    native (else the torch backend) at the tiny shape: made once, corrupted by copy in each test."""
    runs = {}
    for objective in ("ce", "tn"):
        native = cases.Case("tiny", "fp32", "fwdbwd", objective, "tnops_native")
        case = native if cases.unavailable(native, "cpu") is None else cases.Case("tiny", "fp32", "fwdbwd", objective,
                                                                                  "tnops_torch")
        inputs = cases.make_inputs("tiny", "fp32", "cpu", synonyms=True)
        loss, predictions = cases.loss_function(case, inputs, "cpu")()
        loss.backward()
        double = (*(x.detach().double() for x in inputs[:3]), *inputs[3:])
        runs[objective] = (case, inputs, loss.detach(), predictions, double, reference_check.full_pass(double))
    return runs


def _check(run, corrupt=None):
    """``compare`` of a run's summary against the reference, after ``corrupt(loss, predictions, h, w, b)`` (which
    returns the loss and predictions to report and may change the copies' gradients)."""
    case, inputs, loss, predictions, double, full = run
    leaves = [x.detach().clone().requires_grad_() for x in inputs[:3]]
    for leaf, original in zip(leaves, inputs[:3]):
        leaf.grad = original.grad.clone()
    if corrupt is not None:
        loss, predictions = corrupt(loss, predictions, *leaves)
    got = reference_check.summarize(case, loss, predictions, leaves)
    return reference_check.compare(case, got, reference_check.reference_summary(double, full, case.objective,
                                                                                got["predictions"]))


@pytest.mark.parametrize("objective", ["ce", "tn"])
def test_reference_check_passes_a_right_case(tiny_runs, objective):
    errors, failures = _check(tiny_runs[objective])
    assert failures == [] and set(errors) == {"loss", "dh", "dw", "db"} and max(errors.values()) < 1e-5


def _scale_row(tensor, row, factor=1.05):
    with torch.no_grad():
        tensor.grad[row] *= factor


@pytest.mark.parametrize("name, corrupt", [
    ("loss", lambda loss, pred, *leaves: (loss * 1.001, pred)),
    ("dw", lambda loss, pred, h, w, b: (_scale_row(w, 321), (loss, pred))[1]),  # one row of 500, nobody's label
    ("dh", lambda loss, pred, h, w, b: (_scale_row(h, 7), (loss, pred))[1]),
    ("db", lambda loss, pred, h, w, b: (_scale_row(b, 499), (loss, pred))[1]),
    # the loss and gradients of the samples drawn, reported with other samples: caught through HC and SR
    ("loss", lambda loss, pred, *leaves: (loss, torch.roll(pred, 1))),
])
def test_reference_check_catches_a_wrong_loss_gradient_row_or_prediction(tiny_runs, name, corrupt):
    errors, failures = _check(tiny_runs["tn"], corrupt)
    assert any(failure.startswith(f"{name}: relative error") for failure in failures), (errors, failures)


def test_a_case_that_disagrees_with_the_reference_fails_its_benchmark_test_and_is_not_timed():
    import test_bench_lm_head as suite

    case = cases.Case("tiny", "fp32", "fwdbwd", "tn", "eager")
    failed = runner.Result(case, status="failed", reason="disagrees with the float64 reference: dw: relative error 1")
    with pytest.raises(pytest.fail.Exception, match="tiny-fp32-fwdbwd-tn-eager: disagrees with the float64"):
        suite.test_lm_head(None, case.id, {case.id: failed})  # no benchmark fixture: it must not get that far
    skipped = runner.Result(case, status="skipped", reason="not here")
    with pytest.raises(pytest.skip.Exception, match="not here"):
        suite.test_lm_head(None, case.id, {case.id: skipped})


def test_report_ratios_and_table_by_hand(tmp_path):
    def bench(provider, objective, dtype, median, peak):
        return {"stats": {"median": median}, "extra_info": {
            "case": f"a_bert-{dtype}-fwdbwd-{objective}-{provider}", "label": f"{provider} {objective}",
            "shape": "a_bert", "shape_about": "x", "N": 2048, "E": 256, "V": 30522, "dtype": dtype, "mode": "fwdbwd",
            "objective": objective, "provider": provider, "rounds": 3, "median_s": median, "peak_extra_mb": peak,
            "device_name": "cpu X", "threads": 2, "torch": "t", "tnops": "0"}}
    run = tmp_path / "cpu.json"
    run.write_text(json.dumps({"datetime": "2026-12-07T10:00:00", "benchmarks": [
        bench("floor", "floor", "fp32", 2.0, 100.0), bench("compiled", "tn", "fp32", 3.0, 400.0),
        bench("tnops_native", "tn", "fp32", 2.5, 60.0), bench("tnops_native", "tn", "bf16", 1.0, 30.0)]}))
    markdown = report.write_report([run], None)
    # × floor 2.5/2 = 1.25; × compiled 2.5/3 = 0.83; memory × compiled 60/400 = 0.15; tokens/s 2048/2.5 = 819
    assert "| tnops native | TN | fwdbwd | fp32 | 2.500 s | 1.25 | 0.83 | 60 | 0.15 | 819 |" in markdown
    assert "| torch.compile(eager) | TN | fwdbwd | fp32 | 3.000 s | 1.50 | 1.00 | 400 | 1.00 | 683 |" in markdown
    assert "| matmuls alone (floor) | — | fwdbwd | fp32 | 2.000 s | 1.00 |" in markdown
    assert "tnops_native tn fwdbwd 2.50×" in markdown  # bf16 over fp32: 2.5 s / 1.0 s
    assert "2026-12-07" in markdown and "median of 3 interleaved rounds" in markdown


def test_report_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty.json").write_text(json.dumps({"benchmarks": []}))
    (tmp_path / "bad.json").write_text("{")
    for name, message in (("missing.json", "No such file"), ("empty.json", "no tnops benchmark cases"),
                          ("bad.json", "not JSON")):
        assert report.main([str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("report.py: error: ") and err.count("\n") == 1 and message in err, err


def test_rounds_stop_before_they_would_overrun_the_time_limit():
    assert not runner.another_round_overruns(0, 500.0, 100.0, 300.0)  # the first round always runs
    assert not runner.another_round_overruns(1, 150.0, 100.0, 300.0)  # ends at 250 s
    assert runner.another_round_overruns(2, 250.0, 100.0, 300.0)  # would end at 350 s
    assert not runner.another_round_overruns(5, 1e9, 1e9, 0.0)  # no limit
