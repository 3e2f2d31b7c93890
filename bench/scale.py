"""Benchmark: what --fsdp saves per process, two CPU processes (gloo), side by side in one run.

The embedded SmolLM2-135M-Instruct teaches a prune:10 of itself (online forward KL, fused),
batch 4 per process, under three placements:

  ddp              student replicated (DDP), teacher replicated
  fsdp student     student sharded (weights, gradients, AdamW state), teacher replicated
  fsdp both        student and teacher sharded

Per placement, from the run's step-1 metrics: what one process holds — the student's weights
and AdamW state (its shards under FSDP; a tied weight once) and the teacher's weights — and
target tokens/s after the first step, with the losses to show the placements train alike.
CPU figures; on GPUs memory per device against DDP was not measured (no GPU machine lent).

    .venv/bin/python bench/scale.py [--steps 6]

Resumable: the store in --work is reused. Writes --out (JSON). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from retort.capture.runner import generate
from retort.config import GenerateConfig
from retort.models.embedded import SMOLLM2
from retort.quickstart.pipeline import Budget, split_prompts

RESULTS = Path(__file__).parent / "results" / "scale.json"
PLACEMENTS = {"ddp": [], "fsdp student": ["--fsdp", "student"]}
PLACEMENTS["fsdp both"] = ["--fsdp", "student,teacher"]
ACCELERATE = Path(sys.executable).with_name("accelerate")
LAUNCH = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines"]
LAUNCH += ["1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("bench/work/scale"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    train_prompts, _ = split_prompts(Budget(args.prompts, 0, args.new_tokens, 0), args.work)
    store = args.work / "store"
    generate(
        GenerateConfig(
            teacher=SMOLLM2.alias,
            prompts=train_prompts,
            out=store,
            top_k=0,
            max_new_tokens=args.new_tokens,
        )
    )
    results: dict[str, Any] = {
        "teacher": SMOLLM2.alias,
        "student": "prune:10",
        "processes": 2,
        "settings": vars(args) | {"work": str(args.work), "out": str(args.out)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, 1 thread per process",
        "rows": {},
    }
    for name, flags in PLACEMENTS.items():
        run = args.work / f"run-{name.replace(' ', '-')}"
        shutil.rmtree(run, ignore_errors=True)
        command = [*LAUNCH, "-m", "retort", "distill"]
        command += ["--data", str(store), "--out", str(run), "--student", "prune:10"]
        command += ["--teacher", SMOLLM2.alias, "--objective", "online"]
        command += ["--max-steps", str(args.steps), "--batch-size", str(args.batch_size)]
        command += ["--save-every", str(args.steps), "--set", "trackers=[]", *flags]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RETORT_LOG": "ERROR"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            sys.exit(f"{name}: failed\n{done.stderr[-3000:]}")
        records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
        speeds = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]
        held = {k: v for k, v in records[0].items() if k.endswith("_mib")}
        held["student_state_mib"] = round(
            held["student_weights_mib"] + held["optimizer_state_mib"], 1
        )
        results["rows"][name] = {
            **held,
            "tokens_per_s": round(statistics.fmean(speeds), 1),
            "losses": [round(r["loss"], 6) for r in records if "loss" in r],
        }
        print(name, results["rows"][name], flush=True)
    base = results["rows"]["ddp"]
    for row in results["rows"].values():
        row["student_state_vs_ddp"] = round(row["student_state_mib"] / base["student_state_mib"], 3)
        row["teacher_vs_ddp"] = round(row["teacher_weights_mib"] / base["teacher_weights_mib"], 3)
        row["tokens_per_s_vs_ddp"] = round(row["tokens_per_s"] / base["tokens_per_s"], 3)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
