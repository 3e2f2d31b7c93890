"""Benchmark: memory and time of KD losses at real vocabulary sizes (not a test).

Side by side, on the same inputs, forward + backward of generalized JSD (β = 0.5) for
  materialized  logits = hidden @ head.T for both models, then ``retort.losses.divergence``
  fused         ``retort.losses.fused_divergence`` (chunked; never all logits at once)
  trl           TRL's ``GKDTrainer.generalized_jsd_loss`` on materialized logits
for V ∈ {49,152, 151,936}, tokens ∈ {1,024, 4,096}, hidden ∈ {576, 2,048}, float32 on CPU.

Each measurement runs in its own process: peak memory is that process's peak resident set
minus its peak before the loss (inputs built, libraries loaded), so methods cannot inherit each
other's high-water marks, and an out-of-memory kill costs one cell, not the run.

    .venv/bin/python bench/losses.py                # full grid → bench/results/losses.json
    .venv/bin/python bench/losses.py --quick        # V=49,152, 1,024 tokens, hidden 576 only
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "losses.json"
METHODS = ("materialized", "fused", "trl")
MEMORY_LIMIT_GB = 20  # of the 24 GB machine


def measure(method: str, vocab: int, tokens: int, hidden: int, chunk: int) -> dict:
    """One forward + backward in this process; returns time, extra peak memory and values."""

    # A failed allocation then raises a clean error instead of waking the kernel's OOM killer.
    limit = MEMORY_LIMIT_GB << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    loss_fn = build(method, vocab=64, tokens=8, hidden=16, chunk=4)[0]
    loss_fn().backward()  # warm-up: thread pools and kernels initialise outside the measurement
    loss_fn, student_hidden, student_head = build(method, vocab, tokens, hidden, chunk)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    loss = loss_fn()
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "peak_extra_mb": (peak - before) / 1024,
        "loss": float(loss),
        "grad_hidden_norm": float(student_hidden.grad.norm()),
        "grad_head_norm": float(student_head.grad.norm()),
    }


def build(method: str, vocab: int, tokens: int, hidden: int, chunk: int):
    """The inputs of one cell and a closure computing its loss by ``method``."""
    import torch

    torch.manual_seed(0)
    student_hidden = torch.randn(tokens, hidden).requires_grad_()
    student_head = (torch.randn(vocab, hidden) * hidden**-0.5).requires_grad_()
    teacher_hidden = torch.randn(tokens, hidden)
    teacher_head = torch.randn(vocab, hidden) * hidden**-0.5
    labels = torch.zeros(1, tokens, dtype=torch.long)  # all positions count

    if method == "trl":
        from trl.experimental.gkd.gkd_trainer import GKDTrainer

        def loss_fn():
            return GKDTrainer.generalized_jsd_loss(
                (student_hidden @ student_head.T)[None],
                (teacher_hidden @ teacher_head.T)[None],
                labels=labels,
                beta=0.5,
            )
    elif method == "fused":
        from retort.losses import fused_divergence

        def loss_fn():
            return fused_divergence(
                student_hidden,
                student_head,
                teacher_hidden,
                teacher_head,
                "jsd",
                beta=0.5,
                chunk_size=chunk,
            )
    else:
        from retort.losses import divergence

        def loss_fn():
            with torch.no_grad():
                teacher_logits = teacher_hidden @ teacher_head.T
            return divergence(student_hidden @ student_head.T, teacher_logits, "jsd", beta=0.5)

    return loss_fn, student_hidden, student_head


def run_cell(method: str, vocab: int, tokens: int, hidden: int, chunk: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--one",
        method,
        str(vocab),
        str(tokens),
        str(hidden),
        "--chunk",
        str(chunk),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
        return {"error": f"exit {done.returncode}: {last[:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest cell only")
    parser.add_argument("--chunk", type=int, default=256, help="fused chunk size (tokens)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=4, metavar=("METHOD", "V", "TOKENS", "HIDDEN"))
    args = parser.parse_args()
    if args.one:
        method, vocab, tokens, hidden = args.one
        print(json.dumps(measure(method, int(vocab), int(tokens), int(hidden), args.chunk)))
        return

    grid = [(v, t, h) for v in (49_152, 151_936) for t in (1_024, 4_096) for h in (576, 2_048)]
    if args.quick:
        grid = grid[:1]
    rows = []
    for vocab, tokens, hidden in grid:
        row = {"vocab": vocab, "tokens": tokens, "hidden": hidden}
        for method in METHODS:
            row[method] = run_cell(method, vocab, tokens, hidden, args.chunk)
        dense, fused = row["materialized"], row["fused"]
        if "error" not in dense and "error" not in fused:
            row["fused_vs_materialized"] = {
                "memory_ratio": fused["peak_extra_mb"] / max(dense["peak_extra_mb"], 1e-9),
                "time_ratio": fused["seconds"] / dense["seconds"],
                "loss_rel_diff": abs(fused["loss"] - dense["loss"]) / abs(dense["loss"]),
            }
        rows.append(row)
        print(format_row(row), flush=True)
    report = {
        "command": "python bench/losses.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {_cores()} cores, CPU float32",
        "chunk_size": args.chunk,
        "loss": "generalized JSD, beta 0.5, mean over tokens; forward + backward",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def format_row(row: dict) -> str:
    def cell(result: dict) -> str:
        if "error" in result:
            return f"{result['error'][:40]:>28}"
        return f"{result['peak_extra_mb']:8.0f} MB {result['seconds']:7.2f} s {result['loss']:.5f}"

    head = f"V={row['vocab']:>6} T={row['tokens']:>4} H={row['hidden']:>4}"
    return head + " | " + " | ".join(f"{m}: {cell(row[m])}" for m in METHODS)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
