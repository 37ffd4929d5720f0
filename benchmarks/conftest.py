"""Options, markers and the session schedule of the benchmark suite (see ``test_bench_lm_head.py``).

Select cases with ``--bench-shapes``, ``--bench-dtypes``, ``--bench-modes``, ``--bench-objectives`` and
``--bench-providers`` (comma lists), then narrow with ``-m``/``-k``: every case is marked with its shape, dtype,
mode, objective and provider names (``-m "fp32 or tnops_native"``).  The floor of each selected case's shape,
dtype and mode is always measured, selected or not, since every case is reported against it.
"""
from __future__ import annotations

import cases
import pytest

_CHOICES = {"shapes": cases.SHAPES, "dtypes": cases.DTYPES, "modes": cases.MODES, "objectives": cases.OBJECTIVES,
            "providers": cases.PROVIDERS}
_DEFAULTS = {"shapes": "a_bert", "dtypes": "fp32", "modes": "fwdbwd", "objectives": "ce,tn",
             "providers": ",".join(cases.PROVIDERS)}


def pytest_addoption(parser):
    group = parser.getgroup("tnops benchmarks")
    for name, choices in _CHOICES.items():
        group.addoption(f"--bench-{name}", default=_DEFAULTS[name],
                        help=f"comma list of {', '.join(choices)} (default {_DEFAULTS[name]})")
    group.addoption("--bench-device", default=None, choices=("cpu", "cuda"),
                    help="where the cases run (default: cuda when available, else cpu)")
    group.addoption("--bench-rounds", type=int, default=None, help="interleaved timed rounds (default 3 CPU, 10 CUDA)")
    group.addoption("--bench-iterations", type=int, default=None,
                    help="timed calls per round, their mean is the round's time (default 1 CPU, 10 CUDA)")
    group.addoption("--bench-setup-jobs", type=int, default=1,
                    help="case processes setting up at once (before any timing; default 1)")
    group.addoption("--bench-max-time", type=float, default=0.0,
                    help="seconds for the run: each shape gets an equal share of what is left when it starts, and no "
                         "round starts that would end past it (0: no limit; the first round always runs)")
    group.addoption("--bench-timeout", type=float, default=1800.0, help="seconds to wait for one answer of a case")
    group.addoption("--bench-emulated-half", action="store_true",
                    help="run bf16/fp16 cases on a CPU without native half matmuls too (skipped by default)")
    group.addoption("--bench-no-progress", action="store_true", help="no progress bar")


def pytest_configure(config):
    for option, low in (("--bench-rounds", 0), ("--bench-iterations", 1), ("--bench-setup-jobs", 1),
                        ("--bench-max-time", 0), ("--bench-timeout", 1)):
        value = config.getoption(option)
        if value is not None and value < low:
            raise pytest.UsageError(f"{option}: expected a number >= {low}, got {value}")
    for name in _CHOICES:
        _names(config, name)  # a usage error now, not a collection error later
    names = {*cases.SHAPES, *cases.DTYPES, *cases.MODES, *cases.OBJECTIVES, *cases.PROVIDERS, "floor"}
    for name in sorted(names):
        config.addinivalue_line("markers", f"{name}: tnops benchmark cases of {name}")


def _names(config, name: str) -> list[str]:
    values = [v.strip() for v in config.getoption(f"--bench-{name}").split(",") if v.strip()]
    unknown = [v for v in values if v not in _CHOICES[name]]
    if unknown or not values:
        raise pytest.UsageError(f"--bench-{name}: expected a comma list of {', '.join(_CHOICES[name])}, "
                                f"got {config.getoption(f'--bench-{name}')!r}")
    return values


def device(config) -> str:
    import torch

    chosen = config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if chosen == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda: no CUDA device is available")
    return chosen


def pytest_generate_tests(metafunc):
    if "case_id" not in metafunc.fixturenames:
        return
    selected = cases.all_cases(*(_names(metafunc.config, name) for name in _CHOICES))
    params = [pytest.param(case.id, id=case.id, marks=[getattr(pytest.mark, name) for name in dict.fromkeys(
        (case.shape, case.dtype, case.mode, case.objective, case.provider))]) for case in selected]
    metafunc.parametrize("case_id", params)


@pytest.fixture(scope="session")
def bench_results(request):
    """``{case id: runner.Result}`` of every selected case (and the floors they need), measured once per session."""
    import runner

    config = request.config
    where = device(config)
    rounds = config.getoption("--bench-rounds")
    iterations = config.getoption("--bench-iterations")
    rounds = (3 if where == "cpu" else 10) if rounds is None else rounds
    iterations = (1 if where == "cpu" else 10) if iterations is None else iterations
    wanted = [cases.Case.from_id(item.callspec.params["case_id"]) for item in request.session.items
              if "case_id" in getattr(getattr(item, "callspec", None), "params", {})]
    wanted = list(dict.fromkeys([case.floor for case in wanted] + wanted))
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # the progress bar reaches the terminal
        return runner.run(wanted, where, rounds, iterations, config.getoption("--bench-setup-jobs"),
                          config.getoption("--bench-timeout"), not config.getoption("--bench-no-progress"),
                          config.getoption("--bench-max-time"), config.getoption("--bench-emulated-half"))
