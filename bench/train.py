"""Benchmark: training throughput of one student on one store, padded vs packed batches.

The embedded teacher (SmolLM2-135M-Instruct) and its `prune:10` student, fp32, batch 8, on the
quickstart's training store (every built-in prompt, 48 new tokens), for each objective:

  sft        cross-entropy on the teacher's completions
  online     off-policy online KD, forward KL against the live teacher (fused)
  on_policy  the student samples (48 new tokens), reverse KL against the teacher

Packed rows hold up to `pack_width` (default 1024) tokens. Each row runs in its own process
(so its peak memory is its own: max RSS on CPU, peak allocated on CUDA) for 2 warm-up and 20
timed steps, with the same batches for every row of an objective. Reported: target tokens/s
and seconds per step over the timed steps, the share of computed positions that were padding,
peak memory, and the mean loss, which must agree between padded and packed rows (the same
training).

    .venv/bin/python bench/train.py [--rows sft,online] [--steps 20]

Writes --out (JSON) and prints the markdown table of docs/results.md. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results" / "train.json"
WARMUP = 2
OBJECTIVES = {
    "sft": {"objective": "sft"},
    "online": {"objective": "online", "kind": "forward_kl"},
    "on_policy": {"objective": "on_policy", "lmbda": 1.0, "sample_max_new_tokens": 48},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(OBJECTIVES), help="Objectives to run.")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per row.")
    parser.add_argument("--work", type=Path, default=Path("bench/work/train"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # objective:pack, in a child process
    args = parser.parse_args()
    if args.one:
        objective, pack = args.one.split(":")
        print(json.dumps(run_one(objective, pack == "packed", args)))
        return
    store = store_for(args.work)
    rows = []
    for objective in args.rows.split(","):
        for layout in ("padded", "packed"):
            print(f"{objective} {layout}", flush=True)
            command = [sys.executable, __file__, "--one", f"{objective}:{layout}"]
            command += ["--work", str(args.work), "--steps", str(args.steps)]
            child = subprocess.run(
                command,
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "command": "python bench/train.py " + " ".join(sys.argv[1:]),
        "store": str(store),
        "student": "prune:10",
        "batch_size": 8,
        "timed_steps": args.steps,
        "machine": _machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(report))


def store_for(work: Path) -> Path:
    """The quickstart's training store, captured once (resumable)."""
    from prune import capture

    from retort.models.embedded import ALIAS
    from retort.quickstart.pipeline import BUDGETS
    from retort.teachers.local import LocalTeacher

    store = work / "store-train"
    if not (store / "table").exists():
        work.mkdir(parents=True, exist_ok=True)
        capture(work, BUDGETS["default"], LocalTeacher.load(ALIAS), _Quiet())
    return store


def run_one(objective: str, pack: bool, args: argparse.Namespace) -> dict[str, Any]:
    from retort.config import DistillConfig
    from retort.models.embedded import ALIAS
    from retort.train.loop import distill

    out = args.work / "runs" / f"{objective}-{'packed' if pack else 'padded'}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    config = DistillConfig(
        data=args.work / "store-train",
        out=out,
        student="prune:10",
        teacher=ALIAS,
        max_steps=WARMUP + args.steps,
        batch_size=8,
        learning_rate=3e-4,
        warmup_steps=2,
        save_every=10_000,
        log_every=1,
        trackers=[],
        pack=pack,
        **OBJECTIVES[objective],
    )
    distill(config)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if r.get("split") != "eval"][WARMUP:]
    seconds = sum(r["step_seconds"] for r in timed)
    tokens = sum(r["tokens"] for r in timed)
    return {
        "objective": objective,
        "layout": "packed" if pack else "padded",
        "tokens_per_s": tokens / seconds,
        "seconds_per_step": seconds / len(timed),
        "padding": sum(r["padding"] for r in timed) / len(timed),
        "mean_loss": sum(r["loss"] for r in timed) / len(timed),
        "peak_memory_mib": _peak_mib(),
    }


def _peak_mib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__}"


class _Quiet:
    def start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def advance(self, *args: Any, **kwargs: Any) -> None:
        pass

    def finish(self) -> None:
        pass


def markdown_table(report: dict[str, Any]) -> str:
    lines = [
        "| objective | batches | target tok/s | s/step | padding | peak MiB | mean loss |",
        "|---|---|---|---|---|---|---|",
    ]
    padded = {r["objective"]: r for r in report["rows"] if r["layout"] == "padded"}
    for row in report["rows"]:
        speedup = ""
        if row["layout"] == "packed" and row["objective"] in padded:
            speedup = f" ({row['tokens_per_s'] / padded[row['objective']]['tokens_per_s']:.2f}×)"
        lines.append(
            f"| {row['objective']} | {row['layout']} | {row['tokens_per_s']:.1f}{speedup} | "
            f"{row['seconds_per_step']:.2f} | {row['padding']:.1%} | "
            f"{row['peak_memory_mib']:.0f} | {row['mean_loss']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
