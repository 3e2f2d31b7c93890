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

    With a chat template the template adds the assistant header (and BOS, where the template
    writes one); a base model without one gets the user turns joined as plain text, after BOS
    when its tokenizer puts BOS before every text (Llama, Mistral, Gemma) as the model was
    trained to see.
    """
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    text = "\n\n".join(str(t["content"]) for t in turns) + "\n\n"
    return leading_bos(tokenizer) + tokenizer(text, add_special_tokens=False)["input_ids"]


def leading_bos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """``[bos_token_id]`` if the tokenizer's own special tokens start with BOS, else ``[]``.

    Only BOS is taken from ``add_special_tokens``: some tokenizers also append EOS there, which
    would end a prompt before the model has answered.
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    specials = tokenizer("", add_special_tokens=True)["input_ids"]
    return [bos] if specials[:1] == [bos] else []


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token that ends a model's turn: the first special token the chat template puts
    after an assistant message (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``), else the
    tokenizer's EOS (a base model), else None."""
    marker = "\x00retort-answer\x00"
    if tokenizer.chat_template:
        turns = [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}]
        try:
            text = tokenizer.apply_chat_template(turns, tokenize=False)
        except Exception:  # a template that refuses this shape: fall back to the EOS token
            text = ""
        if marker in text:
            after = text[text.rindex(marker) + len(marker) :]
            special = set(tokenizer.all_special_ids)
            for token in tokenizer(after, add_special_tokens=False)["input_ids"]:
                if token in special:
                    return token
    return tokenizer.eos_token_id
