"""A student from a spec: a ``prune:`` of the teacher (models/pruning.py), a distill run
folder, or a model spec."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retort.errors import ModelError
from retort.models.loading import load_model, load_tokenizer, resolve
from retort.models.pruning import parse_prune_spec, pruned
from retort.models.vocab import shared_vocab_size

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def load_student(
    spec: str, teacher: Any | None, kept: dict[str, Any] | None = None
) -> tuple[PreTrainedModel, Any]:
    """``(model, tokenizer)``. With a teacher (a ``LocalTeacher``), the student's vocabulary is
    checked against it; ``prune:`` needs one, and importance or width pruning what a run kept
    (its ``pruned.json``: ``kept``)."""
    pruning = parse_prune_spec(spec)
    if pruning is not None:
        if teacher is None:
            raise ModelError(f"--student {spec}: pruning needs the teacher; pass --teacher")
        return pruned(teacher.model, pruning, kept=kept)[0], teacher.tokenizer
    source = resolve(spec)  # a run folder resolves to its final/ (merged/ for LoRA)
    model, tokenizer = load_model(source), load_tokenizer(source)
    if teacher is not None:
        shared_vocab_size(
            teacher.tokenizer,
            tokenizer,
            teacher.model.get_input_embeddings().weight.shape[0],
            model.get_input_embeddings().weight.shape[0],
        )
    return model, tokenizer
