"""Put together what a distillation run needs: the store's rows, student, teacher, vocab width.

Everything here fails before the run folder is created, so a bad flag never leaves one behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retort.capture.store import Store
from retort.config import DistillConfig
from retort.errors import ModelError, StoreError
from retort.models.loading import load_model, load_tokenizer, resolve
from retort.models.pruning import parse_prune_spec, prune_layers
from retort.models.vocab import shared_vocab_size, tokenizer_hash
from retort.teachers.local import LocalTeacher

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class RunParts:
    """The pieces of a run, loaded and checked against each other."""

    store: Store
    rows: list[dict[str, Any]]
    student: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    teacher: LocalTeacher | None  # loaded when the objective or the student needs it
    vocab_size: int  # logit columns shared by student and teacher
    top_k: int  # teacher logprobs per position in the store (0: text only)


def assemble(
    config: DistillConfig,
    teacher: LocalTeacher | None = None,
    student: PreTrainedModel | None = None,
) -> RunParts:
    """Open the store, load or build the models, and check that they fit together."""
    store = Store.open(config.data)
    rows = store.read_table().to_pylist()
    if not rows:
        raise StoreError(f"{config.data}: store has no rows; run retort generate first")
    top_k = int(store.fingerprint.get("top_k") or 0)
    if config.objective == "topk_kl" and top_k == 0:
        raise StoreError(
            f"{config.data}: store has no teacher logprobs (top_k 0); "
            "use --objective sft, or capture with --top-k 20"
        )

    keep = parse_prune_spec(config.student)
    needs_teacher = config.objective == "online_kl" or keep is not None
    if teacher is None and needs_teacher:
        teacher = LocalTeacher.load(config.teacher)
    if student is None:
        if keep is not None:
            student = prune_layers(teacher.model, keep)
        else:
            student = load_model(resolve(config.student))
    tokenizer = teacher.tokenizer if keep is not None else load_tokenizer(resolve(config.student))

    student_rows = student.get_input_embeddings().weight.shape[0]
    vocab_size = student_rows
    if teacher is not None:
        teacher_rows = teacher.model.get_input_embeddings().weight.shape[0]
        vocab_size = shared_vocab_size(teacher.tokenizer, tokenizer, teacher_rows, student_rows)
    if tokenizer_hash(tokenizer) != store.fingerprint.get("tokenizer_sha256"):
        raise ModelError(
            f"--student {config.student}: its tokenizer differs from the one that made "
            f"{config.data}; the student must share the teacher's tokenizer"
        )
    return RunParts(store, rows, student, tokenizer, teacher, vocab_size, top_k)
