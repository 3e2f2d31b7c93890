"""Teacher-forced metrics on the teacher's held-out completions, and reference accuracy.

For each model, over every completion token of the held-out store:
- ``nll``: mean negative log-likelihood of the teacher's token (nats/token);
- ``top1_agreement``: share of positions where the model's argmax is the teacher's argmax;
- ``kl``: mean KL(teacher ‖ model) over the full vocabulary, from live teacher logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from retort.evaluate.answers import contains_match, exact_match
from retort.losses import divergence
from retort.progress import Progress
from retort.teachers.local import LocalTeacher
from retort.teachers.protocol import Sampling
from retort.train.data import IGNORE, Example, collate

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@torch.no_grad()
def teacher_forced(
    models: dict[str, PreTrainedModel],
    teacher: PreTrainedModel,
    examples: list[Example],
    pad_id: int,
    vocab_size: int,
    batch_size: int,
    progress: Progress,
) -> dict[str, dict[str, float]]:
    """``{name: {"nll", "top1_agreement", "kl"}}``; the teacher runs once per batch."""
    sums = {name: {"nll": 0.0, "top1": 0.0, "kl": 0.0} for name in models}
    count = 0
    progress.start("eval: teacher-forced", total=len(examples), unit="rows")
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id)
        batch = {k: v.to(teacher.device) for k, v in batch.items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        targets = batch["labels"][:, 1:]  # (B, L-1)
        mask = targets != IGNORE
        count += int(mask.sum())
        teacher_logits = teacher(**inputs).logits[:, :-1, :vocab_size].float()  # (B, L-1, V)
        teacher_top1 = teacher_logits.argmax(-1)
        for name, model in models.items():
            if model is teacher:
                logits = teacher_logits
            else:
                here = {k: v.to(model.device) for k, v in inputs.items()}
                logits = model(**here).logits[:, :-1, :vocab_size].float().to(teacher.device)
            sums[name]["nll"] += float(
                F.cross_entropy(
                    logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
                )
            )
            sums[name]["top1"] += float(((logits.argmax(-1) == teacher_top1) & mask).sum())
            sums[name]["kl"] += float(
                divergence(logits, teacher_logits, "forward_kl", mask=mask, reduction="sum")
            )
        progress.advance(len(batch["input_ids"]))
    progress.finish()
    count = max(count, 1)
    return {
        name: {"nll": s["nll"] / count, "top1_agreement": s["top1"] / count, "kl": s["kl"] / count}
        for name, s in sums.items()
    }


@torch.no_grad()
def answer_metrics(
    model: PreTrainedModel,
    teacher: LocalTeacher,
    rows: list[dict[str, Any]],
    max_new_tokens: int,
    batch_size: int,
    keep_answers: int = 0,
) -> dict[str, Any]:
    """The model's greedy answers to every row: graded against ``reference`` where a row has
    one (exact, contains), and scored by the teacher (``teacher_nll_of_answers``: the teacher's
    mean NLL per token of what the model wrote; how much the teacher likes it). The answers to
    the first ``keep_answers`` rows come back as text (``answers``), for people to read."""
    tokenizer = teacher.tokenizer
    runner = LocalTeacher(model, tokenizer)
    sampling = Sampling(max_new_tokens=max_new_tokens)
    exact = contains = graded = 0
    kept: list[str] = []
    nll, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        prompts = [list(r["prompt_token_ids"]) for r in chunk]
        outputs = runner.generate(prompts, sampling, top_k=0)
        sequences = [p + o.completion_ids for p, o in zip(prompts, outputs, strict=True)]
        for prompt, scored in zip(prompts, teacher.token_logprobs(sequences), strict=True):
            written = scored[len(prompt) - 1 :]  # position i scores token i+1
            nll -= sum(written)
            tokens += len(written)
        for row, out in zip(chunk, outputs, strict=True):
            answer = tokenizer.decode(out.completion_ids, skip_special_tokens=True)
            if len(kept) < keep_answers:
                kept.append(answer)
            if not row.get("reference"):
                continue
            graded += 1
            exact += exact_match(answer, row["reference"])
            contains += contains_match(answer, row["reference"])
    return {
        "exact_match": exact / graded if graded else None,
        "contains_match": contains / graded if graded else None,
        "reference_count": graded,
        "teacher_nll_of_answers": nll / max(tokens, 1),
        "answer_length": tokens / max(len(rows), 1),
        "answers": kept,
    }
