"""One process of the benchmark suite, started by ``runner.py`` (not by hand): one case, or the checker of a shape.

It speaks JSON lines: every answer is one ``@@bench {...}`` line on stdout (anything else a library prints is
ignored), every command one line on stdin.

    worker.py case CASE_ID --device D --iterations K --summary PATH [--emulated-half]
        answers {"skip": reason} when the case cannot run here (``cases.unavailable``); else builds the inputs,
        makes the first call (warm-up: compilation, allocator pools, oneDNN primitives) with fresh gradients,
        saves its summary for the checker to PATH, answers {"ready": true, "first_call_s", "env"};
        then "time" -> {"seconds": per call, "peak_mb", "started": Unix time}: K calls, gradients zeroed before
        and freed after (so a timed backward accumulates into existing gradients, and an idle process holds only
        its inputs); "exit".
    worker.py checker SHAPE --device D
        {"case": ID, "summary": PATH} -> {"errors": {...}, "failures": [...]}; "exit".
    worker.py zygote FD
        CPU only: imports torch and tnops once, then for every message on the Unix socket FD (the arguments of a
        case or checker, with three file descriptors for its stdin, stdout and stderr) forks a child that serves
        them, and answers its pid.  A forked child is a process of its own like any other (its own memory, its own
        compilation), it only skips the ~2-4 s of imports; nothing has run in the zygote, so no OpenMP pool or
        other thread is inherited.  CUDA runs start every process afresh (a CUDA context does not survive a fork).

Peak extra memory on CPU is the peak resident set during the timed calls above the resident set just before them,
sampled every millisecond by a thread; on CUDA ``max_memory_allocated`` above the allocation before them.
An error answers {"error": "..."} and exits with status 1.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback

import cases
import reference_check
import torch


def answer(**fields) -> None:
    print("@@bench " + json.dumps(fields), flush=True)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Context manager: ``.extra_mb`` = peak memory inside the block above the memory at its start (MiB)."""

    def __init__(self, device: str):
        self.device, self.extra_mb = device, 0.0

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self.peak = _rss_bytes()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self.done.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            self.done.set()
            self.thread.join()
            peak = max(self.peak, _rss_bytes())
        self.extra_mb = max(peak - self.base, 0) / 2**20
        return False


def environment(case: cases.Case, device: str) -> dict:
    """Device, versions and threads of this process, for the case's ``extra_info``."""
    from importlib import metadata

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                    "cpu")
        name += f" ({torch.backends.cpu.get_cpu_capability()})"
    env = {"pid": os.getpid(), "device": device, "device_name": name, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "triton": version("triton"), "tnops": version("tnops")}
    if case.provider == "cce":
        env["cut_cross_entropy"] = version("cut-cross-entropy")
    if case.provider == "liger":
        env["liger_kernel"] = version("liger-kernel")
    return env


def serve_case(case: cases.Case, device: str, iterations: int, summary_path: str, emulated_half: bool) -> None:
    reason = cases.unavailable(case, device, emulated_half)
    if reason is not None:
        answer(skip=reason)
        return
    inputs = cases.make_inputs(case.shape, case.dtype, device, synonyms=case.objective == "tn")
    leaves = inputs[:3]
    fn = cases.loss_function(case, inputs, device)

    def call():
        if case.mode == "fwd":
            with torch.no_grad():
                return fn()
        out = fn()
        if out is not None:
            out[0].backward()
        return out

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    out = call()
    sync()
    first_call_s = time.perf_counter() - start
    if out is not None:
        torch.save(reference_check.summarize(case, *out, leaves), summary_path)
    del out
    for leaf in leaves:
        leaf.grad = None
    gc.collect()
    gc.freeze()  # what set-up made (compiled graphs, modules) is never traced again: later collections are cheap
    answer(ready=True, first_call_s=first_call_s, env=environment(case, device))
    for line in sys.stdin:
        command = line.strip()
        if command == "exit":
            return
        if command != "time":
            raise ValueError(f"unknown command {command!r}")
        if case.mode == "fwdbwd" and case.provider != "floor":
            for leaf in leaves:
                leaf.grad = torch.zeros_like(leaf)
        gc.collect()
        sync()
        with PeakMemory(device) as memory:
            started = time.time()
            start = time.perf_counter()
            for _ in range(iterations):
                call()
            sync()
            seconds = (time.perf_counter() - start) / iterations
        for leaf in leaves:
            leaf.grad = None
        answer(seconds=seconds, peak_mb=memory.extra_mb, started=started)


def serve_checker(shape: str, device: str) -> None:
    inputs, full = {}, {}  # dtype -> float64 inputs (made in that dtype, so they hold its rounding), full pass
    answer(ready=True)
    for line in sys.stdin:
        if line.strip() == "exit":
            return
        request = json.loads(line)
        case = cases.Case.from_id(request["case"])
        got = torch.load(request["summary"], weights_only=True)
        if case.dtype not in inputs:
            made = cases.make_inputs(shape, case.dtype, device, synonyms=True)
            inputs[case.dtype] = (*(x.detach().double() for x in made[:3]), *made[3:])
            full[case.dtype] = reference_check.full_pass(inputs[case.dtype])
        want = reference_check.reference_summary(inputs[case.dtype], full[case.dtype], case.objective,
                                                 got["predictions"])
        errors, failures = reference_check.compare(case, got, want)
        answer(errors=errors, failures=failures)


def serve_zygote(fd: int) -> None:
    import tnops  # noqa: F401  (with torch._dynamo: the imports every child would repeat)

    channel = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the children are reaped by the kernel
    channel.send(b"ready")
    while True:
        message, fds, _, _ = socket.recv_fds(channel, 1 << 16, 3)
        if not message:
            return  # the runner closed its end
        pid = os.fork()
        if pid == 0:
            channel.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # subprocesses of the child (compilers) are waited for
            for target, fd_ in enumerate(fds):
                os.dup2(fd_, target)
                os.close(fd_)
            sys.stdin = open(0, closefd=False)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            code = 1
            try:
                code = main(json.loads(message))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        for fd_ in fds:
            os.close(fd_)
        channel.send(str(pid).encode())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("case", "checker", "zygote"))
    parser.add_argument("target", help="case id (case), shape name (checker) or socket descriptor (zygote)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--summary", default=None)
    parser.add_argument("--emulated-half", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.role == "zygote":
            serve_zygote(int(args.target))
        elif args.role == "case":
            serve_case(cases.Case.from_id(args.target), args.device, args.iterations, args.summary,
                       args.emulated_half)
        else:
            serve_checker(args.target, args.device)
    except Exception as error:  # reported to the runner, which fails the case's test with it
        traceback.print_exc()
        answer(error=f"{type(error).__name__}: {' '.join(str(error).split())}"[:2000])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
