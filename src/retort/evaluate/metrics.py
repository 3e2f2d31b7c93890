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


POSITION_BIN = 8  # completion tokens per bucket of the by-position curves


@torch.no_grad()
def teacher_forced(
    models: dict[str, PreTrainedModel],
    teacher: PreTrainedModel | None,
    examples: list[Example],
    pad_id: int,
    vocab_size: int,
    batch_size: int,
    progress: Progress,
    details: bool = False,
    teacher_cache: dict[int, torch.Tensor] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{name: {"nll", "top1_agreement", "kl"}}``; the teacher runs once per batch.

    Without a ``teacher`` only ``nll`` is computed (the stored tokens are the reference).
    With ``details`` each model also gets ``row_nll`` (mean NLL of each example, for
    histograms) and ``by_position`` (top-1 agreement and KL per bucket of ``POSITION_BIN``
    completion positions: where in an answer the student drifts from the teacher).
    ``teacher_cache`` (a dict kept by the caller) holds the teacher's logits at the completion
    positions of each batch, so scoring the same examples again skips the teacher's forward.
    """
    device = teacher.device if teacher is not None else next(iter(models.values())).device
    stats = {name: _Sums() for name in models}
    count = 0
    progress.start("eval: teacher-forced", total=len(examples), unit="rows")
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        targets = batch["labels"][:, 1:]  # (B, L-1)
        mask = targets != IGNORE
        count += int(mask.sum())
        # Everything below is over completion positions only, (N, V): the prompt's positions
        # are scored by nobody, and their softmax over the vocabulary was most of the cost.
        rows = mask.nonzero(as_tuple=True)[0]
        wanted = targets[mask]
        # position of each target within its completion, for the by-position curves
        bucket = (mask.cumsum(1) - 1)[mask] // POSITION_BIN
        teacher_logits = _teacher_logits(teacher, inputs, mask, vocab_size, start, teacher_cache)
        for name, model in models.items():
            if model is teacher:
                logits = teacher_logits
            else:
                here = {k: v.to(model.device) for k, v in inputs.items()}
                logits = model(**here).logits[:, :-1, :vocab_size]
                logits = logits[mask.to(logits.device)].float().to(device)
            nll = F.cross_entropy(logits, wanted, reduction="none")
            top1 = kl = None
            if teacher_logits is not None:
                top1 = (logits.argmax(-1) == teacher_logits.argmax(-1)).float()
                kl = divergence(logits, teacher_logits, "forward_kl", reduction="none")
            stats[name].add(nll, rows, len(targets), bucket, top1, kl, details)
        progress.advance(len(batch["input_ids"]))
    progress.finish()
    return {name: s.result(max(count, 1), details) for name, s in stats.items()}


def _teacher_logits(
    teacher: PreTrainedModel | None,
    inputs: dict[str, torch.Tensor],
    mask: torch.Tensor,
    vocab_size: int,
    start: int,
    cache: dict[int, torch.Tensor] | None,
) -> torch.Tensor | None:
    """The teacher's float logits ``(N, V)`` at the batch's completion positions."""
    if teacher is None:
        return None
    if cache is not None and start in cache:
        return cache[start]
    logits = teacher(**inputs).logits[:, :-1, :vocab_size][mask].float()
    if cache is not None:
        cache[start] = logits
    return logits


class _Sums:
    """One model's running sums over the held-out tokens."""

    def __init__(self) -> None:
        self.nll = self.top1 = self.kl = 0.0
        self.scored_by_teacher = False
        self.row_nll: list[float] = []
        self.bins: dict[str, torch.Tensor] = {}

    def add(
        self,
        nll: torch.Tensor,
        rows: torch.Tensor,
        batch_rows: int,
        bucket: torch.Tensor,
        top1: torch.Tensor | None,
        kl: torch.Tensor | None,
        details: bool,
    ) -> None:
        """Per-position values ``(N,)``; ``rows`` says which of the ``batch_rows`` each is in."""
        self.nll += float(nll.sum())
        if top1 is not None:
            self.scored_by_teacher = True
            self.top1 += float(top1.sum())
            self.kl += float(kl.sum())
        if not details:
            return
        per_row = torch.zeros(batch_rows, dtype=torch.float64)
        per_row.index_add_(0, rows.cpu(), nll.double().cpu())
        tokens = torch.bincount(rows.cpu(), minlength=batch_rows)
        self.row_nll += (per_row / tokens.clamp(min=1))[tokens > 0].tolist()
        if top1 is None:
            return
        size = int(bucket.max()) + 1 if bucket.numel() else 0
        columns = {
            "count": torch.ones_like(bucket, dtype=torch.float64),
            "top1": top1.double(),
            "kl": kl.double(),
        }
        for key, values in columns.items():
            sums = torch.zeros(size, dtype=torch.float64).index_add_(0, bucket.cpu(), values.cpu())
            old = self.bins.get(key, torch.zeros(0, dtype=torch.float64))
            width = max(len(old), size)
            merged = torch.zeros(width, dtype=torch.float64)
            merged[: len(old)] += old
            merged[:size] += sums
            self.bins[key] = merged

    def result(self, count: int, details: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"nll": self.nll / count}
        if self.scored_by_teacher:
            out.update(top1_agreement=self.top1 / count, kl=self.kl / count)
        if details:
            out["row_nll"] = self.row_nll
            if self.bins:
                counts = self.bins["count"].clamp(min=1)
                out["by_position"] = {
                    "bin": POSITION_BIN,
                    "tokens": self.bins["count"].long().tolist(),
                    "top1_agreement": (self.bins["top1"] / counts).tolist(),
                    "kl": (self.bins["kl"] / counts).tolist(),
                }
        return out


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
