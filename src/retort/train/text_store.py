"""Training on a text store: sequence-level KD for a student of any tokenizer.

A text store (``retort generate --endpoint chat`` without ``--tokenizer``) holds the teacher's
messages and completion text, no token ids. Its rows become training rows in the *student's*
tokens: the messages rendered with the student's chat template up to its assistant header
(the prompt, masked from the loss), then the completion text, and after a reply that ended its
turn (``finish_reason == "stop"``) the student's end-of-turn token, so the student learns to
stop. A completion cut by the length cap or a stop string gets no end token: the teacher did not
end there.

Only cross-entropy on that text can be trained (``--objective sft``): the teacher's top-k, as
token strings, does not line up with the student's positions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retort.config import DistillConfig
from retort.errors import StoreError
from retort.teachers.chat import end_of_turn_id, render_prompt


def refuse_teacher_objectives(config: DistillConfig, data: Path) -> None:
    """A text store has no teacher token ids or logits: only ``sft`` trains on it."""
    if config.objective != "sft":
        raise StoreError(
            f"{data}: a text store (captured without a tokenizer) has no teacher token ids or "
            f"logits for --objective {config.objective}; use --objective sft (the student "
            "learns the teacher's text in its own tokens)"
        )
    if config.hidden_weight > 0:
        raise StoreError(
            f"{data}: a text store (captured without a tokenizer) has no token ids for the "
            "teacher's hidden states; drop --hidden-weight (--objective sft trains on its text)"
        )


def rows_in_student_tokens(
    rows: list[dict[str, Any]], tokenizer: Any, data: Path
) -> list[dict[str, Any]]:
    """The text store's rows with ``prompt_token_ids`` and ``completion_token_ids`` in the
    student's tokens and no top-k (see the module docstring for what goes in).

    Raises:
        StoreError: a row whose messages are not JSON turns, or that the student's chat
            template refuses; the message names the row.
    """
    end = end_of_turn_id(tokenizer)
    converted = []
    for row in rows:
        turns = _turns(row, data)
        try:
            prompt_ids = render_prompt(tokenizer, turns)
        except Exception as exc:  # jinja TemplateError and kin
            raise StoreError(
                f"{data}: row {row['id']!r}: the student's chat template refused its messages "
                f"({exc}); choose a student whose template takes these roles"
            ) from None
        completion_ids = tokenizer(row["completion"] or "", add_special_tokens=False)["input_ids"]
        if row["finish_reason"] == "stop" and end is not None:
            completion_ids.append(end)
        converted.append(
            {
                **row,
                "prompt_token_ids": prompt_ids,
                "completion_token_ids": completion_ids,
                "topk_ids": None,
                "topk_logprobs": None,
            }
        )
    return converted


def _turns(row: dict[str, Any], data: Path) -> list[dict[str, Any]]:
    try:
        turns = json.loads(row["messages"] or "")
    except json.JSONDecodeError:
        turns = None
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise StoreError(
            f"{data}: row {row['id']!r}: messages is not a JSON list of chat turns; capture "
            "this row again (or remove it from the store)"
        )
    return turns
