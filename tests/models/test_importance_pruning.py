"""Pruning by measured importance: Block Influence for depth, activation norms for width.

Each test plants the answer: blocks that do nothing (their writes to the residual stream are
zeroed), MLP channels and heads whose outputs are zero. Importance must find exactly those, and
removing them must leave the teacher's logits unchanged — something even spacing cannot do.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from retort.config import DistillConfig
from retort.errors import ModelError, StoreError
from retort.models.importance import block_influence, calibration_sequences
from retort.models.pruning import (
    PRUNED_FILE,
    PruneSpec,
    parse_prune_spec,
    prune,
    prune_layers,
    pruned,
)
from retort.models.width import _kept_heads
from retort.train.loop import distill
from tests.conftest import build_tiny_model

SEQUENCES = [[5, 17, 33, 2, 9, 41, 7], [3, 3, 60, 12], [8, 1, 44, 23, 19, 30, 11, 6, 2]]


def _model(layers=6, heads=4, kv_heads=2, hidden=32, seed=0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=hidden,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def _logits(model, sequence=SEQUENCES[0]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([sequence])).logits


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("prune:10", PruneSpec("prune:10", layers=10)),
        ("prune:10:importance", PruneSpec("prune:10:importance", layers=10, by="importance")),
        ("prune:mlp=512:heads=6", PruneSpec("prune:mlp=512:heads=6", mlp=512, heads=6)),
        (
            "prune:20:importance:mlp=512",
            PruneSpec("prune:20:importance:mlp=512", layers=20, by="importance", mlp=512),
        ),
    ],
)
def test_prune_specs_parse(spec, want):
    assert parse_prune_spec(spec) == want


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("prune:ten", r"'ten' is not a pruning part; use N, even, importance, mlp=M, heads=H"),
        ("prune:10:fisher", r"'fisher' is not a pruning part"),
        ("prune:mlp=0", r"'mlp=0' is not a pruning part"),
        ("prune:importance", r"importance chooses layers; give how many, e.g. prune:10:importance"),
        ("prune:", r"'' is not a pruning part"),
        ("prune:10:12", r"'12' says again what another part said"),
    ],
)
def test_bad_prune_specs_name_the_part_and_what_is_allowed(spec, message):
    with pytest.raises(ModelError, match=message):
        parse_prune_spec(spec)


def test_block_influence_finds_the_blocks_that_do_nothing_and_dropping_them_keeps_the_logits():
    teacher = _model(layers=6)
    for index in (2, 3):  # these blocks add nothing to the residual stream
        layer = teacher.model.layers[index]
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
    influence = block_influence(teacher, SEQUENCES)
    assert influence[2] == pytest.approx(0, abs=1e-6)
    assert influence[3] == pytest.approx(0, abs=1e-6)
    assert min(influence[i] for i in (0, 1, 4, 5)) > 1e-3

    student = prune(teacher, parse_prune_spec("prune:4:importance"), SEQUENCES)
    assert student.config.retort_pruned["layers"] == [0, 1, 4, 5]
    torch.testing.assert_close(_logits(student), _logits(teacher), rtol=1e-5, atol=1e-5)
    even = prune(teacher, parse_prune_spec("prune:4"))  # evenly spaced: keeps 2 and 3, drops 1, 4
    assert even.config.retort_pruned["layers"] == [0, 2, 3, 5]
    assert not torch.allclose(_logits(even), _logits(teacher), atol=1e-3)


def test_block_influence_ignores_padding():
    teacher = _model(layers=3)
    alone = block_influence(teacher, [SEQUENCES[1]])
    # batched with a longer sequence, the short one is right-padded: same tokens, same score
    # (weighted by token count, so compare against the token-weighted mean of both alone)
    long = block_influence(teacher, [SEQUENCES[2]])
    both = block_influence(teacher, [SEQUENCES[1], SEQUENCES[2]])
    n1, n2 = len(SEQUENCES[1]), len(SEQUENCES[2])
    for a, b, got in zip(alone, long, both, strict=True):
        assert got == pytest.approx((a * n1 + b * n2) / (n1 + n2), rel=1e-4)


def test_width_pruning_keeps_the_live_mlp_channels_and_heads_and_so_the_logits():
    teacher = _model(layers=2, heads=4, kv_heads=4)  # one key/value head per query head
    head_dim = 32 // 4
    dead_channels = torch.arange(0, 48, 2)  # every other channel never fires: gate and up are 0
    for layer in teacher.model.layers:
        layer.mlp.gate_proj.weight.data[dead_channels] = 0
        layer.mlp.up_proj.weight.data[dead_channels] = 0
        for head in (1, 2):  # these heads read zero values: their output is zero
            layer.self_attn.v_proj.weight.data[head * head_dim : (head + 1) * head_dim] = 0
    student = prune(teacher, parse_prune_spec("prune:mlp=24:heads=2"), SEQUENCES)
    assert student.config.intermediate_size == 24
    assert student.config.num_attention_heads == 2
    assert student.config.head_dim == head_dim
    torch.testing.assert_close(_logits(student), _logits(teacher), rtol=1e-5, atol=1e-5)
    kept = student.model.layers[0].mlp.up_proj.weight
    torch.testing.assert_close(kept, teacher.model.layers[0].mlp.up_proj.weight[1::2])


def test_grouped_query_attention_keeps_whole_groups_or_as_many_heads_in_every_group():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.2, 0.3])  # 2 groups of 3 heads
    assert _kept_heads(scores, 4, groups=2) == ([1, 2, 3, 5], [0, 1])
    assert _kept_heads(scores, 2, groups=2) == ([1, 3], [0, 1])
    assert _kept_heads(scores, 3, groups=2) == ([0, 1, 2], [0])  # group 0 sums 1.5 > 1.2
    multi_head = torch.tensor([0.1, 0.9, 0.5, 0.7])  # one head per group
    assert _kept_heads(multi_head, 2, groups=4) == ([1, 3], [1, 3])


def test_grouped_query_attention_pruned_to_whole_groups_runs_and_reloads(tmp_path):
    teacher = _model(layers=2, heads=6, kv_heads=2, hidden=48)  # 2 groups of 3 heads
    student = prune(teacher, parse_prune_spec("prune:heads=3"), SEQUENCES)
    assert student.config.num_key_value_heads == 1
    assert torch.isfinite(_logits(student)).all()
    student.save_pretrained(tmp_path)
    torch.testing.assert_close(
        _logits(AutoModelForCausalLM.from_pretrained(tmp_path)), _logits(student)
    )


def test_a_width_pruned_student_is_a_plain_hf_model_that_from_pretrained_loads(tmp_path):
    teacher = _model(layers=4)
    student = prune(teacher, parse_prune_spec("prune:3:importance:mlp=20:heads=2"), SEQUENCES)
    student.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(loaded), _logits(student))
    assert loaded.config.retort_pruned["spec"] == "prune:3:importance:mlp=20:heads=2"
    assert loaded.num_parameters() < teacher.num_parameters()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "prune:heads=3",
            r"heads=3 does not fit the teacher's 2 key/value groups of 2 heads; use one of 2, 4",
        ),
        ("prune:mlp=49", r"mlp=49; keep between 1 and the teacher's 48 MLP channels"),
        ("prune:6:importance", r"keep between 1 and 5 of the teacher's 6 layers"),
    ],
)
def test_widths_and_depths_the_teacher_cannot_take_are_refused(spec, message):
    with pytest.raises(ModelError, match=message):
        prune(_model(layers=6), parse_prune_spec(spec), SEQUENCES)


def test_importance_without_calibration_prompts_says_where_it_works():
    with pytest.raises(
        ModelError, match=r"calibration prompts from a store; use it with retort distill"
    ):
        prune(_model(), parse_prune_spec("prune:3:importance"))


def test_an_empty_calibration_set_is_refused_naming_the_store():
    empty = [{"prompt_token_ids": [], "completion_token_ids": []}]
    with pytest.raises(StoreError, match=r"store-x: no row with tokens to measure importance on"):
        calibration_sequences(empty, 64, 512, "store-x")
    rows = [{"prompt_token_ids": [i], "completion_token_ids": [i, i]} for i in range(10)]
    assert calibration_sequences(rows, 5, 2, "s") == [[0, 0], [2, 2], [4, 4], [6, 6], [8, 8]]


def test_distill_prunes_by_importance_on_the_store_and_records_what_it_kept(
    tiny_tokenizer, tiny_model_dir, tiny_store, tmp_path
):
    config = DistillConfig(
        data=tiny_store,
        out=tmp_path / "run",
        student="prune:2:importance:mlp=48",
        teacher=str(tiny_model_dir),
        objective="topk",
        max_steps=2,
        batch_size=4,
        prune_calibration=8,
    )
    result = distill(config)
    final = AutoModelForCausalLM.from_pretrained(result.final_dir)
    record = final.config.retort_pruned
    assert record["spec"] == "prune:2:importance:mlp=48" and len(record["layers"]) == 2
    assert final.config.intermediate_size == 48
    teacher = build_tiny_model(tiny_tokenizer)  # the tiny teacher's architecture, 4 layers
    assert final.num_parameters() < teacher.num_parameters()


def test_width_pruning_a_model_without_llama_blocks_says_to_prune_depth():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=64))
    with pytest.raises(
        ModelError, match=r"width pruning needs Llama-style blocks.*GPT2LMHeadModel"
    ):
        prune(gpt2, parse_prune_spec("prune:mlp=16"), SEQUENCES)
    depth = prune(gpt2, parse_prune_spec("prune:2:importance"), SEQUENCES)  # depth works
    assert depth.config.n_layer == 2 and len(depth.config.retort_pruned["layers"]) == 2


def test_only_head_counts_the_config_class_can_save_are_offered():
    # Llama's config wants hidden_size divisible by the heads, though head_dim is written:
    # 6 heads of 8 (hidden 48) in 2 groups of 3 could be cut to 2 or 4 by group share, but
    # 48 / 4 = 12 is fine and 48 / 2 = 24 too; 5 heads would not divide
    teacher = _model(layers=2, heads=6, kv_heads=2, hidden=48)
    with pytest.raises(ModelError, match=r"use one of 2, 3, 4, 6$"):
        prune(teacher, parse_prune_spec("prune:heads=5"), SEQUENCES)


def test_what_was_kept_rebuilds_the_same_student_without_measuring(tmp_path):
    teacher = _model(layers=4)
    spec = parse_prune_spec("prune:3:importance:mlp=20:heads=2")
    student, kept = pruned(teacher, spec, SEQUENCES)
    (tmp_path / PRUNED_FILE).write_text(json.dumps(kept))
    again, _ = pruned(teacher, spec, kept=json.loads((tmp_path / PRUNED_FILE).read_text()))
    torch.testing.assert_close(_logits(again), _logits(student), rtol=0, atol=0)
    with pytest.raises(ModelError, match=r"pruned.json \(prune:3:importance:mlp=20:heads=2\)"):
        pruned(teacher, parse_prune_spec("prune:2:importance"), kept=kept)


def test_per_layer_settings_follow_the_kept_layers():
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    config = SmolLM3Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        no_rope_layers=[1, 1, 1, 0],  # the last layer has no rotary embedding
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    teacher = SmolLM3ForCausalLM(config).eval()
    student = prune(teacher, parse_prune_spec("prune:2"))  # keeps layers 0 and 3
    assert student.config.no_rope_layers == [1, 0]
    assert len(student.config.layer_types) == 2


def test_a_pruned_students_hidden_states_are_matched_to_the_layers_they_were_copied_from(
    tmp_path,
):
    from retort.train.setup import _hidden_matching

    teacher = _model(layers=6)
    kept_layers = [0, 2, 3]  # as if Block Influence had dropped the last layer
    student = prune_layers(teacher, kept_layers)
    config = DistillConfig(
        data=tmp_path, out=tmp_path / "run", student="prune:3", teacher="t", hidden_weight=1
    )
    layer_map, _ = _hidden_matching(config, student, teacher, kept_layers)
    # hidden_states[-1] of both models is taken after the final norm: last matches last
    assert layer_map == [1, 3, 6]
