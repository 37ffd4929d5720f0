"""The schedule of a benchmark session: every case in its own process, checked, then timed in interleaved rounds.

Shape by shape (cases of different shapes are never compared, and only one shape's inputs are resident at once):

1. one process per case (``worker.py case``) builds the inputs, makes its first call (compilation included) and
   saves a summary of the result; at most ``setup_jobs`` processes set up at once (1 on a small CPU machine,
   more on a GPU machine, where setting up does not disturb anything timed: no timing has begun);
2. one checker process (``worker.py checker``) compares each summary with the float64 reference
   (``reference_check.py``); a case that fails is not timed;
3. ``rounds`` rounds: in each, every case process in turn makes ``iterations`` timed calls (the order rotates by
   one case per round), so a machine whose speed drifts slows every case alike, and nothing a case compiles,
   caches or allocates is in another's process.  Idle processes wait on their stdin.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cases

WORKER = Path(__file__).resolve().with_name("worker.py")
PREFIX = "@@bench "


@dataclass
class Result:
    """What one case gave: ``status`` ``"ok"`` (timed), ``"skipped"`` (cannot run here: ``reason`` says why),
    ``"failed"`` (disagrees with the reference) or ``"error"`` (its process failed); per round: ``times``
    (seconds per call), ``peak_mb`` and ``started`` (Unix time)."""

    case: cases.Case
    status: str = "error"
    reason: str = ""
    first_call_s: float | None = None
    env: dict = field(default_factory=dict)
    check_errors: dict = field(default_factory=dict)
    times: list = field(default_factory=list)
    peak_mb: list = field(default_factory=list)
    started: list = field(default_factory=list)


class Zygote:
    """``worker.py zygote``: forks worker processes that need not import torch and tnops again (CPU only)."""

    def __init__(self, log: Path, timeout: float):
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.channel.settimeout(timeout)
        with open(log, "w") as stderr:
            self.process = subprocess.Popen([sys.executable, str(WORKER), "zygote", str(theirs.fileno())],
                                            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        theirs.close()
        self.lock = threading.Lock()
        try:
            if self.channel.recv(16) != b"ready":
                raise OSError("the zygote ended")
        except OSError as error:
            self.close()
            raise RuntimeError(f"the zygote did not start ({error}): {log.read_text(errors='replace')[-2000:]}") \
                from None

    def spawn(self, args: list[str], stdin: int, stdout: int, stderr: int) -> int:
        """Fork a worker serving ``args`` on these descriptors; returns its pid."""
        with self.lock:
            socket.send_fds(self.channel, [json.dumps(args).encode()], [stdin, stdout, stderr])
            return int(self.channel.recv(32))

    def close(self):
        self.channel.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Worker:
    """A worker process and its answers (read by a thread, so a silent process cannot block the schedule)."""

    def __init__(self, args: list[str], log: Path, timeout: float, zygote: Zygote | None = None):
        self.log, self.timeout, self.process = log, timeout, None
        if zygote is None:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            with open(log, "w") as stderr:
                self.process = subprocess.Popen([sys.executable, str(WORKER), *args], stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
            self.pid, self.stdin, self.stdout = self.process.pid, self.process.stdin, self.process.stdout
        else:
            (child_in, self_in), (self_out, child_out) = os.pipe(), os.pipe()
            log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                self.pid = zygote.spawn(args, child_in, child_out, log_fd)
            finally:
                for fd in (child_in, child_out, log_fd):
                    os.close(fd)
            self.stdin, self.stdout = os.fdopen(self_in, "w"), os.fdopen(self_out, "r")
        self.answers: queue.Queue = queue.Queue()
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.stdout:
            if line.startswith(PREFIX):
                self.answers.put(json.loads(line[len(PREFIX):]))
        status = f" (exit status {self.process.wait()})" if self.process is not None else ""
        self.ended.set()
        self.answers.put({"error": f"the process ended{status}"})

    def ask(self, command: str | None = None) -> dict:
        """Send ``command`` (None: only wait) and return the next answer; RuntimeError on an error or timeout."""
        if command is not None:
            try:
                self.stdin.write(command + "\n")
                self.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the reader reports the process's end
        try:
            reply = self.answers.get(timeout=self.timeout)
        except queue.Empty:
            self.close()
            raise RuntimeError(f"no answer within {self.timeout:.0f} s") from None
        if "error" in reply:
            self.close()
            tail = self.log.read_text(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(reply["error"] + ("\n" + "\n".join(tail) if tail else ""))
        return reply

    def close(self):
        """Ask the process to exit; kill it (by its pid) if it has not ended 30 s later."""
        try:
            self.stdin.write("exit\n")
            self.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        if not self.ended.wait(timeout=30):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.ended.wait(timeout=30)


def run(selected: list[cases.Case], device: str, rounds: int, iterations: int, setup_jobs: int = 1,
        timeout: float = 1800.0, progress: bool = True, max_time: float = 0.0,
        emulated_half: bool = False) -> dict[str, Result]:
    """Set up, check and time ``selected`` (case list; floors are not added here) -> ``{case id: Result}``.

    ``emulated_half``: run half-precision cases on a CPU without native half matmuls too (``cases.unavailable``).
    ``max_time`` > 0, seconds for the whole run: each shape gets an equal share of the time left when it starts,
    and no further round of it starts once the time spent on it (set-up included) plus its last round's would pass
    its share (the first round always runs), so a slow machine gets fewer rounds rather than a run of unbounded
    length, and a fast first shape leaves more time to the next.
    """
    from tqdm import tqdm

    if rounds < 0 or iterations < 1 or setup_jobs < 1:
        raise ValueError(f"expected rounds >= 0, iterations >= 1, setup_jobs >= 1, got {rounds}, {iterations}, "
                         f"{setup_jobs}")
    results = {case.id: Result(case) for case in selected}
    shapes = list(dict.fromkeys(case.shape for case in selected))
    total = sum(1 + (case.provider != "floor") + rounds for case in selected)
    with tempfile.TemporaryDirectory(prefix="tnops-bench-") as tmp, \
            tqdm(total=total, desc="benchmark", unit="step", disable=not progress, file=sys.stderr) as bar:
        zygote = Zygote(Path(tmp) / "zygote.log", timeout) if device == "cpu" and selected else None
        began = time.monotonic()
        try:
            for index, shape in enumerate(shapes):
                left = max_time - (time.monotonic() - began)
                share = max(left / (len(shapes) - index), 1e-9) if max_time else 0.0  # 0: no limit
                _run_shape([c for c in selected if c.shape == shape], results, device, rounds, iterations,
                           setup_jobs, timeout, Path(tmp), bar, zygote, share, emulated_half)
        finally:
            if zygote is not None:
                zygote.close()
    return results


def another_round_overruns(round_index: int, elapsed: float, last_round: float, share: float) -> bool:
    """Whether round ``round_index`` (0-based) would end past a shape's ``share`` of seconds (0: no limit) when
    ``elapsed`` seconds are spent on it and a round takes ``last_round``; the first round always runs."""
    return bool(round_index and share and elapsed + last_round > share)


def _run_shape(selected, results, device, rounds, iterations, setup_jobs, timeout, tmp: Path, bar, zygote,
               share, emulated_half) -> None:
    workers: dict[str, Worker] = {}
    began = time.monotonic()

    def set_up(case: cases.Case):
        result = results[case.id]
        try:
            args = ["case", case.id, "--device", device, "--iterations", str(iterations), "--summary",
                    str(tmp / f"{case.id}.pt")] + (["--emulated-half"] if emulated_half else [])
            worker = workers[case.id] = Worker(args, tmp / f"{case.id}.log", timeout, zygote)
            ready = worker.ask()
            if "skip" in ready:
                result.status, result.reason = "skipped", ready["skip"]
            else:
                result.first_call_s, result.env, result.status = ready["first_call_s"], ready["env"], "ok"
        except RuntimeError as error:
            result.reason = f"set-up failed: {error}"
        bar.set_postfix_str(f"set up {case.id}")
        bar.update()

    try:
        with ThreadPoolExecutor(max_workers=setup_jobs) as pool:  # the compiling cases first: they take longest
            list(pool.map(set_up, sorted(selected, key=lambda c: c.provider not in ("compiled", "cce"))))
        _check(selected, results, device, timeout, tmp, bar, zygote)
        for case in selected:  # what will not be timed gives its memory back now
            if results[case.id].status != "ok" and case.id in workers:
                workers[case.id].close()
        last_round = 0.0
        for round_index in range(rounds):
            if another_round_overruns(round_index, time.monotonic() - began, last_round, share):
                bar.update(len([c for c in selected if results[c.id].status == "ok"]) * (rounds - round_index))
                break
            round_began = time.monotonic()
            timed = [c for c in selected if results[c.id].status == "ok"]
            shift = round_index % max(len(timed), 1)
            for case in timed[shift:] + timed[:shift]:
                result = results[case.id]
                bar.set_postfix_str(f"round {round_index + 1}/{rounds} {case.id}")
                try:
                    answer = workers[case.id].ask("time")
                    result.times.append(answer["seconds"])
                    result.peak_mb.append(answer["peak_mb"])
                    result.started.append(answer["started"])
                except RuntimeError as error:
                    result.status, result.reason = "error", f"round {round_index + 1} failed: {error}"
                bar.update()
            last_round = time.monotonic() - round_began
    finally:
        for worker in workers.values():
            worker.close()


def _check(selected, results, device, timeout, tmp: Path, bar, zygote) -> None:
    to_check = [c for c in selected if c.provider != "floor"]
    if not to_check:
        return
    checker = None
    try:
        checker = Worker(["checker", to_check[0].shape, "--device", device], tmp / "checker.log", timeout, zygote)
        checker.ask()
        for case in to_check:
            result = results[case.id]
            bar.set_postfix_str(f"check {case.id}")
            if result.status == "ok":
                answer = checker.ask(json.dumps({"case": case.id, "summary": str(tmp / f"{case.id}.pt")}))
                result.check_errors = answer["errors"]
                if answer["failures"]:
                    result.status = "failed"
                    result.reason = "disagrees with the float64 reference: " + "; ".join(answer["failures"])
            bar.update()
    except RuntimeError as error:
        for case in to_check:
            if results[case.id].status == "ok" and not results[case.id].check_errors:
                results[case.id].status, results[case.id].reason = "error", f"the checker failed: {error}"
    finally:
        if checker is not None:
            checker.close()
