"""Benchmark: training throughput of one student on one store: retort padded, retort packed,
and TRL's trainers on the same batches (bench/train_trl.py; skipped when TRL is missing).

The embedded teacher (SmolLM2-135M-Instruct) and its `prune:10` student, fp32, batch 8, on the
quickstart's training store (every built-in prompt, 48 new tokens), for each objective:

  sft        cross-entropy on the teacher's completions
  online     off-policy online KD, forward KL against the live teacher (fused)
  on_policy  the student samples (48 new tokens), reverse KL against the teacher

Packed rows hold up to `pack_width` (default 1024) tokens. Each row runs in its own process
(so its peak memory is its own: max RSS on CPU, peak allocated on CUDA) for 2 warm-up and 20
timed steps, with the same batches for every row of an objective. Reported: target tokens/s
and seconds per step over the timed steps, the share of computed positions that were padding,
peak memory, and the mean loss, which must agree between padded, packed and TRL's sft and
online rows (the same training; on_policy samples differ, its definition is the same).

    .venv/bin/python bench/train.py [--rows sft,online] [--layouts padded,packed,trl] [--steps 20]

Writes --out (JSON) and prints the markdown table of docs/results.md. Not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
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
LAYOUTS = ("padded", "packed", "trl")
WARMUP = 2
OBJECTIVES = {
    "sft": {"objective": "sft"},
    "online": {"objective": "online", "kind": "forward_kl"},
    "on_policy": {"objective": "on_policy", "lmbda": 1.0, "sample_max_new_tokens": 48},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(OBJECTIVES), help="Objectives to run.")
    parser.add_argument(
        "--layouts", default=",".join(LAYOUTS), help="retort padded/packed, and TRL's trainers."
    )
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per row.")
    parser.add_argument("--work", type=Path, default=Path("bench/work/train"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # objective:layout, in a child process
    args = parser.parse_args()
    if args.one:
        objective, layout = args.one.split(":")
        print(json.dumps(run_one(objective, layout, args)))
        return
    store = store_for(args.work)
    rows = []
    for objective in args.rows.split(","):
        for layout in args.layouts.split(","):
            if layout == "trl" and importlib.util.find_spec("trl") is None:
                print("TRL is not installed (pip install trl): its rows are skipped")
                continue
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


def row_config(objective: str, layout: str, args: argparse.Namespace) -> Any:
    """The DistillConfig of one row (TRL's rows take its student, data and schedule)."""
    from retort.config import DistillConfig
    from retort.models.embedded import ALIAS

    out = args.work / "runs" / f"{objective}-{layout}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    return DistillConfig(
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
        pack=layout == "packed",
        **OBJECTIVES[objective],
    )


def run_one(objective: str, layout: str, args: argparse.Namespace) -> dict[str, Any]:
    config = row_config(objective, layout, args)
    if layout == "trl":
        from train_trl import run_trl

        return {**run_trl(objective, config, WARMUP, args.steps), "peak_memory_mib": _peak_mib()}
    from retort.train.loop import distill

    distill(config)
    out = config.out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if r.get("split") != "eval"][WARMUP:]
    seconds = sum(r["step_seconds"] for r in timed)
    tokens = sum(r["tokens"] for r in timed)
    return {
        "objective": objective,
        "layout": layout,
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
    """One line per row; speed-ups against TRL's row of the objective (else retort padded)."""
    lines = [
        "| objective | trainer | batches | target tok/s | s/step | padding | peak MiB | mean loss "
        "|",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["objective"], r["layout"]): r for r in report["rows"]}
    for row in report["rows"]:
        base = by.get((row["objective"], "trl")) or by.get((row["objective"], "padded"))
        speedup = ""
        if base is not None and base is not row:
            speedup = f" ({row['tokens_per_s'] / base['tokens_per_s']:.2f}×)"
        trl = row["layout"] == "trl"
        trainer, batches = ("TRL", "padded") if trl else ("retort", row["layout"])
        padding = "" if row.get("padding") is None else f"{row['padding']:.1%}"
        lines.append(
            f"| {row['objective']} | {trainer} | {batches} | {row['tokens_per_s']:.1f}{speedup} | "
            f"{row['seconds_per_step']:.2f} | {padding} | "
            f"{row['peak_memory_mib']:.0f} | {row['mean_loss']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
