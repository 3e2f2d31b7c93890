"""Packed micro-batches: fewer rows, no compute on padding, and the same training.

Packing only moves examples: every loss of every step must equal the padded run's (to float
summation order), for every objective, and a model that would attend across packed examples
must be caught before training and trained on padded batches instead.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from transformers import LlamaForCausalLM

from retort.config import DistillConfig
from retort.train.data import IGNORE, Example, collate, examples_from_rows, pack_rows
from retort.train.loop import distill
from retort.train.packing import (
    PackingProbe,
    keeps_packed_examples_apart,
    packing_for,
    probe_packing,
)
from tests.conftest import build_tiny_model


def rows_of(lengths, prompt=2):
    return [
        {
            "id": f"r{i}",
            "prompt_token_ids": list(range(1, prompt + 1)),
            "completion_token_ids": [10 + i] * (n - prompt),
            "topk_ids": [[10 + i, 7]] * (n - prompt),
            "topk_logprobs": [[-0.1, -2.4]] * (n - prompt),
        }
        for i, n in enumerate(lengths)
    ]


def test_rows_are_filled_first_fit_by_decreasing_length_within_the_longest():
    # 10 fills row 0; 7 and 6 open rows 1 and 2; 4 fits beside 6, 3 beside 7
    assert pack_rows([10, 4, 6, 3, 7], 10) == [(0, 0), (2, 6), (2, 0), (1, 7), (1, 0)]
    assert pack_rows([5, 5], 5) == [(0, 0), (1, 0)]  # nothing fits beside the longest


def test_a_packed_batch_holds_each_example_where_the_padded_one_does_shifted_along_its_row():
    examples = examples_from_rows(rows_of([9, 4, 5]), 64)
    padded = collate(examples, pad_id=0, top_k=2)
    packed = collate(examples, pad_id=0, top_k=2, pack=True)
    assert padded["input_ids"].shape == (3, 9) and packed["input_ids"].shape == (2, 9)
    assert "attention_mask" not in packed
    assert packed["position_ids"].tolist() == [list(range(9)), [0, 1, 2, 3, 4, 0, 1, 2, 3]]
    for index, (row, start) in enumerate(pack_rows([9, 4, 5], 9)):
        n = len(examples[index].input_ids)
        for name in ("input_ids", "labels", "topk_ids", "topk_logprobs"):
            got = packed[name][row, start : start + n]
            torch.testing.assert_close(got, padded[name][index, :n])
    assert (packed["labels"][1, 5] == IGNORE).all()  # no position predicts across examples


def test_rows_as_wide_as_pack_width_take_several_examples_and_stay_as_narrow_as_they_need():
    examples = examples_from_rows(rows_of([9, 4, 5]), 64)
    packed = collate(examples, pad_id=0, top_k=2, pack=True, pack_width=16)
    assert packed["input_ids"].shape == (2, 14)  # 9 + 5 fill row 0; 4 goes to row 1
    one_row = collate(examples, pad_id=0, top_k=2, pack=True, pack_width=18)
    assert one_row["input_ids"].shape == (1, 18)
    assert one_row["position_ids"][0].tolist() == [*range(9), *range(5), *range(4)]


def test_an_example_without_a_prompt_is_never_predicted_from_the_one_before_it():
    rows = rows_of([6, 3, 3], prompt=0)  # the two short ones share row 1
    packed = collate(examples_from_rows(rows, 64), pad_id=0, top_k=2, pack=True)
    assert packed["labels"][1].tolist() == [IGNORE, 11, 11, IGNORE, 12, 12]


@pytest.mark.parametrize(
    "overrides",
    [
        {"objective": "sft"},
        {"objective": "topk"},
        {"objective": "online"},
        {"objective": "online", "fused": False, "kind": "jsd"},
        {"objective": "topk", "hidden_weight": 1.0},
        {"objective": "on_policy", "lmbda": 0.5, "sample_max_new_tokens": 6},
    ],
    ids=["sft", "topk", "online-fused", "online-jsd", "hidden", "on_policy"],
)
def test_packed_and_padded_runs_log_the_same_losses(
    overrides, tiny_model_dir, tiny_store, tmp_path
):
    logs = {}
    for pack in (True, False):
        config = DistillConfig(
            data=tiny_store,
            out=tmp_path / f"pack-{pack}",
            student="prune:2",
            teacher=str(tiny_model_dir),
            max_steps=3,
            batch_size=8,
            learning_rate=3e-3,
            pack=pack,
            **overrides,
        )
        run = distill(config).run_dir
        logs[pack] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for packed, padded in zip(logs[True], logs[False], strict=True):
        assert packed["tokens"] == padded["tokens"]
        for name in ("loss", "ce", "kd", "hidden", "sample_length", "teacher_logprob"):
            if name in padded:
                assert packed[name] == pytest.approx(padded[name], rel=2e-5), name
    assert sum(r["padding"] for r in logs[True]) < sum(r["padding"] for r in logs[False])


class IgnoresPositions(LlamaForCausalLM):
    """A model whose forward drops position_ids: packed examples would see each other."""

    def forward(self, *args, position_ids=None, **kwargs):
        return super().forward(*args, **kwargs)


def test_a_model_that_would_attend_across_packed_examples_trains_on_padded_batches(
    tiny_tokenizer, caplog
):
    honest = build_tiny_model(tiny_tokenizer, layers=2)
    assert keeps_packed_examples_apart(honest)
    leaky = IgnoresPositions(honest.config)
    leaky.load_state_dict(honest.state_dict())
    assert not keeps_packed_examples_apart(leaky)
    caplog.set_level(logging.WARNING, logger="retort.train.packing")
    assert packing_for(True, {"student": honest, "teacher": leaky}) is False
    assert "teacher (IgnoresPositions) does not keep packed examples apart" in caplog.text
    assert packing_for(True, {"student": honest, "teacher": None}) is True
    assert packing_for(False, {"student": honest}) is False


def test_packing_is_judged_against_what_padding_gives_not_against_an_absolute_tolerance():
    # the importance-pruned SmolLM2 student of recipes/long measured 6.5e-4 for both packed and
    # padded (a masked kernel instead of a causal one), and 1.0 when attending across examples
    sensitive = PackingProbe(packed=6.5e-4, padded=6.5e-4, leaked=1.0)
    assert sensitive.keeps_apart(torch.float32)
    assert not PackingProbe(packed=6.5e-4, padded=1e-6, leaked=1.0).keeps_apart(torch.float32)
    # padding that is itself far off does not excuse a packed row that leaks
    assert not PackingProbe(packed=0.5, padded=0.5, leaked=1.0).keeps_apart(torch.float32)
    assert PackingProbe(packed=3e-5, padded=0.0, leaked=1.0).keeps_apart(torch.float32)
    assert PackingProbe(packed=3e-2, padded=0.0, leaked=1.0).keeps_apart(torch.bfloat16)


def test_the_probe_measures_a_leaky_model_off_by_what_attending_across_examples_costs(
    tiny_tokenizer,
):
    honest = build_tiny_model(tiny_tokenizer, layers=2)
    leaky = IgnoresPositions(honest.config)
    leaky.load_state_dict(honest.state_dict())
    kept, _ = probe_packing(honest)
    lost, _ = probe_packing(leaky)
    assert kept.packed < 1e-5 and kept.padded < 1e-5
    assert lost.packed == pytest.approx(lost.leaked, rel=0.5) and lost.leaked > 1e-3


def test_a_uld_group_at_an_examples_first_position_is_dropped_packed_or_not():
    # cross_tokenizer targets: a group that starts the completion of a prompt-less example has
    # no earlier position to be predicted from, so neither layout may give it one
    def example(n, prompt, head):
        return Example(
            input_ids=list(range(1, n + 1)),
            labels=[IGNORE] * prompt + list(range(prompt + 1, n + 1)),
            topk_ids=None,
            topk_logprobs=None,
            prompt_length=prompt,
            uld_head=[head, head, -1][: n - prompt],
            uld_logprobs=[[-0.5, -1.0]] * (n - prompt),
            uld_chain=[0.0] * (n - prompt),
        )

    # width 6: the two short ones share row 1, the prompt-less one second, at position 3
    examples = [example(6, 3, 0), example(3, 1, 0), example(3, 0, 0)]
    padded = collate(examples, pad_id=0, top_k=2, uld=True)
    packed = collate(examples, pad_id=0, top_k=2, uld=True, pack=True)
    places = pack_rows([6, 3, 3], 6)
    for index, (row, start) in enumerate(places):
        n = len(examples[index].input_ids)
        heads = packed["uld_head"][row, start : start + n]
        unpacked = padded["uld_head"][index, :n]
        assert heads.tolist() == [h if h < 0 else h + start for h in unpacked.tolist()]
    assert places[2] == (1, 3)
    assert (packed["uld_head"][1, 3:] == -1).all()  # not predicted from the example before it
    assert (padded["uld_head"][2] == -1).all()
