"""Benchmark: which objective keeps the most of the teacher at one training-token budget.

The embedded teacher (SmolLM2-135M-Instruct) is distilled into the same `prune:10` student
(10 of its 30 layers) once per objective, each row trained on the same number of student target
tokens (``max_tokens``: the run ends there and its cosine schedule follows it). Every row is
then scored on held-out prompts that are never in the training prompts (the quickstart's split
by id hash, checked here for text overlap too):

  nll              mean NLL (nats/token) of the teacher's held-out completions
  top1_agreement   share of those positions where the student's argmax is the teacher's
  kl               mean KL(teacher ‖ student), full vocabulary
  contains_match   reference-answer accuracy (rows with a reference; greedy answers)
  teacher_nll_of_answers   the teacher's NLL of the student's own greedy answers
  tokens_per_s_batch1/8    student greedy decoding speed

    .venv/bin/python bench/quality.py [--budget-tokens 200000] [--rows sft,on_policy_l1]

Resumable: captured stores, runs (checkpointed) and finished rows live in --work and are
reused, so an interrupted benchmark continues where it stopped. Writes --out (JSON) and the
same table as markdown beside it. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from retort.capture.runner import generate
from retort.config import DistillConfig, GenerateConfig
from retort.evaluate.run import evaluate
from retort.models.embedded import ALIAS
from retort.models.pruning import prune_layers
from retort.quickstart.pipeline import BUDGETS, split_prompts
from retort.teachers.local import LocalTeacher
from retort.train.loop import distill

RESULTS = Path(__file__).parent / "results" / "quality.json"
STUDENT_LAYERS = 10
ROWS: dict[str, dict[str, Any] | None] = {
    "untrained": None,
    "sft": {"objective": "sft"},
    "topk_kl": {"objective": "topk", "kind": "forward_kl"},
    "online_forward_kl": {"objective": "online", "kind": "forward_kl"},
    "online_reverse_kl": {"objective": "online", "kind": "reverse_kl"},
    "online_jsd_0.5": {"objective": "online", "kind": "jsd", "beta": 0.5},
    "on_policy_lmbda_1": {"objective": "on_policy", "lmbda": 1.0},
    "on_policy_lmbda_0.5": {"objective": "on_policy", "lmbda": 0.5},
    # Not in the list: the usual practice of going on-policy only once the student
    # writes sensibly (half the budget topk_kl, then half on_policy λ=1), and forward KL on
    # the student's samples.
    "topk_kl_then_on_policy": {"stages": [{"objective": "topk"}, {"objective": "on_policy"}]},
    "on_policy_lmbda_1_forward_kl": {"objective": "on_policy", "kind": "forward_kl"},
}
METRICS = (
    "nll",
    "top1_agreement",
    "kl",
    "contains_match",
    "teacher_nll_of_answers",
    "tokens_per_s_batch1",
    "tokens_per_s_batch8",
)


class PrintProgress:
    """Progress as plain lines (the benchmark often runs with its output in a log file)."""

    def __init__(self) -> None:
        self.name, self.total, self.done, self.shown, self.started = "", None, 0, -1, 0.0

    def start(self, name: str, total: int | None = None, unit: str = "") -> None:
        self.name, self.total, self.done, self.shown = name, total, 0, -1
        self.started = time.perf_counter()

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        tenth = int(10 * self.done / self.total) if self.total else 0
        if tenth > self.shown:
            self.shown = tenth
            extra = " ".join(f"{k}={v:.4g}" for k, v in fields.items())
            seconds = time.perf_counter() - self.started
            print(f"  {self.name}: {self.done}/{self.total} {seconds:.0f}s {extra}", flush=True)

    def finish(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-tokens", type=int, default=200_000)
    parser.add_argument("--rows", default=",".join(ROWS), help="Comma-separated row names.")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--prompts", type=int, default=None, help="Cap (a smoke run).")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-quality"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    unknown = [name for name in args.rows.split(",") if name not in ROWS]
    if unknown:
        sys.exit(f"--rows: unknown {unknown}; choose from {', '.join(ROWS)}")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = LocalTeacher.load(ALIAS)
    teacher.model.to(device)
    args.work.mkdir(parents=True, exist_ok=True)
    train_prompts, heldout_prompts = prepare_prompts(args)
    progress = PrintProgress()
    stores = {}
    for split, prompts in (("train", train_prompts), ("heldout", heldout_prompts)):
        print(f"capture {split}", flush=True)
        config = GenerateConfig(
            teacher=ALIAS,
            prompts=prompts,
            out=args.work / f"store-{split}",
            top_k=20,
            max_new_tokens=args.max_new_tokens,
            batch_size=32,
        )
        stores[split] = generate(config, teacher=teacher, progress=progress).store.path

    rows, teacher_row = [], None
    for name in args.rows.split(","):
        done = args.work / "rows" / f"{name}.json"
        if not done.is_file():
            result = run_row(name, ROWS[name], args, teacher, stores, progress)
            done.parent.mkdir(exist_ok=True)
            done.write_text(json.dumps(result, indent=2) + "\n")
        result = json.loads(done.read_text())
        teacher_row = result.pop("teacher")
        rows.append(result)
        print(json.dumps(result), flush=True)

    report = {
        "command": "python bench/quality.py " + " ".join(sys.argv[1:]),
        "budget": {
            "train_tokens_per_row": args.budget_tokens,
            "student": f"prune:{STUDENT_LAYERS}",
            "teacher": ALIAS,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "schedule": "AdamW, 10 warmup steps, cosine to 0 at the token budget",
            "teacher_max_new_tokens": args.max_new_tokens,
            "student_sample_max_new_tokens": args.max_new_tokens,
            "train_prompts": count_lines(train_prompts),
            "heldout_prompts": count_lines(heldout_prompts),
        },
        "machine": {
            "device": torch.cuda.get_device_name()
            if device == "cuda"
            else f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "teacher": teacher_row,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown_table(report))
    print(markdown_table(report))


def prepare_prompts(args: argparse.Namespace) -> tuple[Path, Path]:
    """The quickstart's train / held-out split; held-out prompts never appear in training."""
    budget = BUDGETS["default"]
    if args.prompts:
        budget = type(budget)(
            **{
                **budget.__dict__,
                "train_prompts": args.prompts,
                "heldout_prompts": max(8, args.prompts // 4),
            }
        )
    train, heldout = split_prompts(budget, args.work)
    texts = {json.loads(line)["prompt"] for line in train.read_text().splitlines()}
    leaked = [r for r in heldout.read_text().splitlines() if json.loads(r)["prompt"] in texts]
    if leaked:
        sys.exit(f"{len(leaked)} held-out prompts are also training prompts")
    return train, heldout


def run_row(
    name: str,
    settings: dict[str, Any] | None,
    args: argparse.Namespace,
    teacher: LocalTeacher,
    stores: dict[str, Path],
    progress: PrintProgress,
) -> dict[str, Any]:
    print(f"row {name}", flush=True)
    student = prune_layers(teacher.model, STUDENT_LAYERS)
    row: dict[str, Any] = {"name": name, "trained_tokens": 0, "steps": 0, "train_seconds": 0.0}
    stages = (settings or {}).get("stages") or ([settings] if settings else [])
    for index, stage in enumerate(stages):
        share = args.budget_tokens // len(stages)
        out = args.work / "runs" / name / (f"stage-{index}" if len(stages) > 1 else "")
        sampling = stage["objective"] == "on_policy"
        on_policy = {"sample_max_new_tokens": args.max_new_tokens} if sampling else {}
        config = DistillConfig(
            data=stores["train"],
            out=out,
            student=f"prune:{STUDENT_LAYERS}",
            teacher=ALIAS,
            max_tokens=share,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=10,
            save_every=25,
            trackers=[],
            **stage,
            **on_policy,
        )
        resume = (config.out / "checkpoints").is_dir()
        if not resume:
            shutil.rmtree(config.out, ignore_errors=True)
        # A later stage continues training the same student object.
        result = distill(config, resume=resume, teacher=teacher, student=student, progress=progress)
        records = [
            json.loads(line) for line in (config.out / "metrics.jsonl").read_text().splitlines()
        ]
        row["trained_tokens"] += records[-1]["tokens_seen"]
        row["steps"] += result.steps
        row["train_seconds"] += sum(r["step_seconds"] for r in records)
        if "sample_length" in records[-1]:
            row["last_sample_length"] = records[-1]["sample_length"]
    report = evaluate(
        teacher,
        {name: student},
        stores["heldout"],
        batch_size=16,
        answer_tokens=64,
        speed_tokens=32,
        progress=progress,
    )
    teacher_entry, entry = report["models"]
    row.update({key: entry[key] for key in METRICS})
    row["teacher"] = {key: teacher_entry[key] for key in METRICS}
    return row


def count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def markdown_table(report: dict[str, Any]) -> str:
    budget = report["budget"]
    lines = [
        f"Student `{budget['student']}` of `{budget['teacher']}`, "
        f"{budget['train_tokens_per_row']:,} training tokens per row, "
        f"{budget['heldout_prompts']} held-out prompts; {report['machine']['device']}.",
        "",
        "| row | NLL↓ | top-1↑ | KL↓ | acc↑ | teacher NLL of answers↓ | tok/s b1 | tok/s b8 "
        "| steps | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    teacher = {"name": "teacher (reference)", **report["teacher"], "steps": "", "train_seconds": ""}
    for row in [teacher, *report["rows"]]:
        cells = [
            f"{row['nll']:.3f}",
            f"{row['top1_agreement']:.3f}",
            f"{row['kl']:.3f}",
            "-" if row["contains_match"] is None else f"{row['contains_match']:.2f}",
            f"{row['teacher_nll_of_answers']:.3f}",
            f"{row['tokens_per_s_batch1']:.0f}",
            f"{row['tokens_per_s_batch8']:.0f}",
            str(row["steps"]),
            f"{row['train_seconds']:.0f}" if row["train_seconds"] != "" else "",
        ]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
