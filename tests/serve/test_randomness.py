"""Sampling in `retort serve`: an unseeded request draws fresh randomness, the n choices of one
request differ (also past ``max_batch``), and a seeded request writes the same text whatever
else shares its batch."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from retort.serve.app import create_app
from retort.serve.background import serve_in_thread
from retort.teachers.local import LocalTeacher


@pytest.fixture(scope="module")
def url(tiny_model_dir):
    """A server that batches at most 2 rows and waits long enough to fill its batches."""
    teacher = LocalTeacher.load(str(tiny_model_dir))
    with serve_in_thread(create_app(teacher, "tiny", max_batch=2, wait_ms=200)) as base:
        yield base


def complete(url: str, prompt: str, **fields) -> list[list[int]]:
    body = {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": 8,
        "temperature": 1.0,
        "logprobs": 0,
        "return_tokens_as_token_ids": True,
        **fields,
    }
    response = httpx.post(f"{url}/completions", json=body, timeout=60)
    response.raise_for_status()
    return [
        [int(t.removeprefix("token_id:")) for t in choice["logprobs"]["tokens"]]
        for choice in response.json()["choices"]
    ]


def test_an_unseeded_request_draws_fresh_samples_each_time(url):
    first = complete(url, "Tell me about tea.")
    second = complete(url, "Tell me about tea.")
    assert first != second


@pytest.mark.parametrize("seed", [None, 5])
def test_the_n_choices_of_one_request_all_differ_also_past_max_batch(url, seed):
    choices = complete(url, "Tell me about tea.", n=6, seed=seed)
    assert len({tuple(c) for c in choices}) == 6


def test_a_seeded_request_writes_the_same_text_whatever_shares_its_batch(url):
    alone = complete(url, "Tell me about tea.", seed=11, n=3)
    others = [("Name a colour.", 11), ("Count to five.", 11), ("Say hi.", 3), ("Why?", None)]
    with ThreadPoolExecutor(5) as pool:
        target = pool.submit(complete, url, "Tell me about tea.", seed=11, n=3)
        crowd = [pool.submit(complete, url, p, seed=s) for p, s in others]
        batched = target.result()
        [c.result() for c in crowd]
    assert batched == alone
    health = httpx.get(url.removesuffix("/v1") + "/health").json()
    assert health["largest_batch"] == 2  # the seeded request did share batches
