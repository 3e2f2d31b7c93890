"""Only the newest checkpoints stay on disk; the one a resume needs is never deleted."""

from __future__ import annotations

import json

from retort.train.checkpoint import list_checkpoints
from retort.train.retention import prune_checkpoints


def fake_checkpoints(run_dir, steps):
    for step in steps:
        folder = run_dir / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({"step": step}))


def names(run_dir):
    return [p.name for p in list_checkpoints(run_dir)]


def test_keeps_the_newest_n_checkpoints(tmp_path):
    fake_checkpoints(tmp_path, [10, 20, 30, 40])
    deleted = prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["step-000010", "step-000020"]
    assert names(tmp_path) == ["step-000030", "step-000040"]


def test_keep_zero_keeps_the_newest_until_final_exists(tmp_path):
    fake_checkpoints(tmp_path, [10, 20])
    prune_checkpoints(tmp_path, keep=0)
    assert names(tmp_path) == ["step-000020"]  # unfinished: --resume needs it
    (tmp_path / "final").mkdir()
    prune_checkpoints(tmp_path, keep=0)
    assert names(tmp_path) == []


def test_the_default_keeps_two_and_is_in_the_config():
    from retort.config import DistillConfig

    assert DistillConfig.model_fields["keep_checkpoints"].default == 2


def test_a_run_keeps_only_its_newest_checkpoints_and_none_with_zero(
    tiny_model_dir, tiny_store, tmp_path
):
    from retort.train.loop import distill
    from tests.train.test_loop import settings

    kept = distill(
        settings(tiny_model_dir, tiny_store, tmp_path / "a", save_every=1, keep_checkpoints=3)
    )
    assert names(kept.run_dir) == ["step-000004", "step-000005", "step-000006"]
    none = distill(
        settings(tiny_model_dir, tiny_store, tmp_path / "b", save_every=1, keep_checkpoints=0)
    )
    assert names(none.run_dir) == [] and (none.final_dir / "model.safetensors").is_file()
