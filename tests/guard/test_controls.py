"""Extraction controls on their own: every way a request can ask for more than its tier allows
(prompt logprobs, batched prompts, best_of, odd n / max_tokens) is capped, counted or refused."""

from __future__ import annotations

import random

import pytest

from retort.guard.controls import Refused, apply_request, filter_response, reserved_output
from retort.guard.policy import Logprobs, Tier

LIMITED = Tier(logprobs=Logprobs(top_k=2, decimals=1), max_n=4, max_tokens=16)
NOTICE = Tier(max_n=4, max_tokens=16, system_notice="Be nice.")


def test_prompt_logprobs_are_clamped_to_the_tiers_top_k():
    body = {"model": "m", "prompt": "hi", "prompt_logprobs": 20}
    changes = apply_request(body, LIMITED, chat=False)
    assert body["prompt_logprobs"] == 2 and "prompt_logprobs capped at 2" in changes
    whole_vocab = {"model": "m", "prompt": "hi", "prompt_logprobs": -1, "logprobs": -1}
    apply_request(whole_vocab, LIMITED, chat=False)
    assert whole_vocab["prompt_logprobs"] == 2 and whole_vocab["logprobs"] == 2
    with pytest.raises(Refused) as caught:
        apply_request(
            {"model": "m", "prompt": "hi", "prompt_logprobs": 1}, Tier(logprobs=False), False
        )
    assert caught.value.param == "logprobs"


def test_prompt_logprobs_in_responses_are_cut_and_rounded():
    alts = {"1": {"logprob": -0.123}, "2": {"logprob": -1.234}, "3": {"logprob": -2.345}}
    payload = {
        "prompt_logprobs": [None, dict(alts)],
        "choices": [{"index": 0, "text": "x", "prompt_logprobs": [None, dict(alts)]}],
    }
    filter_response(payload, LIMITED.logprobs, random.Random(0))
    for got in (payload["prompt_logprobs"], payload["choices"][0]["prompt_logprobs"]):
        assert got[0] is None
        assert got[1] == {"1": {"logprob": -0.1}, "2": {"logprob": -1.2}}


def test_batched_prompts_count_against_max_n_and_the_reservation():
    body = {"model": "m", "prompt": ["a", "b"], "n": 2, "max_tokens": 10}
    apply_request(body, LIMITED, chat=False)
    assert reserved_output(body, chat=False) == 2 * 2 * 10
    with pytest.raises(Refused) as caught:
        apply_request({"model": "m", "prompt": ["a", "b", "c"], "n": 2}, LIMITED, chat=False)
    assert caught.value.param == "n"


def test_batched_prompts_each_get_the_notice_and_token_prompts_are_refused():
    body = {"model": "m", "prompt": ["a", "b"]}
    apply_request(body, NOTICE, chat=False)
    assert body["prompt"] == ["Be nice.\n\na", "Be nice.\n\nb"]
    for prompt in ([1, 2, 3], [[1, 2], [3]]):
        with pytest.raises(Refused) as caught:
            apply_request({"model": "m", "prompt": prompt}, NOTICE, chat=False)
        assert caught.value.param == "prompt"
    token_batch = {"model": "m", "prompt": [[1, 2], [3]], "max_tokens": 5}
    apply_request(token_batch, LIMITED, chat=False)  # no notice: token ids pass, counted
    assert reserved_output(token_batch, chat=False) == 2 * 5


def test_completions_reserve_max_tokens_not_max_completion_tokens():
    body = {"model": "m", "prompt": "a", "max_completion_tokens": 1, "max_tokens": 16}
    apply_request(body, LIMITED, chat=False)
    assert reserved_output(body, chat=False) == 16
    with pytest.raises(Refused) as caught:
        apply_request({"model": "m", "prompt": "a", "max_tokens": 10_000}, LIMITED, chat=False)
    assert caught.value.param == "max_tokens"


def test_chat_reserves_the_field_the_upstream_honours():
    body = {"model": "m", "messages": [], "max_completion_tokens": 3, "max_tokens": 16}
    apply_request(body, LIMITED, chat=True)
    assert reserved_output(body, chat=True) == 3
    # 0 means unset upstream (vLLM: max_completion_tokens or max_tokens): the tier's cap.
    zero = {"model": "m", "messages": [], "max_completion_tokens": 0}
    apply_request(zero, LIMITED, chat=True)
    assert zero["max_tokens"] == 16 and reserved_output(zero, chat=True) == 16
    big = {"model": "m", "messages": [], "max_completion_tokens": 3, "max_tokens": 10_000}
    with pytest.raises(Refused) as caught:
        apply_request(big, LIMITED, chat=True)
    assert caught.value.param == "max_tokens"


def test_best_of_above_n_and_beam_search_are_refused():
    for extra, param in (
        ({"best_of": 3, "n": 1}, "best_of"),
        ({"use_beam_search": True}, "use_beam_search"),
    ):
        with pytest.raises(Refused) as caught:
            apply_request({"model": "m", "prompt": "a", **extra}, LIMITED, chat=False)
        assert caught.value.param == param
    ok = {"model": "m", "prompt": "a", "best_of": 2, "n": 2}
    apply_request(ok, LIMITED, chat=False)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 0),
        ("n", -3),
        ("n", True),
        ("n", 1.0),
        ("max_tokens", 0),
        ("max_tokens", -5),
        ("max_tokens", True),
        ("max_completion_tokens", -1),
        ("best_of", 0),
        ("best_of", True),
    ],
)
def test_nonpositive_and_bool_counts_are_refused(field, value):
    body = {"model": "m", "messages": [], field: value}
    with pytest.raises(Refused) as caught:
        apply_request(body, LIMITED, chat=True)
    assert caught.value.param == field and caught.value.status == 400
