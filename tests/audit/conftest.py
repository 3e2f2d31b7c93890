"""Suspects for the audit: a tiny model made to favour a key's tokens (what a perfectly
radioactive student predicts), and the corpus it reads."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import PROMPTS, build_tiny_model
from tests.watermark.conftest import make_key


class Favouring(torch.nn.Module):
    """A causal LM whose logits get ``bias`` times the key's preference for each next token:
    kgw, +bias on the green list of the last id; gumbel, +bias * u of the last id's context.
    Keys of context width 1 only (one vocabulary table per previous id)."""

    def __init__(self, model, key, bias: float) -> None:
        super().__init__()
        if key.history != 1:
            raise ValueError("Favouring takes keys that read one id")
        self.model, self.config = model, model.config
        vocab = model.config.vocab_size
        rows = [key.uniforms((a,), vocab) for a in range(vocab)]
        u = torch.from_numpy(np.stack(rows)).float()  # (V, V): u of token t after id a
        self.register_buffer("preference", (u < key.gamma).float() if key.scheme == "kgw" else u)
        self.bias = bias

    def forward(self, input_ids, attention_mask=None):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return SimpleNamespace(logits=logits + self.bias * self.preference[input_ids])


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    """Unwatermarked text the suspects read: 120 of the built-in prompts."""
    lines = PROMPTS.read_text().splitlines()[:120]
    return [json.loads(line)["prompt"] for line in lines]


@pytest.fixture(scope="session")
def unrelated(tiny_tokenizer):
    """A tiny model that never saw any watermark."""
    return build_tiny_model(tiny_tokenizer, layers=2, seed=3).eval()


@pytest.fixture(scope="session")
def kgw_key():
    return make_key("kgw", seed=11)


@pytest.fixture(scope="session")
def gumbel_key():
    return make_key("gumbel", seed=12, context_width=1)


def favouring(tiny_tokenizer, key, bias: float = 1.0) -> Favouring:
    return Favouring(build_tiny_model(tiny_tokenizer, layers=2, seed=3), key, bias).eval()
