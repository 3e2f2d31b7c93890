"""Prompt rendering: a chat template renders the turns; a base model without one gets plain
text, preceded by BOS when its tokenizer puts one before every text."""

from __future__ import annotations

import copy

from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from retort.teachers.chat import chat_messages, render_prompt
from tests.conftest import train_tokenizer

BOS = "<|endoftext|>"


def base_tokenizer(adds_bos: bool) -> PreTrainedTokenizerFast:
    """The tiny tokenizer as a base model's: no chat template, a BOS token, and (like Llama's
    or Mistral's) a post-processor that puts BOS before every text, or (like GPT-2's) none."""
    core = copy.deepcopy(train_tokenizer().backend_tokenizer)
    if adds_bos:
        bos = core.token_to_id(BOS)
        core.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos)]
        )
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token="<|im_end|>")


def test_a_base_model_without_a_chat_template_gets_its_bos():
    tokenizer = base_tokenizer(adds_bos=True)
    assert not tokenizer.chat_template
    turns = chat_messages("What is the capital of France?", None, None)
    ids = render_prompt(tokenizer, turns)
    text = tokenizer("What is the capital of France?\n\n", add_special_tokens=False)["input_ids"]
    assert ids == [tokenizer.bos_token_id, *text]


def test_a_tokenizer_that_adds_no_bos_gets_none():
    # GPT-2-style: a BOS token exists but the tokenizer never puts it before a text.
    tokenizer = base_tokenizer(adds_bos=False)
    ids = render_prompt(tokenizer, chat_messages("Hello there", None, None))
    assert ids == tokenizer("Hello there\n\n", add_special_tokens=False)["input_ids"]


def test_a_chat_template_renders_the_turns_without_an_extra_bos():
    tokenizer = train_tokenizer()
    tokenizer.bos_token = BOS
    ids = render_prompt(tokenizer, chat_messages("Hi", None, "Be brief."))
    want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    want += "<|im_start|>assistant\n"
    assert ids == tokenizer(want, add_special_tokens=False)["input_ids"]
