"""Render prompt records into the token ids the teacher sees."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def chat_messages(
    prompt: str | None, messages: list[dict[str, Any]] | None, system: str | None
) -> list[dict[str, Any]]:
    """A record's conversation: its ``messages``, or its ``prompt`` as one user turn."""
    turns = list(messages) if messages else [{"role": "user", "content": prompt}]
    if system and not any(t.get("role") == "system" for t in turns):
        turns.insert(0, {"role": "system", "content": system})
    return turns


def render_prompt(tokenizer: PreTrainedTokenizerBase, turns: list[dict[str, Any]]) -> list[int]:
    """Token ids of the conversation up to the assistant's turn.

    With a chat template the template adds the assistant header; a base model without one gets
    the user turns joined as plain text.
    """
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    else:
        text = "\n\n".join(str(t["content"]) for t in turns) + "\n\n"
    return tokenizer(text, add_special_tokens=False)["input_ids"]
