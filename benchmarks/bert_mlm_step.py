"""Peak memory and time of one BertForMaskedLM training step, unpatched vs ``apply_true_negatives``.

bert-base-uncased's configuration (12 layers, 768 wide, V = 30,522; random init, dropout on), batch 32 × 128,
15 % of the positions masked; a step is ``zero_grad(set_to_none=True)`` (as the HF Trainer does), forward with
labels, backward. Each case runs in its own process, one warm-up step then ``--steps`` measured ones, and the
cases take turns for ``--rounds`` rounds, so a machine whose speed drifts slows every case alike.

Memory on CPU: the peak resident set of the step (``VmHWM``, reset before it through ``/proc/self/clear_refs``)
above the resident set just before it (weights, inputs and the synonym table already resident, gradients freed).
On CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the step. Times and memory are medians over
all measured steps of a case. Absolute times on shared machines move; read the ratios of one run.

    python benchmarks/bert_mlm_step.py                      # CPU, 3 rounds × 1 measured step per case
    python benchmarks/bert_mlm_step.py --batch 8 --seq 64 --rounds 1 --layers 2   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# name -> keywords of apply_true_negatives (None: the unpatched model, transformers' own cross-entropy)
CASES = {
    "unpatched (HF cross-entropy on [B, L, V] logits)": None,
    "apply_true_negatives (WordNet HC)": {"sr_weight": 0.0},
    "apply_true_negatives (WordNet HC + SR 1.0)": {"sr_weight": 1.0},
}


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_case(name: str, batch: int, seq: int, layers: int, steps: int, device: str) -> dict:
    """Seconds and peak extra MB of each measured step of one case (in this process)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(num_hidden_layers=layers)).to(device).train()  # bert-base-uncased's
    vocab = model.config.vocab_size
    input_ids = torch.randint(1000, vocab, (batch, seq))
    input_ids[:, 0], input_ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    picked = torch.rand(batch, seq) < 0.15
    picked[:, 0] = picked[:, -1] = False
    labels = torch.where(picked, input_ids, -100)
    inputs = {"input_ids": input_ids.masked_fill(picked, 103).to(device), "labels": labels.to(device)}
    if CASES[name] is not None:
        import tnops
        from tnops.integrations.transformers import apply_true_negatives

        table = tnops.SynonymTable.from_wordnet("bert-base-uncased")
        apply_true_negatives(model, table, **CASES[name])

    def step():
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()

    step()  # warm-up: allocator pools, the native extension, oneDNN primitives
    seconds, extra = [], []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() / 2**20
        else:
            with open("/proc/self/clear_refs", "w") as refs:  # resets VmHWM to the current resident set
                refs.write("5")
            base = _rss_mb("VmRSS")
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _rss_mb("VmHWM")
        extra.append(peak - base)
    return {"seconds": seconds, "extra_mb": extra}


def _child(name: str, args) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--case", name, "--batch", str(args.batch), "--seq",
               str(args.seq), "--layers", str(args.layers), "--steps", str(args.steps), "--device", args.device]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {name!r} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: dict, args) -> str:
    """Medians over every measured step of a case (memory with its range: the heap's reuse varies per process)."""
    base_name = next(iter(CASES))
    base_time = statistics.median(results[base_name]["seconds"])
    base_mem = statistics.median(results[base_name]["extra_mb"])
    lines = [f"BertForMaskedLM training step, bert-base-uncased config ({args.layers} layers), batch {args.batch} × "
             f"{args.seq}, {args.device}, torch {results['_env']['torch']}, {results['_env']['threads']} threads, "
             f"{args.rounds} rounds × {args.steps} step", "",
             "| case | step time | peak extra memory (range) | vs unpatched |", "|---|---|---|---|"]
    for name in CASES:
        seconds, memory = statistics.median(results[name]["seconds"]), results[name]["extra_mb"]
        ratio = "" if name == base_name else (f"{base_time / seconds:.2f}× speed, "
                                              f"{statistics.median(memory) / base_mem:.2f}× memory")
        lines.append(f"| {name} | {seconds:.2f} s | {statistics.median(memory):.0f} MB ({min(memory):.0f}–"
                     f"{max(memory):.0f}) | {ratio} |")
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(CASES)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2))
    left.barh(names, [statistics.median(results[n]["seconds"]) for n in names])
    left.set_xlabel("step time (s)")
    right.barh(names, [statistics.median(results[n]["extra_mb"]) for n in names])
    right.set_xlabel("peak extra memory (MB)")
    right.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12, help="encoder layers (bert-base: 12)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1, help="measured steps per process, after one warm-up")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)  # child process: one case
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.batch, args.seq, args.layers, args.steps, args.device)))
        return {}
    import torch

    results = {name: {"seconds": [], "extra_mb": []} for name in CASES}
    for round_index in range(args.rounds):
        for name in CASES:
            measured = _child(name, args)
            for key in ("seconds", "extra_mb"):
                results[name][key] += measured[key]
            print(f"round {round_index + 1}/{args.rounds} {name}: {measured['seconds'][-1]:.2f} s, "
                  f"{max(measured['extra_mb']):.0f} MB", file=sys.stderr)
    results["_env"] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
                       "batch": args.batch, "seq": args.seq, "layers": args.layers, "rounds": args.rounds,
                       "steps": args.steps, "date": time.strftime("%Y-%m-%d")}
    print(_table(results, args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bert_mlm_step.json").write_text(json.dumps(results, indent=1))
    _plot(results, args.out / "bert_mlm_step.png")
    return results


if __name__ == "__main__":
    main()
