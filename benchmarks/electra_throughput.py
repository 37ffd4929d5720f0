"""End-to-end: electra-pretrain tokens/s with the fused losses against the eager reference losses.

Runs ``python -m electra.pretrain`` for each backend (``TNOPS_BACKEND=reference`` materialises the generator's
logits and differentiates the spec; the default is the native backend on CPU), alternating backends over
``--rounds`` runs, and reports the median of the per-interval tokens/s that the trainer records in
``history.json`` (the first interval, with its warm-up, left out).

    python benchmarks/electra_throughput.py --preset small --batch-size 32 --steps 30
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(backend: str | None, args, out: Path) -> float:
    env = dict(os.environ)
    env.pop("TNOPS_BACKEND", None)
    if backend:
        env["TNOPS_BACKEND"] = backend
    cmd = [sys.executable, "-m", "electra.pretrain", "--preset", args.preset, "--batch-size", str(args.batch_size),
           "--max-steps", str(args.steps), "--log-every", str(args.log_every), "--eval-batches", "0",
           "--save-every", str(10**9), "--output-dir", str(out), "--no-progress"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    history = json.loads((out / "history.json").read_text())
    rates = [r["tokens_per_second"] for r in history if "tokens_per_second" in r and r["step"] > args.log_every]
    return statistics.median(rates)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rates: dict = {"reference": [], "default": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in rates:
                rates[name].append(run("reference" if name == "reference" else None, args, Path(tmp) / f"{name}{r}"))
                print(f"round {r + 1}: {name}: {rates[name][-1]:.0f} tokens/s", flush=True)
    result = {name: statistics.median(v) for name, v in rates.items()}
    ratio = result["default"] / result["reference"]
    print(f"preset {args.preset}, batch {args.batch_size}: default backend {result['default']:.0f} tokens/s, "
          f"eager reference losses {result['reference']:.0f} tokens/s, ratio {ratio:.2f}")
    return result


if __name__ == "__main__":
    main()
