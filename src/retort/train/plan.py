"""``retort distill --dry-run``: what a run will cost, before it runs.

Counts come from the loaded models and the store; memory is an estimate (weights, gradients and
AdamW state of the trainable weights, the teacher's weights, activations and logits of one
micro-batch); wall time comes from timing a few real steps in a scratch folder.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from retort.config import DistillConfig
from retort.models.loading import parameter_count
from retort.train.data import examples_from_rows
from retort.train.setup import assemble

MIB = 1024**2


def dry_run(config: DistillConfig, timed_steps: int = 4, world: int = 1) -> dict[str, Any]:
    """The plan of ``config``: counts, estimated memory, and seconds per step measured on
    ``timed_steps`` steps (the first, warm-up, excluded)."""
    from retort.train.loop import distill

    parts = assemble(config)
    examples = examples_from_rows(parts.rows, config.max_seq_len)
    targets = [len(e.input_ids) - e.prompt_length for e in examples]
    mean_target = statistics.fmean(targets)
    if config.objective == "on_policy":  # samples are at most sample_max_new_tokens long
        mean_target = config.lmbda * config.sample_max_new_tokens + (1 - config.lmbda) * mean_target
    sequences_per_step = config.batch_size * config.grad_accum * world
    tokens_per_step = mean_target * sequences_per_step
    steps = config.max_steps
    if config.max_tokens:
        steps = min(steps, int(-(-config.max_tokens // max(tokens_per_step, 1))))
    trainable = sum(p.numel() for p in parts.student.parameters() if p.requires_grad)
    teacher = parts.teacher.model if parts.plan.needs_teacher else None
    plan: dict[str, Any] = {
        "student_parameters": parameter_count(parts.student),
        "trainable_parameters": trainable,
        "teacher": _teacher_row(config, parts, teacher),
        "rows": len(examples),
        "sequences_per_step": sequences_per_step,
        "tokens_per_step": round(tokens_per_step),
        "steps": steps,
        "memory_mib": round(_memory_bytes(config, parts, examples) / MIB, 1),
    }
    pruned = getattr(parts.student.config, "retort_pruned", None)
    if pruned and pruned.get("layers"):
        plan["kept_layers"] = pruned["layers"]
    plan["packed"] = parts.pack
    if config.fsdp:  # the estimate is one unsharded process's; timed steps run unsharded
        plan["fsdp"] = (
            f"{' and '.join(config.fsdp)}: their weights (and optimizer state) ÷ processes"
        )
    with tempfile.TemporaryDirectory(prefix="retort-dry-run-") as scratch:
        timing = config.model_copy(
            update={
                "out": Path(scratch) / "run",
                "max_steps": timed_steps,
                "max_tokens": None,
                "save_every": 10**9,
                "log_every": 1,
                "trackers": [],
                "eval_data": None,  # steps are timed without held-out scoring
                "fsdp": [],  # one process has nothing to shard over
            }
        )
        distill(timing, teacher=parts.teacher)
        seconds = [r["step_seconds"] for r in _records(Path(scratch) / "run" / "metrics.jsonl")[1:]]
    plan["seconds_per_step"] = round(statistics.fmean(seconds), 3)
    plan["estimated_minutes"] = round(plan["seconds_per_step"] * steps / 60, 1)
    return plan


def _teacher_row(config: DistillConfig, parts: Any, teacher: Any) -> str:
    """What the teacher is during training: a live model, or what the store kept of it (a
    top-k run reads the teacher from the store; it is loaded only to prune the student)."""
    if teacher is not None:
        return f"live, {parameter_count(teacher):,} parameters in memory"
    if parts.live is not None:
        return (
            f"live, {parameter_count(parts.live.model):,} parameters in memory, scoring each "
            f"batch in its own tokens (top-{parts.top_k}, aligned by bytes)"
        )
    if parts.scorer is not None:
        return f"{config.teacher} over HTTP, scoring the student's samples"
    if config.objective == "topk":
        return f"the store's top-{parts.top_k} logprobs per token (no live teacher)"
    if config.objective == "cross_tokenizer":
        return f"the store's top-{parts.top_k} token strings, aligned by bytes (no live teacher)"
    return "the store's completions (no live teacher)"


def _memory_bytes(config: DistillConfig, parts: Any, examples: list[Any]) -> float:
    student = parts.student
    weight_bytes = sum(p.numel() * p.element_size() for p in student.parameters())
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    optimizer_bytes = trainable * (4 + 4 + 4)  # gradient + AdamW's two moments, fp32
    teacher_bytes = 0
    if parts.plan.needs_teacher or parts.live is not None:
        teacher_bytes = sum(p.numel() * p.element_size() for p in parts.teacher.model.parameters())
    longest = max(len(e.input_ids) for e in examples)
    if config.objective == "on_policy":
        longest = max(
            longest, max(e.prompt_length for e in examples) + config.sample_max_new_tokens
        )
    tokens = config.batch_size * min(longest, config.max_seq_len)
    cfg = student.config
    hidden = getattr(cfg, "hidden_size", 0)
    layers = getattr(cfg, "num_hidden_layers", 0)
    # ~16 saved activations of width hidden per token per layer (attention + MLP, fp32)
    activation_bytes = tokens * hidden * layers * 16 * 4
    vocab = parts.vocab_size
    logit_rows = config.chunk_size if not parts.plan.student_logits else tokens
    logit_bytes = logit_rows * vocab * 4 * (4 if parts.plan.teacher_logits else 2)
    return weight_bytes + optimizer_bytes + teacher_bytes + activation_bytes + logit_bytes


def _records(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line]
