"""API mode against a real server on 127.0.0.1 (`retort serve` over the tiny model): with the
key's watermark its samples give a tiny p-value, without it they do not; sampling mode reads a
local model the same way."""

from __future__ import annotations

import pytest

from retort.audit.sampling import audit_api, audit_sampled
from retort.errors import ConfigError
from retort.models.loading import load_tokenizer, resolve
from retort.serve.app import create_app
from retort.serve.background import serve_in_thread
from retort.teachers.local import LocalTeacher
from tests.watermark.conftest import make_key

SHORT = {"max_new_tokens": 24}


@pytest.fixture(scope="module")
def key():
    return make_key("kgw", seed=21)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(resolve(str(tiny_model_dir)))


@pytest.fixture(scope="module")
def watermarked_server(tiny_model_dir, key):
    teacher = LocalTeacher.load(str(tiny_model_dir)).watermarked(key)
    with serve_in_thread(create_app(teacher, "tiny", max_batch=8, wait_ms=20)) as url:
        yield url


def test_a_watermarked_server_is_detected(
    watermarked_server, tokenizer, prompts_file, key, tmp_path
):
    store = tmp_path / "samples"
    result = audit_api(
        watermarked_server, "tiny", tokenizer, prompts_file, [key], store=store, generate=SHORT
    )
    assert result.mode == "api" and result.texts == 12
    assert result.scored_tokens >= 150
    assert result.p_value < 1e-10
    assert result.settings["failed"] == 0
    again = audit_api(  # the store is resumed: nothing is sampled twice, the verdict is the same
        watermarked_server, "tiny", tokenizer, prompts_file, [key], store=store, generate=SHORT
    )
    assert again.p_value == result.p_value and again.texts == 12


def test_the_same_server_without_the_watermark_is_not(tiny_server, tokenizer, prompts_file, key):
    result = audit_api(tiny_server, "tiny", tokenizer, prompts_file, [key], generate=SHORT)
    assert result.scored_tokens >= 150
    assert result.p_value > 1e-3


def test_sampling_mode_reads_a_local_suspect(tiny_model_dir, prompts_file, key):
    teacher = LocalTeacher.load(str(tiny_model_dir))
    result = audit_sampled(teacher, prompts_file, [key], generate=SHORT)
    assert result.mode == "sample" and result.texts == 12
    assert result.p_value > 1e-3
    with pytest.raises(ConfigError, match="watermarks what it writes"):
        audit_sampled(teacher.watermarked(key), prompts_file, [key], generate=SHORT)


def test_http_requests_are_seeded_per_prompt(tokenizer):
    """One seed for every request gives a flat model one random stream, and so one text for
    every prompt; the audit pools samples, and a capture wants independent rows, so each
    request is seeded from the run's seed and its prompt (the shared seed is opt-in)."""
    from retort.teachers.http import HTTPTeacher
    from retort.teachers.protocol import Sampling

    sampling = Sampling(max_new_tokens=4, temperature=1.0, seed=7)
    shared = HTTPTeacher("http://127.0.0.1:9/v1", "m", tokenizer, seed_per_prompt=False)
    apart = HTTPTeacher("http://127.0.0.1:9/v1", "m", tokenizer)
    seeds = [apart.request_body(p, [], sampling, 0)["seed"] for p in ([1, 2], [1, 3], [1, 2])]
    assert seeds[0] != seeds[1] and seeds[0] == seeds[2]
    assert shared.request_body([1, 2], [], sampling, 0)["seed"] == 7
