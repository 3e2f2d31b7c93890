"""Teacher and student must speak the same tokens for token-level distillation.

Tokenizers are compared by their vocabularies (token → id) and special tokens. Models whose
embedding matrices are padded to different sizes (e.g. 151,936 vs 152,064 rows for the same
tokenizer) are aligned by keeping the common leading rows, which covers every real token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retort.errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def shared_vocab_size(
    teacher_tokenizer: PreTrainedTokenizerBase,
    student_tokenizer: PreTrainedTokenizerBase,
    teacher_rows: int,
    student_rows: int,
) -> int:
    """The number of logit columns both models share; refuses different tokenizers.

    Returns:
        ``min(teacher_rows, student_rows)``: slice both models' logits to this width.
    """
    teacher_vocab = teacher_tokenizer.get_vocab()
    student_vocab = student_tokenizer.get_vocab()
    if teacher_vocab != student_vocab:
        differing = [t for t in teacher_vocab if student_vocab.get(t) != teacher_vocab[t]]
        extra = len(set(student_vocab) - set(teacher_vocab))
        example = f" e.g. {differing[0]!r}" if differing else ""
        raise ModelError(
            f"student tokenizer differs from the teacher's ({len(differing)} teacher tokens "
            f"missing or renumbered{example}, {extra} extra); token-level distillation needs "
            "one tokenizer: pick a student of the teacher's family"
        )
    if teacher_tokenizer.all_special_tokens != student_tokenizer.all_special_tokens:
        raise ModelError(
            "student and teacher tokenizers have different special tokens "
            f"({teacher_tokenizer.all_special_tokens} vs {student_tokenizer.all_special_tokens})"
        )
    needed = len(teacher_vocab)
    shared = min(teacher_rows, student_rows)
    if shared < needed:
        raise ModelError(
            f"a model has {shared} embedding rows for a tokenizer of {needed} tokens; "
            "resize its embeddings to the tokenizer first"
        )
    return shared


def tokenizer_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the vocabulary and special tokens: equal hashes mean interchangeable ids."""
    import hashlib
    import json

    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    specials = json.dumps(tokenizer.all_special_tokens, ensure_ascii=False)
    return hashlib.sha256((vocab + specials).encode()).hexdigest()
