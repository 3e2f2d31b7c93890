"""Loading specs, layer pruning and the shared-tokenizer check."""

from __future__ import annotations

import pytest
import torch

from retort.errors import ModelError
from retort.models.loading import load_tokenizer, resolve
from retort.models.pruning import kept_layers, parse_prune_spec, prune_layers
from retort.models.vocab import shared_vocab_size
from tests.conftest import build_tiny_model


def test_kept_layers_are_evenly_spaced_with_first_and_last():
    assert kept_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert kept_layers(4, 2) == [0, 3]
    assert kept_layers(4, 1) == [0]


@pytest.mark.parametrize("keep", [0, 4, 9])
def test_prune_outside_one_to_layers_minus_one_is_refused(keep):
    with pytest.raises(ModelError, match=rf"prune:{keep}: keep between 1 and 3 of the teacher's 4"):
        kept_layers(4, keep)


def test_prune_spec_needs_a_number():
    assert parse_prune_spec("prune:3").layers == 3
    assert parse_prune_spec("some/model") is None
    with pytest.raises(ModelError, match="'three' is not a pruning part"):
        parse_prune_spec("prune:three")


def test_pruned_student_copies_the_kept_layers_embeddings_norm_and_head(tiny_tokenizer):
    teacher = build_tiny_model(tiny_tokenizer, layers=4)
    student = prune_layers(teacher, 2)
    assert student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(
        s["model.layers.0.mlp.up_proj.weight"], t["model.layers.0.mlp.up_proj.weight"]
    )
    assert torch.equal(
        s["model.layers.1.mlp.up_proj.weight"], t["model.layers.3.mlp.up_proj.weight"]
    )
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"])
    assert torch.equal(s["model.norm.weight"], t["model.norm.weight"])
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[1, 2, 3]])
    assert torch.isfinite(student(ids).logits).all()


def test_model_specs_resolve_or_say_what_to_give(tiny_model_dir, tmp_path):
    assert resolve(str(tiny_model_dir)).kind == "local"
    assert resolve("Qwen/Qwen2.5-0.5B").kind == "hub"
    assert resolve("http://127.0.0.1:8000/v1").kind == "http"
    with pytest.raises(ModelError, match="no such model folder"):
        resolve(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve(str(tmp_path))


def test_tokenizers_must_match(tiny_model_dir, other_tokenizer_model_dir):
    teacher = load_tokenizer(resolve(str(tiny_model_dir)))
    other = load_tokenizer(resolve(str(other_tokenizer_model_dir)))
    with pytest.raises(ModelError, match="student tokenizer differs from the teacher's"):
        shared_vocab_size(teacher, other, len(teacher), len(other))


def test_vocabularies_padded_to_different_sizes_are_aligned(tiny_model_dir):
    tokenizer = load_tokenizer(resolve(str(tiny_model_dir)))
    assert shared_vocab_size(tokenizer, tokenizer, len(tokenizer) + 64, len(tokenizer) + 8) == (
        len(tokenizer) + 8
    )


def test_a_run_folder_resolves_to_its_trained_student(tiny_model_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("student: prune:2\n")
    with pytest.raises(ModelError, match=r"no final/ yet; finish it with retort distill --out"):
        resolve(str(run))
    shutil.copytree(tiny_model_dir, run / "final")
    assert resolve(str(run)).location == str(run / "final")
    shutil.copytree(tiny_model_dir, run / "merged")  # a LoRA run after retort merge
    assert resolve(str(run)).location == str(run / "merged")


def test_a_mistyped_alias_or_missing_folder_fails_without_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "s1").mkdir()
    with pytest.raises(ModelError, match="did you mean smollm2-135m-instruct"):
        resolve("smollm2-135m-instrcut")
    with pytest.raises(ModelError, match=r"runs/s2: no such model folder; did you mean runs/s1"):
        resolve("runs/s2")
    with pytest.raises(ModelError, match="hub id as org/name"):
        resolve("gpt2")


def test_a_hub_id_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelError, match=r"not in the Hugging Face cache \(HF_HUB_OFFLINE is set\)"
    ):
        load_tokenizer(resolve("no-such-org/no-such-model"))
