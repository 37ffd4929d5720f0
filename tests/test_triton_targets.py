"""Issue 20: the Triton path on every GPU a user brings, checked without one.

Tiles per target (a table of expected tiles per capability and dtype against ``config.head_config``), dtype support
per capability, the device guard (mocked CUDA device indices), tensors on two devices refused by name, the safe
default (a launcher that raises: the default dispatch warns once and computes with the torch backend, a named
triton backend raises), and the per-target compile check (slow).
"""
import os
import subprocess
import sys
import warnings

import pytest
import torch

import tnops
from tnops import backends
from tnops.ops import config
from tnops.ops.config import Target

needs_interpreter = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                       reason="runs the kernels on CPU tensors in the interpreter (TRITON_INTERPRET=1)")
E = 768  # the width compile_check builds for (block_e fits it)
FP32_75, HALF_75 = (64, 32, 16, 8), (64, 64, 32, 8)
# (capability, dtype): (forward tiles, backward tiles, num_stages); tiles = (block_n, block_v, block_e, num_warps)
EXPECTED = {
    (75, "float32"): (FP32_75, (64, 64, 16, 8), 2),
    (75, "float16"): (HALF_75, (64, 64, 16, 8), 2),
    (80, "float32"): ((64, 64, 16, 8), (64, 128, 16, 8), 3),
    (80, "bfloat16"): ((64, 128, 64, 8), (128, 128, 16, 8), 3),
    (80, "float16"): ((64, 128, 64, 8), (128, 128, 16, 8), 3),
    (86, "float32"): ((64, 32, 16, 8), (64, 128, 16, 8), 3),
    (86, "bfloat16"): ((64, 128, 64, 8), (128, 128, 16, 8), 3),
    (89, "float32"): ((64, 32, 16, 8), (64, 128, 16, 8), 3),
    (89, "float16"): ((64, 128, 64, 8), (128, 128, 16, 8), 3),
    (90, "float32"): ((64, 64, 16, 8), (64, 128, 16, 8), 3),
    (90, "bfloat16"): ((64, 128, 64, 8), (128, 128, 32, 8), 3),
    (90, "float16"): ((64, 128, 64, 8), (128, 128, 32, 8), 3),
}
LOGITS = {75: (8, 256, 16, 8), 80: (8, 256, 16, 8), 86: (8, 256, 16, 8), 89: (8, 256, 16, 8), 90: (8, 256, 16, 4)}


def tiles(cfg):
    return ((cfg.block_n, cfg.block_v, cfg.block_e, cfg.num_warps),
            (cfg.bwd_block_n, cfg.bwd_block_v, cfg.bwd_block_e, cfg.bwd_num_warps), cfg.num_stages)


@pytest.mark.parametrize("cc, dtype", sorted(EXPECTED))
def test_tiles_per_capability_and_dtype(cc, dtype):
    target = Target.known(cc)
    assert target.smem == {75: 64, 80: 163, 86: 99, 89: 99, 90: 227}[cc] * 1024
    assert config.refusal(torch.device("cuda"), getattr(torch, dtype), target=target) is None
    cfg = config.head_config(20224, 30522, E, dtype=getattr(torch, dtype), target=target)
    assert tiles(cfg) == EXPECTED[cc, dtype]
    logits = config.head_config(20224, 30522, E, dtype=getattr(torch, dtype), target=target, logits=True)
    assert (logits.block_n, logits.block_v, logits.block_e, logits.num_warps) == LOGITS[cc]
    assert cfg.splits == 1 and config.head_config(64, 30522, E, target=target).splits > 1  # small N: split V


@pytest.mark.parametrize("target, like", [
    (Target(100, 227 * 1024, 148), 90),  # Blackwell B200: newer than every known one, Hopper's tiles
    (Target(120, 99 * 1024, 170), 89),   # RTX 50: newer, but 99 KiB: the newest known tiles that fit
    (Target(87, 163 * 1024, 16), 86),    # Jetson Orin: between known ones, the nearest lower
    (Target(90, 99 * 1024, 132), 89),    # a Hopper limited to 99 KiB
    (Target(80, 48 * 1024, 108), 75),    # nothing known fits: the oldest known tiles
])
def test_unknown_capabilities_take_the_nearest_known_tiles(target, like):
    assert config.tile_capability(target) == like
    for dtype in (torch.float32, torch.float16):
        got = config.head_config(20224, 30522, E, dtype=dtype, target=target)
        want = config.head_config(20224, 30522, E, dtype=dtype, target=Target.known(like))
        assert tiles(got) == tiles(want)
    assert Target.known(120) == Target(120, 227 * 1024, 132)  # known(): the nearest lower one's limits


def test_dtypes_per_capability():
    cuda = torch.device("cuda", 0)
    reason = config.refusal(cuda, torch.bfloat16, target=Target.known(75))
    assert "bfloat16" in reason and "sm_75" in reason and "8.0" in reason
    for dtype in (torch.float32, torch.float16):
        assert config.refusal(cuda, dtype, target=Target.known(75)) is None
    reason = config.refusal(cuda, torch.float16, target=Target(70, 96 * 1024))
    assert "7.5" in reason and "sm_70" in reason
    assert "float64" in config.refusal(cuda, torch.float64, target=Target.known(90))


@pytest.fixture
def turing(monkeypatch):
    """CUDA device 0 reads as a T4 (sm_75), outside the interpreter; warnings and fallbacks start afresh."""
    from tnops.backends import triton_fallback

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("TNOPS_BACKEND", raising=False)
    monkeypatch.setattr(config, "_target_of", lambda index: Target.known(75))
    monkeypatch.setattr(backends, "_warned", set())
    monkeypatch.setattr(triton_fallback, "_failed", {})


def test_default_dispatch_sends_a_refused_gpu_to_torch_with_one_warning(turing, monkeypatch):
    cuda = torch.device("cuda", 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert backends.select(cuda, torch.float16) == "triton-or-torch"
        assert backends.select(cuda, torch.float32) == "triton-or-torch"
        assert backends.select(cuda, torch.bfloat16) == "torch"
        assert backends.select(cuda, torch.bfloat16) == "torch"
    assert len(caught) == 1 and "bfloat16" in str(caught[0].message) and "sm_75" in str(caught[0].message)
    with pytest.raises(ValueError, match="bfloat16 needs a GPU of compute capability 8.0"):
        backends.select(cuda, torch.bfloat16, "triton")
    monkeypatch.setenv("TNOPS_BACKEND", "triton")
    with pytest.raises(ValueError, match="TNOPS_BACKEND='triton'.*sm_75"):
        backends.select(cuda, torch.bfloat16)


class FakeCudaDevice:
    """Stands in for ``torch.cuda.device``: entering sets the mocked current index, leaving restores it."""

    current = 0
    entered: list = []

    def __init__(self, device):
        self.index = torch.device(device).index

    def __enter__(self):
        self.previous, FakeCudaDevice.current = FakeCudaDevice.current, self.index
        FakeCudaDevice.entered.append(self.index)

    def __exit__(self, *exc):
        FakeCudaDevice.current = self.previous


def test_device_guard_enters_the_inputs_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device", FakeCudaDevice)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: FakeCudaDevice.current)
    monkeypatch.setattr(FakeCudaDevice, "entered", [])
    seen = []

    @config.on_inputs_device
    def launcher(first, *, more):
        seen.append((torch.cuda.current_device(), more))  # what Triton's launch reads: the current device

    class OnCuda1:
        device = torch.device("cuda", 1)

    launcher(OnCuda1(), more=7)
    assert seen == [(1, 7)] and FakeCudaDevice.entered == [1] and torch.cuda.current_device() == 0
    launcher(torch.zeros(1), more=8)  # CPU tensors (the interpreter): no CUDA device is entered
    assert seen[-1] == (0, 8) and FakeCudaDevice.entered == [1]


class Wrapped:
    """A kernel whose launches are recorded (inside a device guard or not), then run or made to raise."""

    def __init__(self, kernel, log, raises=None):
        self.kernel, self.log, self.raises = kernel, log, raises

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append((self.kernel.fn.__name__, list(GUARDS)))
            if self.raises is not None:
                raise self.raises
            return self.kernel[grid](*args, **kwargs)
        return launch


GUARDS: list = []


def wrap_kernels(monkeypatch, raises=None, only=None):
    from tnops.ops import mlm_head_kernels, rtd_kernels, sr_kernels

    log = []
    for module, name in ((mlm_head_kernels, "_mlm_fwd_kernel"), (mlm_head_kernels, "_mlm_combine_kernel"),
                         (mlm_head_kernels, "_mlm_bwd_kernel"), (sr_kernels, "_sr_bwd_kernel"),
                         (rtd_kernels, "_rtd_kernel")):
        if only is None or name in only:
            monkeypatch.setattr(module, name, Wrapped(getattr(module, name), log, raises))
    return log


def problem(n=24, v=40, e=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, e, generator=g, requires_grad=True)
    w = torch.randn(v, e, generator=g, requires_grad=True)
    b = torch.randn(v, generator=g, requires_grad=True)
    y = torch.randint(0, v, (n,), generator=g)
    y[::3] = -100
    return h, w, b, y


@needs_interpreter
def test_every_launch_runs_under_the_guard(monkeypatch):
    def guard(device):
        class Guard:
            def __enter__(self):
                GUARDS.append(device)

            def __exit__(self, *exc):
                GUARDS.pop()
        return Guard()

    monkeypatch.setattr(config, "device_guard", guard)
    log = wrap_kernels(monkeypatch)
    h, w, b, y = problem()
    out = tnops.linear_mlm_loss(h, w, y, bias=b, sr_weight=0.5, backend="triton")
    out.loss.backward()
    tnops.rtd_loss(h[:, 0], y.clamp_min(0), y.clamp_min(0), backend="triton")
    kernels = {name for name, _ in log}
    assert kernels == {"_mlm_fwd_kernel", "_mlm_combine_kernel", "_mlm_bwd_kernel", "_sr_bwd_kernel", "_rtd_kernel"}
    assert all(guards == [torch.device("cpu")] for _, guards in log), log


@needs_interpreter
def test_tensors_on_two_devices_are_refused_by_name_before_any_kernel(monkeypatch):
    from tnops.ops.mlm_head import mlm_head_backward, mlm_head_forward, sr_backward
    from tnops.ops.rtd import rtd_forward

    log = wrap_kernels(monkeypatch)
    h, w, b, y = (t.detach() for t in problem())
    meta = lambda t: t.to("meta")  # noqa: E731
    lse, coef = torch.zeros(24), torch.zeros(3, 24)
    calls = {
        "weight": lambda: mlm_head_forward(h, meta(w), b, y),
        "bias": lambda: mlm_head_forward(h, w, meta(b), y),
        "labels": lambda: mlm_head_forward(h, w, b, meta(y)),
        "sr_embedding": lambda: mlm_head_forward(h, w, b, y, sr_embedding=meta(w)),
        "coef": lambda: mlm_head_backward(h, w, b, y, lse, meta(coef)),
        "predictions": lambda: sr_backward(w, y, meta(y), lse, lse, lse, lse),
        "original": lambda: rtd_forward(h[:, 0], y, meta(y)),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"^{name}: expected a tensor on cpu") as error:
            call()
        assert "meta" in str(error.value)
    assert log == []


@pytest.fixture
def default_triton(monkeypatch):
    """The default dispatch on CPU (the interpreter) prefers the Triton kernels, as it does on CUDA."""
    from tnops.backends import triton_fallback

    monkeypatch.setitem(backends._DEFAULTS, "cpu", ("triton", "torch"))
    monkeypatch.delenv("TNOPS_BACKEND", raising=False)
    monkeypatch.setattr(triton_fallback, "_failed", {})


def launch_errors():
    import ast

    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources

    return {"OutOfResources": OutOfResources(147456, 65536, "shared memory"),
            "CompilationError": CompilationError(None, ast.parse("x").body[0], "no dot for this target")}


def grads_of(backend, **keywords):
    h, w, b, y = problem()
    out = tnops.linear_mlm_loss(h, w, y, bias=b, sr_weight=0.5, backend=backend, **keywords)
    out.loss.backward()
    return [out.loss, out.predictions, h.grad, w.grad, b.grad]


def assert_same(got, want):
    for a, c in zip(got, want):
        assert torch.allclose(a.double(), c.double(), rtol=1e-5, atol=1e-6)


@needs_interpreter
@pytest.mark.parametrize("error", ["OutOfResources", "CompilationError"])
@pytest.mark.parametrize("failing", ["_mlm_fwd_kernel", "_mlm_bwd_kernel"])
def test_default_dispatch_falls_back_to_torch_with_one_warning(default_triton, monkeypatch, error, failing):
    assert backends.select(torch.device("cpu"), torch.float32) == "triton-or-torch"
    want = grads_of("torch")
    log = wrap_kernels(monkeypatch, raises=launch_errors()[error], only=(failing,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = grads_of(None), grads_of(None)
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == [
        str(caught[0].message)] and error in str(caught[0].message)
    assert "float32" in str(caught[0].message) and "backend='triton'" in str(caught[0].message)
    assert_same(first, want)
    assert_same(second, want)
    assert len(log) == 1  # the failing kernel is tried once; later calls go straight to the torch backend
    with pytest.raises(type(launch_errors()[error])):
        grads_of("triton")
    monkeypatch.setenv("TNOPS_BACKEND", "triton")
    with pytest.raises(type(launch_errors()[error])):
        grads_of(None)


@needs_interpreter
def test_rtd_falls_back_and_argument_errors_still_raise(default_triton, monkeypatch):
    wrap_kernels(monkeypatch, raises=launch_errors()["OutOfResources"], only=("_rtd_kernel",))
    x = torch.randn(30)
    ids = torch.randint(0, 5, (30,))
    with pytest.warns(RuntimeWarning, match="OutOfResources"):
        got = tnops.rtd_loss(x, ids, ids.flip(0))
    assert torch.allclose(got, tnops.rtd_loss(x, ids, ids.flip(0), backend="torch"), rtol=1e-6)
    with pytest.raises(type(launch_errors()["OutOfResources"])):
        tnops.rtd_loss(x, ids, ids.flip(0), backend="triton")
    wrap_kernels(monkeypatch, raises=ValueError("labels: out of range"), only=("_mlm_fwd_kernel",))
    with pytest.raises(ValueError, match="labels: out of range"):  # the caller's error: no fallback
        grads_of(None)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_inputs_on_the_second_gpu_while_the_first_is_current():
    torch.cuda.set_device(0)
    h, w, b, y = (t.detach().to("cuda:1").requires_grad_() if t.is_floating_point() else t.to("cuda:1")
                  for t in problem())
    out = tnops.linear_mlm_loss(h, w, y, bias=b, sr_weight=0.5, backend="triton")
    out.loss.backward()
    want = grads_of("torch")
    assert_same([t.cpu() for t in (out.loss, out.predictions, h.grad, w.grad, b.grad)], want)
    with pytest.raises(ValueError, match="weight"):
        tnops.linear_mlm_loss(h, w.detach().to("cuda:0"), y, backend="triton")


@pytest.mark.slow
def test_every_kernel_compiles_within_every_target():
    """sm_75, 80, 86, 89 (sm_90: test_ops_triton's Hopper test): within the target's shared memory per block, no
    spilled register on any; two processes at once (about 70 s each with a cold Triton cache, 2 cores)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    runs = [subprocess.Popen([sys.executable, "-m", "tnops.ops.compile_check", "--arch", *archs, "--max-spill", "0"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for archs in (("75", "89"), ("80", "86"))]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, out in zip(runs, outputs):
        assert run.returncode == 0, out
    out = "".join(outputs)
    for arch in (75, 80, 86, 89):
        assert f"all kernels compiled for cuda:{arch}" in out
    assert "cuda:75: 64 KiB" in out and "cuda:86: 99 KiB" in out and "cuda:80: 163 KiB" in out
    assert "skip  bfloat16: bfloat16 needs" in out and "_mlm_bwd_kernel[fp16, bias=True]" in out  # sm_75: fp16 only
    assert out.count("spill    0") == out.count("ok    ") > 100
