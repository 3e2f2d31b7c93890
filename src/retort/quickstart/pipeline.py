"""The quickstart: generate → prune (``prune:10:importance``) → distill (``topk`` forward KL +
CE) → eval, on the embedded SmolLM2-135M-Instruct teacher and the built-in prompts
(``prompts.jsonl`` beside this file, made by ``scripts/build_quickstart_prompts.py``), in one
run folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from retort.capture.prompts import load_prompts
from retort.capture.runner import generate
from retort.capture.store import Store
from retort.config import DistillConfig, GenerateConfig
from retort.errors import ConfigError
from retort.evaluate.run import evaluate
from retort.models.embedded import ALIAS
from retort.models.importance import calibration_sequences
from retort.models.pruning import parse_prune_spec, prune
from retort.progress import Progress, Silent
from retort.report.page import write as write_report
from retort.report.sources import gather
from retort.teachers.local import LocalTeacher
from retort.train.loop import distill
from retort.train.retention import prune_checkpoints

PROMPTS = Path(__file__).with_name("prompts.jsonl")
HELDOUT_SHARE = 0.2
STUDENT = "prune:10:importance"  # bench/prune.py: closes more of the gap than even spacing
REPORT = "report.html"
TITLE = "retort quickstart: what the student kept"
T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    """How much work each stage does."""

    train_prompts: int
    heldout_prompts: int
    max_new_tokens: int
    steps: int
    batch_size: int = 8
    generate_batch_size: int = 16
    learning_rate: float = 3e-4
    answer_tokens: int = 24
    speed_tokens: int = 32


BUDGETS = {
    # ≤ 5 minutes on 2 CPU cores (the integration test runs it).
    "tiny": Budget(
        train_prompts=48, heldout_prompts=16, max_new_tokens=32, steps=30, speed_tokens=16
    ),
    # ≤ 20 minutes on 2 CPU cores: every built-in prompt.
    "default": Budget(train_prompts=10_000, heldout_prompts=10_000, max_new_tokens=48, steps=200),
}


@dataclass
class QuickstartResult:
    run_dir: Path
    budget: str
    stages: dict[str, float] = field(default_factory=dict)  # wall seconds per stage
    report: dict[str, Any] = field(default_factory=dict)  # the eval report


def split_prompts(budget: Budget, run_dir: Path) -> tuple[Path, Path]:
    """Write the train and held-out prompt files; the split is fixed by each prompt's id."""
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    train, heldout = [], []
    for record in records:
        bucket = int(hashlib.sha256(record["id"].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (heldout if bucket < HELDOUT_SHARE else train).append(record)
    paths = run_dir / "prompts-train.jsonl", run_dir / "prompts-heldout.jsonl"
    for path, chosen in zip(
        paths, (train[: budget.train_prompts], heldout[: budget.heldout_prompts]), strict=True
    ):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen))
    return paths


def run_quickstart(
    budget_name: str = "default",
    run_dir: Path | None = None,
    progress: Progress | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> QuickstartResult:
    """Run the whole pipeline; every output lands in ``run_dir``."""
    if budget_name not in BUDGETS:
        raise ConfigError(f"--budget {budget_name}: use one of {', '.join(BUDGETS)}")
    budget = BUDGETS[budget_name]
    progress = progress or Silent()
    run_dir = Path(run_dir or Path("runs") / time.strftime("quickstart-%Y%m%d-%H%M%S"))
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: --out is a file; give a folder")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: folder exists and is not empty; choose another --out")
    load_prompts(PROMPTS)  # the shipped file is validated like a user's
    result = QuickstartResult(run_dir, budget_name)

    def stage(name: str, work: Callable[[], T]) -> T:
        if on_stage:
            on_stage(name)
        started = time.perf_counter()
        value = work()
        result.stages[name] = time.perf_counter() - started
        return value

    # The teacher loads before the run folder exists: a missing package leaves nothing behind.
    teacher = stage("load teacher", lambda: LocalTeacher.load(ALIAS))
    run_dir.mkdir(parents=True, exist_ok=True)
    train_prompts, heldout_prompts = split_prompts(budget, run_dir)

    def capture(prompts: Path, out: Path) -> None:
        settings = GenerateConfig(
            teacher=ALIAS,
            prompts=prompts,
            out=out,
            max_new_tokens=budget.max_new_tokens,
            batch_size=budget.generate_batch_size,
        )
        generate(settings, teacher=teacher, progress=progress)

    stage(
        "generate",
        lambda: (
            capture(train_prompts, run_dir / "store-train"),
            capture(heldout_prompts, run_dir / "store-heldout"),
        ),
    )
    config = DistillConfig(
        data=run_dir / "store-train",
        out=run_dir / "student",
        student=STUDENT,
        teacher=ALIAS,
        objective="topk",
        ce_weight=0.5,
        max_steps=budget.steps,
        batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        warmup_steps=max(1, budget.steps // 10),
        save_every=budget.steps,
        # held-out curves for the report: six points (step 0 and every fifth of the run) on a
        # sample small enough to cost seconds each once the teacher's logits are cached; ten
        # points took the default budget past its 20 minutes on a slow 2-core machine
        eval_data=run_dir / "store-heldout",
        eval_every=max(1, budget.steps // 5),
        eval_rows=64,
        keep_checkpoints=0,  # final/ is the product; its checkpoint would triple the folder
    )
    before = stage("prune", lambda: _pruned_student(teacher, config))
    student = copy.deepcopy(before)  # pruned once: importance costs a pass over store rows
    stage("distill", lambda: distill(config, teacher=teacher, student=student, progress=progress))
    prune_checkpoints(config.out, config.keep_checkpoints)
    result.report = stage(
        "eval",
        lambda: evaluate(
            teacher,
            {"student before": before, "student after": student},
            run_dir / "store-heldout",
            run_dir / "eval",
            answer_tokens=budget.answer_tokens,
            speed_tokens=budget.speed_tokens,
            progress=progress,
        ),
    )
    summary = {
        "budget": budget_name,
        "settings": asdict(budget),
        # the budget caps; these are the prompts the built-in set actually gave
        "prompts": {"train": _count_lines(train_prompts), "heldout": _count_lines(heldout_prompts)},
        "stages_s": result.stages,
        "eval": result.report,
    }
    (run_dir / "quickstart.json").write_text(json.dumps(summary, indent=2) + "\n")
    stage("report", lambda: write_report(gather([run_dir], [], []), run_dir / REPORT, TITLE))
    return result


def _pruned_student(teacher: LocalTeacher, config: DistillConfig) -> Any:
    """The untrained student ``STUDENT`` describes, as ``retort distill`` would build it."""
    spec = parse_prune_spec(STUDENT)
    calibration = None
    if spec.needs_calibration:
        rows = Store.open(config.data).read_table().to_pylist()
        calibration = calibration_sequences(
            rows, config.prune_calibration, config.max_seq_len, config.data
        )
    return prune(teacher.model, spec, calibration)


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())
