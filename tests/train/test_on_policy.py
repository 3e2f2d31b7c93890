"""On-policy distillation on tiny models: the student samples, the teacher grades, only the
student learns; λ mixes in the store; resume is exact with sampling in the loop."""

from __future__ import annotations

import pytest
import torch

from retort.config import DistillConfig
from retort.models.loading import load_model, resolve
from retort.teachers.local import LocalTeacher
from retort.train.loop import distill
from retort.train.on_policy import sample_completions, student_samples
from tests.train.test_loop import StopAt, metrics, settings


def on_policy(tiny_model_dir, tiny_store, out, **overrides) -> DistillConfig:
    values = {"objective": "on_policy", "sample_max_new_tokens": 10, "max_steps": 4}
    return settings(tiny_model_dir, tiny_store, out, **{**values, **overrides})


def test_on_policy_trains_the_student_only_and_logs_its_samples(
    tiny_model_dir, tiny_store, tmp_path
):
    teacher = LocalTeacher.load(str(tiny_model_dir))
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    config = on_policy(tiny_model_dir, tiny_store, tmp_path / "run")
    assert config.kind == "reverse_kl"  # the on-policy default
    result = distill(config, teacher=teacher)

    after = teacher.model.state_dict()  # the run moved the teacher to its device (a GPU)
    assert all(torch.equal(before[k], after[k].cpu()) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    student = load_model(resolve(str(result.final_dir)))
    changed = [
        not torch.equal(student.state_dict()[k], before[k].to(student.dtype))
        for k in student.state_dict()
        if k in before and "layers.1." not in k  # prune:2 keeps teacher layers 0 and 3
    ]
    assert any(changed)
    for record in metrics(result.run_dir):
        assert 1 <= record["sample_length"] <= 10
        assert record["teacher_logprob"] < 0
        assert record["kd"] >= 0
        assert record["sampled_fraction"] == 1.0


def test_lmbda_zero_is_online_kd_on_the_store(tiny_model_dir, tiny_store, tmp_path):
    mixed = distill(on_policy(tiny_model_dir, tiny_store, tmp_path / "a", lmbda=0.0))
    online = distill(
        settings(
            tiny_model_dir,
            tiny_store,
            tmp_path / "b",
            objective="online",
            max_steps=4,
            kind="reverse_kl",
        )
    )
    got = [m["loss"] for m in metrics(mixed.run_dir)]
    assert got == pytest.approx([m["loss"] for m in metrics(online.run_dir)], rel=1e-6)
    assert not any("sample_length" in m for m in metrics(mixed.run_dir))


def test_lmbda_mixes_student_samples_and_stored_batches_by_a_seeded_coin():
    coins = [student_samples(0, step, 0, 0.5) for step in range(200)]
    assert 70 < sum(coins) < 130
    assert coins == [student_samples(0, step, 0, 0.5) for step in range(200)]  # reproducible


def test_samples_stop_after_the_first_eos_and_leave_the_training_rng_alone(
    tiny_model_dir, tiny_tokenizer
):
    model = load_model(resolve(str(tiny_model_dir)))
    eos = tiny_tokenizer.eos_token_id
    prompts = [tiny_tokenizer("Name a colour.")["input_ids"], [5, 6, 7]]
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = sample_completions(model, prompts, eos, [eos], 12, 1.0, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert first == sample_completions(model, prompts, eos, [eos], 12, 1.0, seed=3)
    for completion in first:
        assert 1 <= len(completion) <= 12
        assert eos not in completion[:-1]


def test_on_policy_resumed_after_ctrl_c_logs_the_same_losses(tiny_model_dir, tiny_store, tmp_path):
    overrides = {"lmbda": 0.5, "max_steps": 6, "save_every": 100}
    straight = distill(on_policy(tiny_model_dir, tiny_store, tmp_path / "a", **overrides))
    stopped = on_policy(tiny_model_dir, tiny_store, tmp_path / "b", **overrides)
    with pytest.raises(KeyboardInterrupt):
        distill(stopped, progress=StopAt(3))
    resumed = distill(stopped, resume=True)
    want = metrics(straight.run_dir)
    got = metrics(resumed.run_dir)
    assert [m["loss"] for m in got] == [m["loss"] for m in want]  # bitwise, on CPU
    assert [m.get("sample_length") for m in got] == [m.get("sample_length") for m in want]
    assert any("sample_length" in m for m in want) and not all("sample_length" in m for m in want)


def test_a_token_budget_ends_the_run_and_drives_the_schedule(tiny_model_dir, tiny_store, tmp_path):
    config = on_policy(tiny_model_dir, tiny_store, tmp_path / "run", max_steps=None, max_tokens=150)
    result = distill(config)
    records = metrics(result.run_dir)
    seen = [m["tokens_seen"] for m in records]
    assert seen[-1] >= 150 > seen[-2]  # stops at the first step past the budget
    assert seen == sorted(seen) and seen[0] == records[0]["tokens"]
    assert records[-1]["lr"] == 0.0  # the cosine reaches zero exactly at the budget
    assert 0 < records[-2]["lr"] < config.learning_rate


@pytest.fixture(scope="module")
def small_student_dir(tmp_path_factory, tiny_tokenizer):
    from tests.conftest import build_tiny_model, save_model

    folder = tmp_path_factory.mktemp("small-student")
    return save_model(build_tiny_model(tiny_tokenizer, layers=2, seed=5), tiny_tokenizer, folder)


def test_an_http_teacher_grades_the_samples_like_the_local_one(
    tiny_server, tiny_model_dir, small_student_dir, tiny_store, tmp_path
):
    common = {"student": str(small_student_dir), "max_steps": 2, "lmbda": 0.5, "seed": 3}
    remote = distill(
        on_policy(
            tiny_model_dir,
            tiny_store,
            tmp_path / "remote",
            **common,
            teacher=tiny_server,
            teacher_model="tiny",
            tokenizer=str(tiny_model_dir),
        )
    )
    local = distill(on_policy(tiny_model_dir, tiny_store, tmp_path / "local", **common))
    got, want = metrics(remote.run_dir), metrics(local.run_dir)
    assert all("captured_mass" in m for m in got)  # top-k KD: the server's or the store's
    sampled = [i for i, m in enumerate(want) if "sample_length" in m]
    assert sampled  # seed 3 samples at least one of the two steps
    first = sampled[0]  # the student is still the same there in both runs: the same samples
    assert got[first]["sample_length"] == want[first]["sample_length"]
    assert got[first]["teacher_logprob"] == pytest.approx(want[first]["teacher_logprob"], abs=1e-4)


def test_an_http_teacher_cannot_serve_objectives_that_need_its_weights(tiny_store, tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="prune:N needs a local teacher"):
        DistillConfig(
            data=tiny_store,
            out=tmp_path / "run",
            student="prune:2",
            teacher="http://127.0.0.1:9/v1",
            objective="on_policy",
        )


def test_a_student_with_padded_embeddings_never_samples_ids_the_teacher_lacks(
    tiny_model_dir, tiny_tokenizer, tiny_store, tmp_path
):
    from tests.conftest import build_tiny_model, save_model

    # 120 extra rows hold about a third of a random student's mass: without the cap its
    # samples hit them at once and the teacher's embedding lookup fails.
    padded = build_tiny_model(tiny_tokenizer, layers=2, rows=len(tiny_tokenizer) + 120)
    student = save_model(padded, tiny_tokenizer, tmp_path / "padded")
    config = on_policy(tiny_model_dir, tiny_store, tmp_path / "run", student=str(student))
    result = distill(config)
    assert all(m["sample_length"] >= 1 for m in metrics(result.run_dir))


def test_large_seeds_sample_too():
    assert student_samples(2**32 - 1, 10**9, 3, 0.5) in (True, False)


def test_student_samples_come_from_its_full_distribution_whatever_its_generation_config():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=400,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(0.001)  # near-uniform over 400 ids, no ties
    # what a hub generation_config.json may ship; none of it is the student's distribution
    model.generation_config.top_k, model.generation_config.top_p = 20, 0.5
    model.generation_config.repetition_penalty = 1.5
    samples = sample_completions(model, [[5, 6]] * 1000, 0, [2], 1, 1.0, seed=1)
    # 1000 draws from a uniform 400-way distribution reach ~365 ids; top-k 50 reaches 50
    assert len({s[0] for s in samples}) > 300
