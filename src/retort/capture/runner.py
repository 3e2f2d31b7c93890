"""``retort generate``: prompts → teacher → store, batched, resumable, interruptible.

Order of work: validate every prompt (no teacher call on bad input), load the teacher, open
the store under the run's fingerprint (refused on mismatch), skip ids already stored, generate
the rest in length-sorted batches, and write a shard every ``rows_per_shard`` rows. Ctrl-C
writes the rows already generated before it re-raises.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from retort.capture.prompts import PromptRecord, load_prompts
from retort.capture.store import CODEC, Store
from retort.config import GenerateConfig
from retort.errors import InputError, TeacherError
from retort.models.vocab import tokenizer_hash
from retort.progress import Progress, Silent
from retort.teachers.chat import chat_messages, render_prompt
from retort.teachers.local import LocalTeacher
from retort.teachers.protocol import Sampling, Teacher


@dataclass
class GenerateResult:
    """What a generate run did."""

    store: Store
    written: int  # rows added by this run
    skipped: int  # rows that were already in the store
    failures: list[dict[str, Any]]
    seconds: float


def sampling_of(config: GenerateConfig) -> Sampling:
    return Sampling(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
    )


def fingerprint(teacher: Teacher, sampling: Sampling, top_k: int) -> dict[str, Any]:
    """Everything that makes two captures comparable; a store holds rows of one fingerprint."""
    identity = teacher.identity()
    return {
        "teacher": identity.pop("model"),
        "teacher_weights": json.dumps(identity, sort_keys=True) if identity else None,
        "tokenizer_sha256": tokenizer_hash(teacher.tokenizer),
        "chat_template_sha256": _sha256(teacher.tokenizer.chat_template or ""),
        "mode": "generate",
        **sampling.as_dict(),
        "top_k": top_k,
        "codec": CODEC,
    }


def generate(
    config: GenerateConfig,
    teacher: Teacher | None = None,
    progress: Progress | None = None,
) -> GenerateResult:
    """Run a capture described by ``config``; load the teacher from ``config.teacher`` if needed."""
    progress = progress or Silent()
    sampling = sampling_of(config)
    records = load_prompts(config.prompts, sampling.as_dict())  # before any teacher work
    if teacher is None:
        teacher = LocalTeacher.load(config.teacher)
    if config.top_k > teacher.capabilities.max_top_k:
        raise TeacherError(
            f"--top-k {config.top_k}: this teacher returns at most "
            f"{teacher.capabilities.max_top_k} logprobs per position"
        )
    # Every prompt is rendered before the store is touched: a template error is an input error.
    rendered = [(r, _render(teacher, r)) for r in records]
    store = Store.create_or_resume(config.out, fingerprint(teacher, sampling, config.top_k))
    done = store.done_ids()
    todo = [(r, ids) for r, ids in rendered if r.id not in done]
    started = time.perf_counter()
    failures: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    written = 0

    def flush() -> None:
        nonlocal written
        if pending:
            # Taken off the list before writing: a Ctrl-C during append must not make the
            # finally-flush write the same rows again.
            rows = pending[:]
            pending.clear()
            store.append(rows)
            written += len(rows)

    limit = getattr(teacher, "max_positions", None)
    runnable = []
    for record, ids in todo:
        if limit and len(ids) + config.max_new_tokens > limit:
            reason = (
                f"prompt is {len(ids)} tokens; with max_new_tokens the teacher's {limit} overflow"
            )
            failures.append({"id": record.id, "reason": reason, "attempts": 1})
        else:
            runnable.append((record, ids))
    runnable.sort(key=lambda pair: len(pair[1]))  # similar lengths batch with less padding

    progress.start("generate", total=len(runnable), unit="prompts")
    try:
        for start in range(0, len(runnable), config.batch_size):
            batch = runnable[start : start + config.batch_size]
            tick = time.perf_counter()
            outputs = teacher.generate([ids for _, ids in batch], sampling, config.top_k)
            latency = (time.perf_counter() - tick) * 1000 / len(batch)
            for (record, ids), out in zip(batch, outputs, strict=True):
                pending.append(_row(record, ids, out, teacher, latency))
            if len(pending) >= config.rows_per_shard:
                flush()
            new_tokens = sum(len(o.completion_ids) for o in outputs)
            progress.advance(len(batch), tokens=new_tokens)
    finally:
        # Interrupted or not, what was generated is kept.
        flush()
        store.record_failures(failures)
        progress.finish()
    return GenerateResult(
        store, written, len(records) - len(todo), failures, time.perf_counter() - started
    )


def _render(teacher: Teacher, record: PromptRecord) -> list[int]:
    turns = chat_messages(record.prompt, record.messages, record.system)
    try:
        return render_prompt(teacher.tokenizer, turns)
    except Exception as exc:  # jinja TemplateError and kin: the template refused these turns
        raise InputError(f"{record.where}: the chat template refused this record ({exc})") from None


def _row(
    record: PromptRecord, prompt_ids: list[int], out: Any, teacher: Teacher, latency_ms: float
) -> dict[str, Any]:
    return {
        "id": record.id,
        "prompt": record.canonical(),
        "system": record.system,
        "reference": record.reference,
        "completion": teacher.tokenizer.decode(out.completion_ids, skip_special_tokens=True),
        "finish_reason": out.finish_reason,
        "prompt_token_ids": prompt_ids,
        "completion_token_ids": out.completion_ids,
        "topk_ids": out.topk_ids,
        "topk_logprobs": out.topk_logprobs,
        "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(out.completion_ids)},
        "latency_ms": latency_ms,
    }


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
