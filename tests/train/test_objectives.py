"""Objective composition on tiny models: fused == materialized online KD, hidden-state terms
with a projection, KD rescaling, every term logged."""

from __future__ import annotations

import pytest

from retort.config import DistillConfig
from retort.train.loop import distill
from tests.conftest import build_tiny_model, save_model
from tests.train.test_loop import metrics, settings


@pytest.mark.parametrize("kind", ["reverse_kl", "jsd"])
def test_online_fused_trains_exactly_like_online_with_full_logits(
    kind, tiny_model_dir, tiny_store, tmp_path
):
    common = {"objective": "online", "kind": kind, "ce_weight": 0.5, "max_steps": 3}
    fused = distill(settings(tiny_model_dir, tiny_store, tmp_path / "f", chunk_size=7, **common))
    full = distill(settings(tiny_model_dir, tiny_store, tmp_path / "d", fused=False, **common))
    for a, b in zip(metrics(fused.run_dir), metrics(full.run_dir), strict=True):
        for term in ("loss", "ce", "kd"):
            assert a[term] == pytest.approx(b[term], rel=1e-4), term


def test_every_term_is_logged_and_kd_rescale_follows_ce(tiny_model_dir, tiny_store, tmp_path):
    config = settings(
        tiny_model_dir,
        tiny_store,
        tmp_path / "r",
        objective="topk",
        ce_weight=1.0,
        kd_rescale=True,
        hidden_weight=0.1,
        max_steps=4,
    )
    rows = metrics(distill(config).run_dir)
    assert {"loss", "ce", "kd", "hidden", "captured_mass", "kd_scale", "lr"} <= set(rows[0])
    assert rows[0]["kd_scale"] == 1.0  # no magnitudes seen before the first step
    assert rows[1]["kd_scale"] == pytest.approx(rows[0]["ce"] / rows[0]["kd"], rel=1e-6)
    first = rows[0]
    assert first["loss"] == pytest.approx(
        first["ce"] + first["kd"] * first["kd_scale"] + 0.1 * first["hidden"], rel=1e-5
    )


def test_a_narrower_student_learns_hidden_states_through_a_saved_projection(
    tiny_model_dir, tiny_store, tiny_tokenizer, tmp_path
):
    import torch

    narrow = save_model(
        build_tiny_model(tiny_tokenizer, layers=2, hidden=32, seed=1),
        tiny_tokenizer,
        tmp_path / "narrow",
    )
    config = settings(
        tiny_model_dir,
        tiny_store,
        tmp_path / "h",
        student=str(narrow),
        objective="sft",
        hidden_weight=1.0,
        max_steps=8,
        batch_size=16,
    )
    result = distill(config)
    hidden = [m["hidden"] for m in metrics(result.run_dir)]
    assert hidden[-1] < hidden[0]
    state = torch.load(
        next((result.run_dir / "checkpoints").glob("step-*")) / "state.pt", weights_only=False
    )
    assert state["extra"]["projector"]["maps.0.weight"].shape == (48, 32)
    assert DistillConfig.model_validate({**config.model_dump(), "layer_map": [2, 4]}).layer_map


def test_a_layer_map_of_the_wrong_length_is_refused(tiny_model_dir, tiny_store, tmp_path):
    from retort.errors import ConfigError

    config = settings(
        tiny_model_dir, tiny_store, tmp_path / "m", hidden_weight=1.0, layer_map=[1, 2, 3]
    )
    with pytest.raises(ConfigError, match="layer_map: give 2 teacher layers"):
        distill(config)
    assert not (tmp_path / "m").exists()
