"""``retort eval``: the student(s) and the teacher, side by side, on held-out teacher data."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retort.capture.runner import other_teacher, teacher_names
from retort.capture.store import Store
from retort.errors import ModelError, StoreError
from retort.evaluate.metrics import answer_metrics, teacher_forced
from retort.evaluate.speed import tokens_per_second
from retort.models.loading import parameter_count
from retort.models.vocab import tokenizer_hash
from retort.progress import Progress, Silent
from retort.teachers.local import LocalTeacher
from retort.train.data import examples_from_rows

if TYPE_CHECKING:
    from transformers import PreTrainedModel

TEACHER = "teacher"


SAMPLE_ROWS = 8  # prompts whose answers eval.json keeps as text


def evaluate(
    teacher: LocalTeacher,
    students: dict[str, PreTrainedModel],
    data: Path,
    out: Path | None = None,
    *,
    batch_size: int = 8,
    max_seq_len: int = 1024,
    answer_tokens: int = 32,
    speed_tokens: int = 32,
    progress: Progress | None = None,
    allow_other_teacher: bool = False,
) -> dict[str, Any]:
    """Score the teacher and every student on ``data``; write ``out/eval.json`` when given.

    Returns:
        ``{"data", "rows", "target_tokens", "models": [{"name", "parameters", "nll",
        "top1_agreement", "kl", "exact_match", "contains_match", "reference_count",
        "teacher_nll_of_answers", "answer_length", "tokens_per_s_batch1",
        "tokens_per_s_batch8", "row_nll": [per example], "by_position": {"bin", "tokens",
        "top1_agreement", "kl"}}, ...], "samples": [{"id", "prompt", "reference",
        "stored_completion", "answers": {model: text}}, ...]}``, teacher first.
    """
    progress = progress or Silent()
    store = Store.open(data)
    store.require_token_ids("retort eval (teacher-forced scores of the stored tokens)")
    if store.fingerprint.get("tokenizer_sha256") != tokenizer_hash(teacher.tokenizer):
        raise StoreError(f"{data}: store was made with another tokenizer than this teacher's")
    # Against another teacher's text the teacher row would read top-1 1.000, KL 0.000 on
    # completions it never wrote.
    differs = None if allow_other_teacher else other_teacher(store.fingerprint, teacher.identity())
    if differs is not None:
        raise StoreError(
            f"{data}: written by another teacher than the one evaluated ({differs}); give "
            "the teacher that made it, or --allow-other-teacher to score against it anyway"
        )
    rows = store.read_table().to_pylist()
    if not rows:
        raise StoreError(f"{data}: store has no rows to evaluate on")
    models = {TEACHER: teacher.model, **students}
    # Students were checked to share the teacher's tokenizer when loaded; embedding matrices
    # may still be padded differently, so compare over the columns all of them have.
    vocab_size = min(m.get_input_embeddings().weight.shape[0] for m in models.values())
    if vocab_size < len(teacher.tokenizer):
        raise ModelError(
            f"a model has {vocab_size} embedding rows for {len(teacher.tokenizer)} tokens"
        )
    for model in models.values():
        model.eval()
    examples = examples_from_rows(rows, max_seq_len)
    pad_id = teacher.tokenizer.pad_token_id

    scores = teacher_forced(
        models, teacher.model, examples, pad_id, vocab_size, batch_size, progress, details=True
    )
    speed_prompts = [r["prompt_token_ids"] for r in rows[:8]]
    results = []
    answers: dict[str, list[str]] = {}
    progress.start("eval: answers and speed", total=len(models), unit="models")
    for name, model in models.items():
        started = time.perf_counter()
        entry: dict[str, Any] = {"name": name, "parameters": parameter_count(model)}
        entry.update(scores[name])
        graded = answer_metrics(model, teacher, rows, answer_tokens, batch_size, SAMPLE_ROWS)
        answers[name] = graded.pop("answers")
        entry.update(graded)
        entry["tokens_per_s_batch1"] = tokens_per_second(
            model, speed_prompts, 1, speed_tokens, pad_id
        )
        entry["tokens_per_s_batch8"] = tokens_per_second(
            model, speed_prompts, 8, speed_tokens, pad_id
        )
        entry["seconds"] = time.perf_counter() - started
        results.append(entry)
        progress.advance(1)
    progress.finish()

    name, weights = teacher_names(teacher.identity())
    report = {
        "data": str(data),
        "teacher": {"name": name, "weights": weights},  # whom every row was scored against
        "rows": len(examples),
        "target_tokens": sum(len(e.input_ids) - e.prompt_length for e in examples),
        "models": results,
        # A few prompts with every model's greedy answer beside the teacher's stored one.
        "samples": [
            {
                "id": row["id"],
                "prompt": row["prompt"],
                "reference": row.get("reference"),
                "stored_completion": row["completion"],
                "answers": {name: texts[i] for name, texts in answers.items()},
            }
            for i, row in enumerate(rows[:SAMPLE_ROWS])
        ],
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        partial = out / ".eval.json.partial"
        partial.write_text(json.dumps(report, indent=2) + "\n")
        partial.replace(out / "eval.json")
    return report
