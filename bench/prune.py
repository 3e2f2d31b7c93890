"""Benchmark: what to prune. Students of one size cut from the embedded teacher (SmolLM2-135M-
Instruct, 30 layers) in different ways, then distilled with the quickstart's recipe (topk
forward KL + 0.5 CE, 200 steps of batch 8, lr 3e-4) on the same store, so every row trains on
the same batches and tokens:

  even         prune:10              10 evenly spaced layers (the quickstart today)
  importance   prune:10:importance   the 10 layers of highest Block Influence on 64 store rows
  width        prune:heads=6:mlp=298 all 30 layers, 6 of 9 heads and 298 of 1536 MLP channels
  combined     prune:20:importance:mlp=512   20 layers by Block Influence, 512 MLP channels
  combined_15  prune:15:importance:mlp=853   15 layers, 853 MLP channels

The widths are chosen so every row has the parameters of prune:10 (within 0.1 %; the table
shows the counts). Held-out prompts are the quickstart's held-out split. Each row is scored
before and after training, like `retort eval`: NLL of the teacher's held-out completions,
top-1 agreement, KL(teacher ‖ student), reference accuracy of greedy answers, and the share of
the NLL gap closed — measured from one common start, the untrained even prune (the
quickstart's starting point), so a row that starts better gets credit for it.

    .venv/bin/python bench/prune.py [--rows even,importance] [--steps 200]

Resumable: the stores, each row's run (checkpointed) and the evaluation live in --work and are
reused. Writes --out (JSON) and prints the markdown table of docs/results.md. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from quality import PrintProgress, count_lines

from retort.capture.runner import generate
from retort.capture.store import Store
from retort.config import DistillConfig, GenerateConfig
from retort.evaluate.run import evaluate
from retort.models.embedded import ALIAS
from retort.models.importance import calibration_sequences
from retort.models.loading import load_model, resolve
from retort.models.pruning import parse_prune_spec, prune
from retort.quickstart.pipeline import BUDGETS, split_prompts
from retort.teachers.local import LocalTeacher
from retort.train.loop import distill

RESULTS = Path(__file__).parent / "results" / "prune.json"
ROWS = {
    "even": "prune:10",
    "importance": "prune:10:importance",
    "width": "prune:heads=6:mlp=298",
    "combined": "prune:20:importance:mlp=512",
    "combined_15": "prune:15:importance:mlp=853",
}
METRICS = ("parameters", "nll", "top1_agreement", "kl", "contains_match", "reference_count")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="Comma-separated row names.")
    parser.add_argument("--steps", type=int, default=BUDGETS["default"].steps)
    parser.add_argument("--work", type=Path, default=Path("bench/work/prune"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    names = args.rows.split(",")
    if unknown := [n for n in names if n not in ROWS]:
        sys.exit(f"--rows: unknown {unknown}; choose from {', '.join(ROWS)}")
    budget = BUDGETS["default"]
    teacher = LocalTeacher.load(ALIAS)
    progress = PrintProgress()
    args.work.mkdir(parents=True, exist_ok=True)
    stores = capture(args.work, budget, teacher, progress)

    calibration = calibration_sequences(
        Store.open(stores["train"]).read_table().to_pylist(), 64, 512, stores["train"]
    )
    before, after, rows = {}, {}, {}
    for name in names:
        spec = ROWS[name]
        started = time.perf_counter()
        before[name] = prune(teacher.model, parse_prune_spec(spec), calibration)
        prune_seconds = time.perf_counter() - started
        run = train(name, spec, args, budget, stores["train"], teacher, progress)
        after[name] = load_model(resolve(str(run / "final"))).eval()
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        rows[name] = {
            "name": name,
            "spec": spec,
            "kept_layers": before[name].config.retort_pruned.get("layers"),
            "prune_seconds": round(prune_seconds, 1),
            "train_seconds": round(sum(m["step_seconds"] for m in metrics), 1),
            "tokens_seen": metrics[-1]["tokens_seen"],
            "steps": metrics[-1]["step"],
        }
    report = scores(args, teacher, stores["heldout"], before, after, rows, budget, progress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(report))


def capture(
    work: Path, budget: Any, teacher: LocalTeacher, progress: PrintProgress
) -> dict[str, Path]:
    """The quickstart's default stores (every built-in prompt, top-20, 48 new tokens)."""
    paths = dict(zip(("train", "heldout"), split_prompts(budget, work), strict=True))
    stores = {}
    for split, prompts in paths.items():
        print(f"capture {split}", flush=True)
        config = GenerateConfig(
            teacher=ALIAS,
            prompts=prompts,
            out=work / f"store-{split}",
            max_new_tokens=budget.max_new_tokens,
            batch_size=budget.generate_batch_size,
        )
        stores[split] = generate(config, teacher=teacher, progress=progress).store.path
    return stores


def train(
    name: str,
    spec: str,
    args: argparse.Namespace,
    budget: Any,
    data: Path,
    teacher: LocalTeacher,
    progress: Any,
) -> Path:
    """The quickstart's recipe on this student (resumed when its run folder has checkpoints)."""
    out = args.work / "runs" / name
    if (out / "final").is_dir():
        return out
    print(f"train {name} ({spec})", flush=True)
    config = DistillConfig(
        data=data,
        out=out,
        student=spec,
        teacher=ALIAS,
        objective="topk",
        ce_weight=0.5,
        max_steps=args.steps,
        batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        warmup_steps=max(1, args.steps // 10),
        save_every=50,
        trackers=[],
    )
    distill(config, resume=(out / "checkpoints").is_dir(), teacher=teacher, progress=progress)
    return out


def scores(
    args: argparse.Namespace,
    teacher: LocalTeacher,
    heldout: Path,
    before: dict[str, Any],
    after: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    budget: Any,
    progress: PrintProgress,
) -> dict[str, Any]:
    cached = args.work / "eval.json"
    students = {f"{n} before": m for n, m in before.items()} | {
        f"{n} after": m for n, m in after.items()
    }
    if cached.is_file() and set(json.loads(cached.read_text())["names"]) == set(students):
        report = json.loads(cached.read_text())["report"]
    else:
        print("evaluate", flush=True)
        report = evaluate(
            teacher,
            students,
            heldout,
            answer_tokens=budget.answer_tokens,
            speed_tokens=budget.speed_tokens,
            progress=progress,
        )
        for model in report["models"]:
            model.pop("row_nll", None)
        cached.write_text(json.dumps({"names": list(students), "report": report}))
    by_name = {m["name"]: m for m in report["models"]}
    teacher_row = {k: by_name["teacher"][k] for k in METRICS}
    start = by_name["even before"]["nll"] if "even before" in by_name else None
    for name, row in rows.items():
        for when in ("before", "after"):
            row[when] = {k: by_name[f"{name} {when}"][k] for k in METRICS}
        if start is not None:
            row["gap_closed"] = (start - row["after"]["nll"]) / (start - teacher_row["nll"])
    return {
        "command": "python bench/prune.py " + " ".join(sys.argv[1:]),
        "recipe": {
            "objective": "topk forward KL + 0.5 CE",
            "steps": args.steps,
            "batch_size": budget.batch_size,
            "learning_rate": budget.learning_rate,
            "calibration_rows": 64,
            "train_prompts": count_lines(args.work / "prompts-train.jsonl"),
            "heldout_prompts": count_lines(args.work / "prompts-heldout.jsonl"),
        },
        "machine": f"CPU ({platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__}",
        "teacher": teacher_row,
        "rows": list(rows.values()),
    }


def markdown_table(report: dict[str, Any]) -> str:
    teacher = report["teacher"]
    lines = [
        "| student | params | layers kept | NLL before → after | gap closed | top-1 | KL "
        "| accuracy | train s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| teacher | {teacher['parameters'] / 1e6:.1f}M | 30 | {teacher['nll']:.3f} | | "
        f"{teacher['top1_agreement']:.3f} | 0 | {_accuracy(teacher)} | |",
    ]
    for row in report["rows"]:
        b, a = row["before"], row["after"]
        layers = row["kept_layers"]
        kept = "all 30" if layers is None else ",".join(map(str, layers))
        lines.append(
            f"| `{row['spec']}` | {a['parameters'] / 1e6:.1f}M | {kept} | "
            f"{b['nll']:.2f} → {a['nll']:.3f} | {row.get('gap_closed', float('nan')):.1%} | "
            f"{a['top1_agreement']:.3f} | {a['kl']:.3f} | {_accuracy(a)} | "
            f"{row['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _accuracy(entry: dict[str, Any]) -> str:
    if not entry.get("reference_count"):
        return "-"
    right = round(entry["contains_match"] * entry["reference_count"])
    return f"{right}/{entry['reference_count']}"


if __name__ == "__main__":
    main()
